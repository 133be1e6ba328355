import Foundation
import KeelCore
import Logging
import PostgresNIO

struct PostgresSessionStore: SessionStore {
    let client: PostgresClient
    let logger: Logger
    let started: StartSignal
    let reads: QueryBatcher<String, Session?>

    func createSession(_ session: Session) async throws {
        try await self.storeOperation {
            try await self.client.query(
                """
                INSERT INTO keel_sessions (id, data, version, created_at, last_seen_at, expires_at)
                VALUES (\(session.id), \(session.dataJSON), \(session.version), \(session.createdAt.millisecondsSince1970),
                        \(session.lastSeenAt.millisecondsSince1970), \(session.expiresAt.millisecondsSince1970))
                """,
                logger: self.logger
            )
        }
    }

    func session(id: String) async throws -> Session? {
        try await self.storeOperation {
            // The hottest read: prepared statements (parsed and planned once
            // per connection), and concurrent lookups share a round trip.
            try await self.reads.submit(id)
        }
    }

    func updateSession(
        id: String,
        expectedVersion: Int64?,
        _ transform: @Sendable (Session) throws -> Session
    ) async throws -> Session? {
        try await self.storeOperation {
            try await self.client.withTransaction(logger: self.logger) { connection -> Session? in
                // The row lock serializes concurrent updates from every instance.
                let rows = try await connection.query(
                    "SELECT id, data, version, created_at, last_seen_at, expires_at FROM keel_sessions WHERE id = \(id) FOR UPDATE",
                    logger: self.logger
                )
                guard let current = try await Self.first(rows) else { return nil }
                if let expectedVersion, expectedVersion != current.version {
                    throw KeelError.versionConflict(expected: expectedVersion, actual: current.version)
                }
                var updated = try transform(current)
                updated.id = current.id
                updated.createdAt = current.createdAt
                updated.version = current.version + 1
                try await connection.query(
                    """
                    UPDATE keel_sessions SET data = \(updated.dataJSON), version = \(updated.version),
                        last_seen_at = \(updated.lastSeenAt.millisecondsSince1970), expires_at = \(updated.expiresAt.millisecondsSince1970)
                    WHERE id = \(id) AND version = \(current.version)
                    """,
                    logger: self.logger
                )
                return updated
            }
        }
    }

    func touchSession(id: String, lastSeenAt: Date, expiresAt: Date) async throws {
        try await self.storeOperation {
            let expires = expiresAt.millisecondsSince1970
            try await self.client.query(
                "UPDATE keel_sessions SET last_seen_at = \(lastSeenAt.millisecondsSince1970), expires_at = \(expires) WHERE id = \(id) AND expires_at < \(expires)",
                logger: self.logger
            )
        }
    }

    func deleteSession(id: String) async throws -> Bool {
        try await self.storeOperation {
            let rows = try await self.client.query("DELETE FROM keel_sessions WHERE id = \(id) RETURNING id", logger: self.logger)
            var deleted = false
            for try await _ in rows.decode(String.self) { deleted = true }
            return deleted
        }
    }

    func purgeExpiredSessions(before cutoff: Date, limit: Int) async throws -> Int {
        try await self.storeOperation {
            let rows = try await self.client.query(
                """
                DELETE FROM keel_sessions WHERE id IN (
                    SELECT id FROM keel_sessions WHERE expires_at < \(cutoff.millisecondsSince1970) LIMIT \(limit) FOR UPDATE SKIP LOCKED
                ) RETURNING id
                """,
                logger: self.logger
            )
            var count = 0
            for try await _ in rows.decode(String.self) { count += 1 }
            return count
        }
    }

    private static func first(_ rows: PostgresRowSequence) async throws -> Session? {
        var session: Session?
        for try await row in rows {
            session = try Session(sessionRow: row)
        }
        return session
    }

    @discardableResult
    private func storeOperation<T>(_ body: () async throws -> T) async throws -> T {
        await self.started.wait()
        return try await withStoreErrors(body)
    }
}

extension QueryBatcher where Request == String, Reply == Session? {
    /// Session lookups by id, sharing `SELECT … WHERE id = ANY($1)`.
    static func sessionReads(client: PostgresClient, logger: Logger, maxInFlight: Int, stallAfter: Duration) -> QueryBatcher {
        QueryBatcher("session lookups", maxInFlight: maxInFlight, stallAfter: stallAfter, maxBatch: 256, logger: logger) { ids in
            var sessions: [String: Session] = [:]
            for try await session in try await client.execute(SessionsByIDs(ids: Array(Set(ids))), logger: logger) {
                sessions[session.id] = session
            }
            return ids.map { sessions[$0] }
        }
    }
}

/// The session lookup of ``QueryBatcher/sessionReads(client:logger:maxInFlight:stallAfter:)``, one id or many, prepared
/// once per connection.
struct SessionsByIDs: PostgresPreparedStatement {
    static let name = "keel_sessions_by_ids"
    static let sql = "SELECT id, data, version, created_at, last_seen_at, expires_at FROM keel_sessions WHERE id = ANY($1)"
    typealias Row = Session

    var ids: [String]

    func makeBindings() throws -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 1)
        bindings.append(self.ids)
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> Session {
        try Session(sessionRow: row)
    }
}

extension Session {
    /// A row of `SELECT id, data, version, created_at, last_seen_at, expires_at FROM keel_sessions`.
    init(sessionRow row: PostgresRow) throws {
        let (id, data, version, created, lastSeen, expires) = try row.decode((String, String, Int64, Int64, Int64, Int64).self)
        self.init(
            id: id,
            dataJSON: data,
            version: version,
            createdAt: Date(millisecondsSince1970: created),
            lastSeenAt: Date(millisecondsSince1970: lastSeen),
            expiresAt: Date(millisecondsSince1970: expires)
        )
    }
}
