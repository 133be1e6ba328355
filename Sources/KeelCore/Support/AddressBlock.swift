#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An IP address or CIDR block (`10.0.0.0/8`, `::1`, `fd00::/8`), for
/// deciding which proxies are trusted to name the client.
public struct AddressBlock: Sendable, Hashable {
    /// 4 bytes for IPv4, 16 for IPv6.
    public let network: [UInt8]
    public let prefixLength: Int

    public init?(parsing text: String) {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard let address = Self.bytes(of: String(parts[0])) else { return nil }
        let bits = address.count * 8
        var length = bits
        if parts.count == 2 {
            guard let parsed = Int(parts[1]), (0...bits).contains(parsed) else { return nil }
            length = parsed
        }
        self.network = Self.masked(address, prefixLength: length)
        self.prefixLength = length
    }

    /// Whether `address` (textual, IPv4 or IPv6; an IPv4-mapped IPv6
    /// address counts as IPv4) lies in this block.
    public func contains(_ address: String) -> Bool {
        guard var bytes = Self.bytes(of: address) else { return false }
        if bytes.count == 16, self.network.count == 4, bytes.prefix(12) == Self.mappedPrefix[...] { bytes = Array(bytes.suffix(4)) }
        guard bytes.count == self.network.count else { return false }
        return Self.masked(bytes, prefixLength: self.prefixLength) == self.network
    }

    private static let mappedPrefix: [UInt8] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF]

    /// The address's bytes, or nil when it is not an IP address.
    public static func bytes(of text: String) -> [UInt8]? {
        var trimmed = text
        if trimmed.hasPrefix("["), trimmed.hasSuffix("]") { trimmed = String(trimmed.dropFirst().dropLast()) }
        var v4 = in_addr()
        if inet_pton(AF_INET, trimmed, &v4) == 1 {
            return withUnsafeBytes(of: &v4) { Array($0) }
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, trimmed, &v6) == 1 {
            return withUnsafeBytes(of: &v6) { Array($0) }
        }
        return nil
    }

    private static func masked(_ bytes: [UInt8], prefixLength: Int) -> [UInt8] {
        var result = bytes
        for index in result.indices {
            let bitsHere = max(0, min(8, prefixLength - index * 8))
            result[index] &= bitsHere == 0 ? 0 : UInt8(truncatingIfNeeded: 0xFF << (8 - bitsHere))
        }
        return result
    }

    /// Whether the textual address is a loopback address (127.0.0.0/8, ::1,
    /// or IPv4-mapped loopback).
    public static func isLoopback(_ address: String) -> Bool {
        Self.loopback.contains { $0.contains(address) }
    }

    private static let loopback = [AddressBlock(parsing: "127.0.0.0/8")!, AddressBlock(parsing: "::1")!]
}
