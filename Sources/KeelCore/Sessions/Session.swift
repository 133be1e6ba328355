import Foundation

/// A user's session: a small JSON object that every instance can read and
/// write, identified by a random 256-bit id.
public struct Session: Sendable, Equatable {
    /// Random 256-bit identifier, base64url without padding.
    public var id: String
    /// The session's data: the serialized text of a JSON object.
    public var dataJSON: String
    /// Incremented by every update; the basis of compare-and-swap.
    public var version: Int64
    public var createdAt: Date
    /// The last time activity extended the session.
    public var lastSeenAt: Date
    /// After this instant the session is expired and no longer accepted.
    public var expiresAt: Date

    public init(id: String, dataJSON: String, version: Int64, createdAt: Date, lastSeenAt: Date, expiresAt: Date) {
        self.id = id
        self.dataJSON = dataJSON
        self.version = version
        self.createdAt = createdAt
        self.lastSeenAt = lastSeenAt
        self.expiresAt = expiresAt
    }

    public func isExpired(at now: Date) -> Bool {
        now >= self.expiresAt
    }
}
