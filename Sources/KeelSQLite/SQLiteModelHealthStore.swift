import Foundation
import GRDB
import KeelCore

/// Model health in SQLite: each report is one upsert, so reports from every
/// process count and a cooldown only ever grows until it ends.
struct SQLiteModelHealthStore: ModelHealthStore {
    let pool: DatabasePool

    static let columns = "model, cooldown_until, cooldown_reason, consecutive_failures, last_failure_at, last_success_at"

    func recordFailure(model: String, reason: String, cooldown: Duration?, now: Date) async throws -> ModelHealth {
        let until = cooldown.map { now.addingTimeInterval($0.timeInterval).millisecondsSince1970 }
        return try await withStoreErrors {
            try await self.pool.write { db in
                // SET expressions see the row as it was: the later cooldown wins, with its reason.
                let row = try Row.fetchOne(
                    cached: db,
                    sql: """
                        INSERT INTO keel_model_health (model, cooldown_until, cooldown_reason, consecutive_failures, last_failure_at)
                        VALUES (?, ?, ?, 1, ?)
                        ON CONFLICT (model) DO UPDATE SET
                            consecutive_failures = keel_model_health.consecutive_failures + 1,
                            last_failure_at = excluded.last_failure_at,
                            cooldown_reason = CASE
                                WHEN excluded.cooldown_until IS NOT NULL
                                    AND (keel_model_health.cooldown_until IS NULL OR excluded.cooldown_until > keel_model_health.cooldown_until)
                                THEN excluded.cooldown_reason ELSE keel_model_health.cooldown_reason END,
                            cooldown_until = CASE
                                WHEN excluded.cooldown_until IS NOT NULL
                                    AND (keel_model_health.cooldown_until IS NULL OR excluded.cooldown_until > keel_model_health.cooldown_until)
                                THEN excluded.cooldown_until ELSE keel_model_health.cooldown_until END
                        RETURNING \(Self.columns)
                        """,
                    arguments: [model, until, until == nil ? nil : reason, now.millisecondsSince1970]
                )
                return row.map(Self.decode) ?? ModelHealth(model: model)
            }
        }
    }

    func recordSuccess(model: String, now: Date) async throws {
        try await withStoreErrors {
            try await self.pool.write { db in
                try db.executeCached(
                    sql: """
                        INSERT INTO keel_model_health (model, consecutive_failures, last_success_at) VALUES (?, 0, ?)
                        ON CONFLICT (model) DO UPDATE SET consecutive_failures = 0, last_success_at = excluded.last_success_at
                        """,
                    arguments: [model, now.millisecondsSince1970]
                )
            }
        }
    }

    func health(models: [String]) async throws -> [String: ModelHealth] {
        guard !models.isEmpty else { return [:] }
        return try await withStoreErrors {
            try await self.pool.read { db in
                let placeholders = Array(repeating: "?", count: models.count).joined(separator: ", ")
                let rows = try Row.fetchAll(
                    db, sql: "SELECT \(Self.columns) FROM keel_model_health WHERE model IN (\(placeholders))", arguments: StatementArguments(models))
                var health = Dictionary(uniqueKeysWithValues: models.map { ($0, ModelHealth(model: $0)) })
                for row in rows {
                    let decoded = Self.decode(row)
                    health[decoded.model] = decoded
                }
                return health
            }
        }
    }

    func clearCooldown(model: String, now: Date) async throws {
        try await withStoreErrors {
            try await self.pool.write { db in
                try db.executeCached(
                    sql: "UPDATE keel_model_health SET cooldown_until = NULL, cooldown_reason = NULL WHERE model = ?", arguments: [model])
            }
        }
    }

    static func decode(_ row: Row) -> ModelHealth {
        ModelHealth(
            model: row["model"], cooldownUntil: (row["cooldown_until"] as Int64?).map(Date.init(millisecondsSince1970:)),
            cooldownReason: row["cooldown_reason"], consecutiveFailures: row["consecutive_failures"],
            lastFailureAt: (row["last_failure_at"] as Int64?).map(Date.init(millisecondsSince1970:)),
            lastSuccessAt: (row["last_success_at"] as Int64?).map(Date.init(millisecondsSince1970:))
        )
    }
}
