import Foundation
import KeelCore
import Logging
import PostgresNIO

/// API keys in PostgreSQL. A name is unique among keys not revoked (a
/// partial unique index), and usage is one upsert per request, so every
/// instance's requests count.
struct PostgresAPIKeyStore: APIKeyStore, PostgresRole {
    let client: PostgresClient
    let logger: Logger
    let started: StartSignal

    static let columns = "id, name, hash, prefix, created_at, expires_at, revoked_at, requests_per_minute"

    func createKey(_ key: APIKey) async throws {
        let inserted = try await self.operation {
            // Only a live key's name conflicts; an id or hash already stored is an error of the store.
            var inserted = false
            for try await _ in try await self.client.query(
                """
                INSERT INTO keel_api_keys (id, name, hash, prefix, created_at, expires_at, revoked_at, requests_per_minute)
                VALUES (\(key.id), \(key.name), \(key.hash), \(key.prefix), \(key.createdAt.millisecondsSince1970),
                    \(key.expiresAt?.millisecondsSince1970), \(key.revokedAt?.millisecondsSince1970), \(key.requestsPerMinute.map { Int64($0) }))
                ON CONFLICT (name) WHERE revoked_at IS NULL DO NOTHING
                RETURNING 1
                """,
                logger: self.logger
            ) {
                inserted = true
            }
            return inserted
        }
        guard inserted else { throw KeelError.keyNameTaken(key.name) }
    }

    func keys() async throws -> [APIKey] {
        try await self.operation {
            try await Self.fetchKeys(
                self.client.query("SELECT \(unescaped: Self.columns) FROM keel_api_keys ORDER BY created_at DESC, id DESC", logger: self.logger))
        }
    }

    func key(hash: String) async throws -> APIKey? {
        try await self.operation {
            try await Self.fetchKeys(
                self.client.query("SELECT \(unescaped: Self.columns) FROM keel_api_keys WHERE hash = \(hash)", logger: self.logger)
            ).first
        }
    }

    func revokeKey(idOrName: String, now: Date) async throws -> APIKey? {
        let at = now.millisecondsSince1970
        return try await self.transaction { connection in
            // An id first (a revoked key keeps its first revocation time), then a live key's name.
            let byID = try await Self.fetchKeys(
                connection.query(
                    """
                    UPDATE keel_api_keys SET revoked_at = COALESCE(revoked_at, \(at)) WHERE id = \(idOrName)
                    RETURNING \(unescaped: Self.columns)
                    """,
                    logger: self.logger
                )
            )
            if let key = byID.first { return key }
            return try await Self.fetchKeys(
                connection.query(
                    """
                    UPDATE keel_api_keys SET revoked_at = \(at) WHERE name = \(idOrName) AND revoked_at IS NULL
                    RETURNING \(unescaped: Self.columns)
                    """,
                    logger: self.logger
                )
            ).first
        }
    }

    func recordUsage(keyID: String, model: String, inputTokens: Int, outputTokens: Int, now: Date) async throws {
        try await self.operation {
            try await self.client.query(
                """
                INSERT INTO keel_api_key_usage (key_id, model, requests, input_tokens, output_tokens, last_used_at)
                VALUES (\(keyID), \(model), 1, \(Int64(inputTokens)), \(Int64(outputTokens)), \(now.millisecondsSince1970))
                ON CONFLICT (key_id, model) DO UPDATE SET
                    requests = keel_api_key_usage.requests + 1,
                    input_tokens = keel_api_key_usage.input_tokens + excluded.input_tokens,
                    output_tokens = keel_api_key_usage.output_tokens + excluded.output_tokens,
                    last_used_at = GREATEST(keel_api_key_usage.last_used_at, excluded.last_used_at)
                """,
                logger: self.logger
            )
        }
    }

    func usage(keyID: String) async throws -> [APIKeyUsage] {
        try await self.operation {
            var usage: [APIKeyUsage] = []
            for try await row in try await self.client.query(
                """
                SELECT key_id, model, requests, input_tokens, output_tokens, last_used_at FROM keel_api_key_usage
                WHERE key_id = \(keyID) ORDER BY model
                """,
                logger: self.logger
            ) {
                let columns = row.makeRandomAccess()
                usage.append(
                    APIKeyUsage(
                        keyID: try columns["key_id"].decode(String.self), model: try columns["model"].decode(String.self),
                        requests: Int(try columns["requests"].decode(Int64.self)),
                        inputTokens: Int(try columns["input_tokens"].decode(Int64.self)),
                        outputTokens: Int(try columns["output_tokens"].decode(Int64.self)),
                        lastUsedAt: Date(millisecondsSince1970: try columns["last_used_at"].decode(Int64.self))
                    )
                )
            }
            return usage
        }
    }

    private static func fetchKeys(_ rows: PostgresRowSequence) async throws -> [APIKey] {
        var keys: [APIKey] = []
        for try await row in rows {
            let columns = row.makeRandomAccess()
            keys.append(
                APIKey(
                    id: try columns["id"].decode(String.self), name: try columns["name"].decode(String.self),
                    hash: try columns["hash"].decode(String.self), prefix: try columns["prefix"].decode(String.self),
                    createdAt: Date(millisecondsSince1970: try columns["created_at"].decode(Int64.self)),
                    expiresAt: try columns["expires_at"].decode(Int64?.self).map(Date.init(millisecondsSince1970:)),
                    revokedAt: try columns["revoked_at"].decode(Int64?.self).map(Date.init(millisecondsSince1970:)),
                    requestsPerMinute: try columns["requests_per_minute"].decode(Int64?.self).map { Int($0) }
                )
            )
        }
        return keys
    }
}
