import Foundation
import GRDB
import KeelCore

/// API keys in SQLite. A name is unique among keys not revoked (a partial
/// unique index), and usage is one upsert per request, so every process's
/// requests count.
struct SQLiteAPIKeyStore: APIKeyStore {
    let pool: DatabasePool

    static let columns = "id, name, hash, prefix, created_at, expires_at, revoked_at, requests_per_minute"

    func createKey(_ key: APIKey) async throws {
        let inserted = try await withStoreErrors {
            try await self.pool.write { db in
                // Only a live key's name conflicts; an id or hash already stored is an error of the store.
                try db.executeCached(
                    sql: """
                        INSERT INTO keel_api_keys (\(Self.columns)) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                        ON CONFLICT (name) WHERE revoked_at IS NULL DO NOTHING
                        """,
                    arguments: [
                        key.id, key.name, key.hash, key.prefix, key.createdAt.millisecondsSince1970, key.expiresAt?.millisecondsSince1970,
                        key.revokedAt?.millisecondsSince1970, key.requestsPerMinute,
                    ]
                )
                return db.changesCount == 1
            }
        }
        guard inserted else { throw KeelError.keyNameTaken(key.name) }
    }

    func keys() async throws -> [APIKey] {
        try await withStoreErrors {
            try await self.pool.read { db in
                try Row.fetchAll(cached: db, sql: "SELECT \(Self.columns) FROM keel_api_keys ORDER BY created_at DESC, id DESC")
                    .map(Self.decode)
            }
        }
    }

    func key(hash: String) async throws -> APIKey? {
        try await withStoreErrors {
            try await self.pool.read { db in
                try Row.fetchOne(cached: db, sql: "SELECT \(Self.columns) FROM keel_api_keys WHERE hash = ?", arguments: [hash])
                    .map(Self.decode)
            }
        }
    }

    func revokeKey(idOrName: String, now: Date) async throws -> APIKey? {
        try await withStoreErrors {
            try await self.pool.write { db in
                // An id first (a revoked key keeps its first revocation time), then a live key's name.
                if let row = try Row.fetchOne(
                    cached: db,
                    sql: "UPDATE keel_api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ? RETURNING \(Self.columns)",
                    arguments: [now.millisecondsSince1970, idOrName])
                {
                    return Self.decode(row)
                }
                return try Row.fetchOne(
                    cached: db,
                    sql: "UPDATE keel_api_keys SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL RETURNING \(Self.columns)",
                    arguments: [now.millisecondsSince1970, idOrName]
                ).map(Self.decode)
            }
        }
    }

    func recordUsage(keyID: String, model: String, inputTokens: Int, outputTokens: Int, now: Date) async throws {
        try await withStoreErrors {
            try await self.pool.write { db in
                try db.executeCached(
                    sql: """
                        INSERT INTO keel_api_key_usage (key_id, model, requests, input_tokens, output_tokens, last_used_at)
                        VALUES (?, ?, 1, ?, ?, ?)
                        ON CONFLICT (key_id, model) DO UPDATE SET
                            requests = keel_api_key_usage.requests + 1,
                            input_tokens = keel_api_key_usage.input_tokens + excluded.input_tokens,
                            output_tokens = keel_api_key_usage.output_tokens + excluded.output_tokens,
                            last_used_at = MAX(keel_api_key_usage.last_used_at, excluded.last_used_at)
                        """,
                    arguments: [keyID, model, inputTokens, outputTokens, now.millisecondsSince1970]
                )
            }
        }
    }

    func usage(keyID: String) async throws -> [APIKeyUsage] {
        try await withStoreErrors {
            try await self.pool.read { db in
                try Row.fetchAll(
                    cached: db,
                    sql: """
                        SELECT key_id, model, requests, input_tokens, output_tokens, last_used_at FROM keel_api_key_usage
                        WHERE key_id = ? ORDER BY model
                        """,
                    arguments: [keyID]
                ).map { row in
                    APIKeyUsage(
                        keyID: row["key_id"], model: row["model"], requests: row["requests"], inputTokens: row["input_tokens"],
                        outputTokens: row["output_tokens"], lastUsedAt: Date(millisecondsSince1970: row["last_used_at"]))
                }
            }
        }
    }

    static func decode(_ row: Row) -> APIKey {
        APIKey(
            id: row["id"], name: row["name"], hash: row["hash"], prefix: row["prefix"],
            createdAt: Date(millisecondsSince1970: row["created_at"]),
            expiresAt: (row["expires_at"] as Int64?).map(Date.init(millisecondsSince1970:)),
            revokedAt: (row["revoked_at"] as Int64?).map(Date.init(millisecondsSince1970:)),
            requestsPerMinute: row["requests_per_minute"]
        )
    }
}
