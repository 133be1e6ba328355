import Foundation
import GRDB
import KeelCore

struct SQLiteSessionStore: SessionStore {
    let pool: DatabasePool
    let reader: SQLiteSessionReader

    private static let columns = "id, data, version, created_at, last_seen_at, expires_at"

    func createSession(_ session: Session) async throws {
        try await withStoreErrors {
            try await self.pool.write { db in
                try db.executeCached(
                    sql: "INSERT INTO keel_sessions (\(Self.columns)) VALUES (?, ?, ?, ?, ?, ?)",
                    arguments: [
                        session.id, session.dataJSON, session.version, session.createdAt.millisecondsSince1970,
                        session.lastSeenAt.millisecondsSince1970, session.expiresAt.millisecondsSince1970,
                    ]
                )
            }
        }
    }

    func session(id: String) async throws -> Session? {
        // The hottest read in Keel. A WAL read never waits for writers and a
        // point lookup takes microseconds, so it runs on the calling thread.
        try self.reader.session(id: id)
    }

    func updateSession(
        id: String,
        expectedVersion: Int64?,
        _ transform: @Sendable (Session) throws -> Session
    ) async throws -> Session? {
        try await withStoreErrors {
            try await self.pool.write { db -> Session? in
                guard let current = try Self.fetch(db, id: id) else { return nil }
                if let expectedVersion, expectedVersion != current.version {
                    throw KeelError.versionConflict(expected: expectedVersion, actual: current.version)
                }
                var updated = try transform(current)
                updated.id = current.id
                updated.createdAt = current.createdAt
                updated.version = current.version + 1
                try db.executeCached(
                    sql: "UPDATE keel_sessions SET data = ?, version = ?, last_seen_at = ?, expires_at = ? WHERE id = ? AND version = ?",
                    arguments: [
                        updated.dataJSON, updated.version, updated.lastSeenAt.millisecondsSince1970,
                        updated.expiresAt.millisecondsSince1970, id, current.version,
                    ]
                )
                return updated
            }
        }
    }

    func touchSession(id: String, lastSeenAt: Date, expiresAt: Date) async throws {
        try await withStoreErrors {
            try await self.pool.write { db in
                try db.executeCached(
                    sql: "UPDATE keel_sessions SET last_seen_at = ?, expires_at = ? WHERE id = ? AND expires_at < ?",
                    arguments: [lastSeenAt.millisecondsSince1970, expiresAt.millisecondsSince1970, id, expiresAt.millisecondsSince1970]
                )
            }
        }
    }

    func deleteSession(id: String) async throws -> Bool {
        try await withStoreErrors {
            try await self.pool.write { db in
                try db.executeCached(sql: "DELETE FROM keel_sessions WHERE id = ?", arguments: [id])
                return db.changesCount > 0
            }
        }
    }

    func purgeExpiredSessions(before cutoff: Date, limit: Int) async throws -> Int {
        try await withStoreErrors {
            try await self.pool.write { db in
                try db.executeCached(
                    sql: "DELETE FROM keel_sessions WHERE id IN (SELECT id FROM keel_sessions WHERE expires_at < ? LIMIT ?)",
                    arguments: [cutoff.millisecondsSince1970, limit]
                )
                return db.changesCount
            }
        }
    }

    private static func fetch(_ db: Database, id: String) throws -> Session? {
        guard let row = try Row.fetchOne(cached: db, sql: "SELECT \(columns) FROM keel_sessions WHERE id = ?", arguments: [id]) else {
            return nil
        }
        return Session(
            id: row[0],
            dataJSON: row[1],
            version: row[2],
            createdAt: Date(millisecondsSince1970: row[3]),
            lastSeenAt: Date(millisecondsSince1970: row[4]),
            expiresAt: Date(millisecondsSince1970: row[5])
        )
    }
}
