import Foundation

/// Durable storage of sessions, shared by every process of every instance.
///
/// Implementations must make each method atomic with respect to every other
/// process using the same store.
public protocol SessionStore: Sendable {
    /// Stores a new session. Ids are random, so a collision is a bug.
    func createSession(_ session: Session) async throws

    /// The session with this id, expired or not; `nil` when there is none.
    func session(id: String) async throws -> Session?

    /// Replaces the session through `transform` as one atomic step and bumps
    /// its version. Concurrent updates from any process are serialized, so none
    /// is lost. When `expectedVersion` is given and differs from the stored
    /// version, throws ``KeelError/Code/versionConflict`` without writing.
    /// Returns `nil` when the session does not exist.
    func updateSession(
        id: String,
        expectedVersion: Int64?,
        _ transform: @Sendable (Session) throws -> Session
    ) async throws -> Session?

    /// Extends a session's expiry without touching its data or version.
    /// Never moves `expiresAt` backwards.
    func touchSession(id: String, lastSeenAt: Date, expiresAt: Date) async throws

    /// Deletes the session; returns whether it existed.
    @discardableResult
    func deleteSession(id: String) async throws -> Bool

    /// Deletes up to `limit` sessions that expired before `cutoff`; returns how many.
    func purgeExpiredSessions(before cutoff: Date, limit: Int) async throws -> Int
}
