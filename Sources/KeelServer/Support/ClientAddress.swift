import Hummingbird
import KeelCore

/// Who the client is, for per-client limits: the TCP peer, or, when the peer
/// is a trusted proxy, the last address in `X-Forwarded-For` that is not one.
/// Addresses a client wrote into the header itself are never believed unless
/// every proxy after them is trusted.
struct ClientAddressResolver: Sendable {
    let trusted: [AddressBlock]

    init(trustedProxies: [String]) {
        self.trusted = trustedProxies.compactMap(AddressBlock.init(parsing:))
    }

    func isTrusted(_ address: String) -> Bool {
        self.trusted.contains { $0.contains(address) }
    }

    /// nil when the request has no peer (in-process tests).
    func clientAddress(_ request: Request, context: KeelRequestContext) -> String? {
        Self.resolve(peer: context.peerAddress, forwardedFor: request.headers[values: .xForwardedFor], isTrusted: self.isTrusted)
    }

    static func resolve(peer: String?, forwardedFor: [String], isTrusted: (String) -> Bool) -> String? {
        guard let peer else { return nil }
        guard isTrusted(peer) else { return Self.rateKey(peer) }
        let hops = forwardedFor.flatMap { $0.split(separator: ",") }.map { Self.address(in: $0.trimmingBlanks()) }.filter { !$0.isEmpty }
        var client = peer
        for hop in hops.reversed() {
            // A hop that is not an address (`unknown`, an obfuscated id) ends the walk.
            guard AddressBlock.bytes(of: hop) != nil else { break }
            client = hop
            if !isTrusted(hop) { break }
        }
        return Self.rateKey(client)
    }

    /// The address in an `X-Forwarded-For` hop, without a port or brackets
    /// (`1.2.3.4:5678`, `[2001:db8::1]:443`).
    static func address(in hop: Substring) -> String {
        var text = hop
        if text.hasPrefix("["), let close = text.firstIndex(of: "]") { return String(text[text.index(after: text.startIndex)..<close]) }
        if text.filter({ $0 == ":" }).count == 1, let colon = text.firstIndex(of: ":") { text = text[..<colon] }
        return String(text)
    }

    /// What a client is counted as: its IPv4 address, or its IPv6 /64 (one
    /// subscriber's network, whose addresses it can rotate at will).
    static func rateKey(_ address: String) -> String {
        guard let bytes = AddressBlock.bytes(of: address), bytes.count == 16 else { return address }
        if bytes.prefix(12) == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF] { return bytes.suffix(4).map(String.init).joined(separator: ".") }
        return bytes.prefix(8).map { String($0, radix: 16) }.joined(separator: ":") + "::/64"
    }
}
