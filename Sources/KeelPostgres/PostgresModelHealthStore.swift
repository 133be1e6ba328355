import Foundation
import KeelCore
import Logging
import PostgresNIO

/// Model health in PostgreSQL: each report is one upsert, so reports from
/// every instance count and a cooldown only ever grows until it ends.
struct PostgresModelHealthStore: ModelHealthStore, PostgresRole {
    let client: PostgresClient
    let logger: Logger
    let started: StartSignal

    static let columns = "model, cooldown_until, cooldown_reason, consecutive_failures, last_failure_at, last_success_at"

    func recordFailure(model: String, reason: String, cooldown: Duration?, now: Date) async throws -> ModelHealth {
        let until = cooldown.map { now.addingTimeInterval($0.timeInterval).millisecondsSince1970 }
        let untilReason: String? = until == nil ? nil : reason
        return try await self.operation {
            // SET expressions see the row as it was: the later cooldown wins, with its reason.
            try await Self.fetch(
                self.client.query(
                    """
                    INSERT INTO keel_model_health (model, cooldown_until, cooldown_reason, consecutive_failures, last_failure_at)
                    VALUES (\(model), \(until), \(untilReason), 1, \(now.millisecondsSince1970))
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
                    RETURNING \(unescaped: Self.columns)
                    """,
                    logger: self.logger
                )
            ).first ?? ModelHealth(model: model)
        }
    }

    func recordSuccess(model: String, now: Date) async throws {
        try await self.operation {
            try await self.client.query(
                """
                INSERT INTO keel_model_health (model, consecutive_failures, last_success_at) VALUES (\(model), 0, \(now.millisecondsSince1970))
                ON CONFLICT (model) DO UPDATE SET consecutive_failures = 0, last_success_at = excluded.last_success_at
                """,
                logger: self.logger
            )
        }
    }

    func health(models: [String]) async throws -> [String: ModelHealth] {
        guard !models.isEmpty else { return [:] }
        return try await self.operation {
            let rows = try await Self.fetch(
                self.client.query("SELECT \(unescaped: Self.columns) FROM keel_model_health WHERE model = ANY(\(models))", logger: self.logger))
            var health = Dictionary(uniqueKeysWithValues: models.map { ($0, ModelHealth(model: $0)) })
            for row in rows { health[row.model] = row }
            return health
        }
    }

    func clearCooldown(model: String, now: Date) async throws {
        try await self.operation {
            try await self.client.query(
                "UPDATE keel_model_health SET cooldown_until = NULL, cooldown_reason = NULL WHERE model = \(model)", logger: self.logger)
        }
    }

    private static func fetch(_ rows: PostgresRowSequence) async throws -> [ModelHealth] {
        var health: [ModelHealth] = []
        for try await row in rows {
            let columns = row.makeRandomAccess()
            func date(_ name: String) throws -> Date? { try columns[name].decode(Int64?.self).map(Date.init(millisecondsSince1970:)) }
            health.append(
                ModelHealth(
                    model: try columns["model"].decode(String.self), cooldownUntil: try date("cooldown_until"),
                    cooldownReason: try columns["cooldown_reason"].decode(String?.self),
                    consecutiveFailures: Int(try columns["consecutive_failures"].decode(Int64.self)), lastFailureAt: try date("last_failure_at"),
                    lastSuccessAt: try date("last_success_at")
                )
            )
        }
        return health
    }
}
