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
        guard isTrusted(peer) else { return peer }
        let hops = forwardedFor.flatMap { $0.split(separator: ",") }.map { String($0.trimmingBlanks()) }.filter { !$0.isEmpty }
        var client = peer
        for hop in hops.reversed() {
            guard AddressBlock.bytes(of: hop) != nil else { break }
            client = hop
            if !isTrusted(hop) { break }
        }
        return client
    }
}
