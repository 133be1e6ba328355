import Crypto
import Foundation
import KeelCore

/// Signs session ids into tokens and verifies tokens, with key rotation:
/// the first secret signs, every secret verifies.
///
/// A token is `<id>.<signature>`: a 256-bit random id and an HMAC-SHA256 of
/// it, both base64url without padding (43 characters each).
public struct SessionSigner: Sendable {
    private let keys: [SymmetricKey]

    static let idLength = 43
    static let signatureLength = 43

    public init(secrets: [String]) {
        precondition(!secrets.isEmpty, "at least one secret is needed")
        self.keys = secrets.map { SymmetricKey(data: SHA256.hash(data: Data($0.utf8))) }
    }

    public func token(for sessionID: String) -> String {
        sessionID + "." + Self.signature(of: sessionID, key: self.keys[0])
    }

    /// The session id inside `token` when a configured secret signed it.
    public func verify(_ token: String) -> String? {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 2, Identifiers.isBase64URL(parts[0], length: Self.idLength),
            Identifiers.isBase64URL(parts[1], length: Self.signatureLength),
            let signature = Data(base64URLEncoded: parts[1])
        else { return nil }
        let id = String(parts[0])
        for key in self.keys where HMAC<SHA256>.isValidAuthenticationCode(signature, authenticating: Data(id.utf8), using: key) {
            return id
        }
        return nil
    }

    private static func signature(of id: String, key: SymmetricKey) -> String {
        Identifiers.base64URL(HMAC<SHA256>.authenticationCode(for: Data(id.utf8), using: key))
    }

    /// Meta key under which a generated secret is kept in the store.
    static let storedSecretKey = "session_signing_secret"

    /// The signer for this deployment: configured secrets, or else the secret
    /// generated once and kept in the store, so every instance signs alike.
    public static func resolve(configured: [String], meta: any MetaStore) async throws -> SessionSigner {
        if !configured.isEmpty { return SessionSigner(secrets: configured) }
        let stored = try await meta.insertMetaValueIfAbsent(Identifiers.random(byteCount: 48), forKey: Self.storedSecretKey)
        return SessionSigner(secrets: [stored])
    }
}

extension Data {
    init?(base64URLEncoded text: Substring) {
        var base64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        base64 += String(repeating: "=", count: (4 - base64.count % 4) % 4)
        self.init(base64Encoded: base64)
    }
}
