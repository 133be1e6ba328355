import Foundation

/// An API key for the OpenAI-compatible API (`/v1`). The key itself is shown
/// once, when it is created; the store keeps only its SHA-256 hash.
public struct APIKey: Sendable, Equatable {
    /// `key_` and random characters; stable, safe to print.
    public var id: String
    /// A name unique among keys not revoked, chosen by the operator.
    public var name: String
    /// Lowercase hex SHA-256 of the whole key.
    public var hash: String
    /// The key's first characters (`sk-keel-` and four more), to recognise it in a list.
    public var prefix: String
    public var createdAt: Date
    public var expiresAt: Date?
    public var revokedAt: Date?
    /// Requests per minute allowed across every instance; nil for no limit.
    public var requestsPerMinute: Int?

    public init(
        id: String, name: String, hash: String, prefix: String, createdAt: Date, expiresAt: Date? = nil, revokedAt: Date? = nil,
        requestsPerMinute: Int? = nil
    ) {
        self.id = id
        self.name = name
        self.hash = hash
        self.prefix = prefix
        self.createdAt = createdAt
        self.expiresAt = expiresAt
        self.revokedAt = revokedAt
        self.requestsPerMinute = requestsPerMinute
    }

    /// The session a key's requests own things under (its responses'
    /// jobs): a key acts as its own session.
    public var sessionID: String { "apikey_" + self.id }

    /// Not revoked and not expired at `now`.
    public func isUsable(at now: Date) -> Bool {
        self.revokedAt == nil && (self.expiresAt.map { now < $0 } ?? true)
    }
}

/// One key's token usage for one model.
public struct APIKeyUsage: Sendable, Equatable {
    public var keyID: String
    public var model: String
    public var requests: Int
    public var inputTokens: Int
    public var outputTokens: Int
    public var lastUsedAt: Date

    public init(keyID: String, model: String, requests: Int, inputTokens: Int, outputTokens: Int, lastUsedAt: Date) {
        self.keyID = keyID
        self.model = model
        self.requests = requests
        self.inputTokens = inputTokens
        self.outputTokens = outputTokens
        self.lastUsedAt = lastUsedAt
    }
}

/// API keys and their usage, shared by every instance: a key revoked on one
/// is refused by all at once (the API reads the key on every request).
public protocol APIKeyStore: Sendable {
    /// Stores a new key. Throws ``KeelError/Code/keyNameTaken`` (409) when a key not
    /// revoked already has the name.
    func createKey(_ key: APIKey) async throws

    /// Every key, revoked and expired ones included, newest first.
    func keys() async throws -> [APIKey]

    /// The key with this hash, revoked or expired included (the caller
    /// decides), or nil.
    func key(hash: String) async throws -> APIKey?

    /// Revokes the key with this id, or the key not revoked with this name;
    /// returns it as revoked (an already revoked key is returned unchanged),
    /// or nil when there is none.
    func revokeKey(idOrName: String, now: Date) async throws -> APIKey?

    /// Adds one request and its tokens to the key's usage for `model`.
    func recordUsage(keyID: String, model: String, inputTokens: Int, outputTokens: Int, now: Date) async throws

    /// The key's usage, by model name.
    func usage(keyID: String) async throws -> [APIKeyUsage]
}
