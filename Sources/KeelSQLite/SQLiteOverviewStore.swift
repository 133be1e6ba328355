import Foundation
import GRDB
import KeelCore

/// The admin dashboard's reads in SQLite: one row per instance, upserted by
/// its reports, and counts over the jobs and uploads tables.
struct SQLiteOverviewStore: OverviewStore {
    let pool: DatabasePool

    func recordInstance(_ report: InstanceReport) async throws {
        try await withStoreErrors {
            try await self.pool.write { db in
                try db.executeCached(
                    sql: """
                        INSERT INTO keel_instances (id, version, started_at, seen_at, figures) VALUES (?, ?, ?, ?, ?)
                        ON CONFLICT (id) DO UPDATE SET version = excluded.version, started_at = excluded.started_at,
                            seen_at = excluded.seen_at, figures = excluded.figures
                        """,
                    arguments: [
                        report.id, report.version, report.startedAt.millisecondsSince1970, report.seenAt.millisecondsSince1970,
                        report.figures.serialized(),
                    ]
                )
            }
        }
    }

    func instances(seenSince since: Date) async throws -> [InstanceReport] {
        try await withStoreErrors {
            try await self.pool.read { db in
                try Row.fetchAll(
                    cached: db,
                    sql: "SELECT id, version, started_at, seen_at, figures FROM keel_instances WHERE seen_at >= ? ORDER BY seen_at DESC, id",
                    arguments: [since.millisecondsSince1970]
                ).map { row in
                    InstanceReport(
                        id: row["id"], version: row["version"], startedAt: Date(millisecondsSince1970: row["started_at"]),
                        seenAt: Date(millisecondsSince1970: row["seen_at"]), figures: .object(try JSONValue.storedObject(row["figures"])))
                }
            }
        }
    }

    func purgeInstances(seenBefore before: Date) async throws -> Int {
        try await withStoreErrors {
            try await self.pool.write { db in
                try db.executeCached(sql: "DELETE FROM keel_instances WHERE seen_at < ?", arguments: [before.millisecondsSince1970])
                return db.changesCount
            }
        }
    }

    func jobCounts() async throws -> [JobCount] {
        try await withStoreErrors {
            try await self.pool.read { db in
                try Row.fetchAll(
                    cached: db, sql: "SELECT type, status, COUNT(*) AS n FROM keel_jobs GROUP BY type, status ORDER BY type, status"
                ).compactMap { row in
                    JobStatus(rawValue: row["status"]).map { JobCount(type: row["type"], status: $0, count: row["n"]) }
                }
            }
        }
    }

    func jobActivity(since: Date, bucket: Duration) async throws -> [JobActivity] {
        let (length, first) = OverviewBuckets.bounds(since: since, bucket: bucket)
        return try await withStoreErrors {
            try await self.pool.read { db in
                let rows = try Row.fetchAll(
                    cached: db,
                    sql: """
                        SELECT (created_at - ?2) / ?1 AS b, 'created' AS kind, COUNT(*) AS n FROM keel_jobs
                            WHERE created_at >= ?2 GROUP BY b
                        UNION ALL
                        SELECT (finished_at - ?2) / ?1 AS b, status AS kind, COUNT(*) AS n FROM keel_jobs
                            WHERE finished_at >= ?2 AND status IN ('succeeded', 'failed', 'cancelled') GROUP BY b, status
                        """,
                    arguments: [length, first]
                )
                return OverviewBuckets.activities(rows.map { (start: first + ($0["b"] as Int64) * length, kind: $0["kind"], count: $0["n"]) })
            }
        }
    }

    func uploadTotals(since: Date) async throws -> UploadTotals {
        try await withStoreErrors {
            try await self.pool.read { db in
                var totals = UploadTotals()
                for row in try Row.fetchAll(
                    cached: db,
                    sql: "SELECT status, COUNT(*) AS n, COALESCE(SUM(upload_offset), 0) AS bytes FROM keel_uploads WHERE created_at >= ? GROUP BY status",
                    arguments: [since.millisecondsSince1970])
                {
                    guard let status = UploadStatus(rawValue: row["status"]) else { continue }
                    totals.byStatus[status] = row["n"]
                    totals.bytesReceived += row["bytes"] as Int64
                }
                return totals
            }
        }
    }
}
