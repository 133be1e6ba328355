import Crypto
import Foundation
import KeelCore

/// Signs session ids into tokens and verifies tokens, with key rotation:
/// the first secret signs, every secret verifies.
///
/// A token is `<id>.<signature>`: a 256-bit random id and an HMAC-SHA256 of
/// it, both base64url without padding (43 characters each).
public struct SessionSigner: Sendable {
    /// One HMAC state per secret, keyed once; each use copies it.
    private let keys: [HMAC<SHA256>]

    static let idLength = 43
    static let signatureLength = 43

    public init(secrets: [String]) {
        precondition(!secrets.isEmpty, "at least one secret is needed")
        self.keys = secrets.map { HMAC<SHA256>(key: SymmetricKey(data: SHA256.hash(data: Data($0.utf8)))) }
    }

    public func token(for sessionID: String) -> String {
        sessionID + "." + Self.signature(of: sessionID, key: self.keys[0])
    }

    /// The session id inside `token` when a configured secret signed it.
    public func verify(_ token: String) -> String? {
        let bytes = Array(token.utf8)
        guard bytes.count == Self.idLength + 1 + Self.signatureLength, bytes[Self.idLength] == UInt8(ascii: ".") else { return nil }
        let id = bytes[..<Self.idLength]
        let signature = bytes[(Self.idLength + 1)...]
        guard Identifiers.isBase64URL(Substring(decoding: id, as: UTF8.self), length: Self.idLength) else { return nil }
        for key in self.keys {
            let expected = Self.signature(of: id, key: key).utf8
            // Constant time: compare every byte whatever the first difference.
            var difference: UInt8 = 0
            for (a, b) in zip(expected, signature) { difference |= a ^ b }
            if difference == 0 { return String(decoding: id, as: UTF8.self) }
        }
        return nil
    }

    private static func signature(of id: some DataProtocol, key: HMAC<SHA256>) -> String {
        var hmac = key
        hmac.update(data: id)
        // Through its bytes: iterating the MAC as a sequence goes element by element.
        return hmac.finalize().withUnsafeBytes { Identifiers.base64URL($0) }
    }

    private static func signature(of id: String, key: HMAC<SHA256>) -> String {
        Self.signature(of: Array(id.utf8), key: key)
    }

    /// Meta key under which a generated secret is kept in the store.
    public static let storedSecretKey = "session_signing_secret"

    /// The signer for this deployment: configured secrets, or else the secret
    /// generated once and kept in the store, so every instance signs alike.
    public static func resolve(configured: [String], meta: any MetaStore) async throws -> SessionSigner {
        if !configured.isEmpty { return SessionSigner(secrets: configured) }
        let stored = try await meta.insertMetaValueIfAbsent(Identifiers.random(byteCount: 48), forKey: Self.storedSecretKey)
        return SessionSigner(secrets: [stored])
    }
}
