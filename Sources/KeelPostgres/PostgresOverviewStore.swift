import Foundation
import KeelCore
import Logging
import PostgresNIO

/// The admin dashboard's reads in PostgreSQL: one row per instance, upserted
/// by its reports, and counts over the jobs and uploads tables.
struct PostgresOverviewStore: OverviewStore {
    let client: PostgresClient
    let logger: Logger
    let started: StartSignal

    func recordInstance(_ report: InstanceReport) async throws {
        await self.started.wait()
        try await withStoreErrors {
            _ = try await self.client.query(
                """
                INSERT INTO keel_instances (id, version, started_at, seen_at, figures)
                VALUES (\(report.id), \(report.version), \(report.startedAt.millisecondsSince1970), \(report.seenAt.millisecondsSince1970),
                        \(report.figures.serialized()))
                ON CONFLICT (id) DO UPDATE SET version = excluded.version, started_at = excluded.started_at,
                    seen_at = excluded.seen_at, figures = excluded.figures
                """,
                logger: self.logger
            )
        }
    }

    func instances(seenSince since: Date) async throws -> [InstanceReport] {
        await self.started.wait()
        return try await withStoreErrors {
            var reports: [InstanceReport] = []
            for try await row in try await self.client.query(
                """
                SELECT id, version, started_at, seen_at, figures FROM keel_instances
                WHERE seen_at >= \(since.millisecondsSince1970) ORDER BY seen_at DESC, id
                """,
                logger: self.logger
            ) {
                let columns = row.makeRandomAccess()
                reports.append(
                    InstanceReport(
                        id: try columns["id"].decode(String.self), version: try columns["version"].decode(String.self),
                        startedAt: Date(millisecondsSince1970: try columns["started_at"].decode(Int64.self)),
                        seenAt: Date(millisecondsSince1970: try columns["seen_at"].decode(Int64.self)),
                        figures: .object(try JSONValue.storedObject(try columns["figures"].decode(String.self)))))
            }
            return reports
        }
    }

    func purgeInstances(seenBefore before: Date) async throws -> Int {
        await self.started.wait()
        return try await withStoreErrors {
            var count = 0
            for try await _ in try await self.client.query(
                "DELETE FROM keel_instances WHERE seen_at < \(before.millisecondsSince1970) RETURNING 1", logger: self.logger)
            {
                count += 1
            }
            return count
        }
    }

    func jobCounts() async throws -> [JobCount] {
        await self.started.wait()
        return try await withStoreErrors {
            var counts: [JobCount] = []
            for try await (type, status, count) in try await self.client.query(
                "SELECT type, status, COUNT(*) FROM keel_jobs GROUP BY type, status ORDER BY type, status", logger: self.logger
            ).decode((String, String, Int64).self) {
                if let status = JobStatus(rawValue: status) { counts.append(JobCount(type: type, status: status, count: Int(count))) }
            }
            return counts
        }
    }

    func jobActivity(since: Date, bucket: Duration) async throws -> [JobActivity] {
        let (length, first) = OverviewBuckets.bounds(since: since, bucket: bucket)
        await self.started.wait()
        return try await withStoreErrors {
            var rows: [(start: Int64, kind: String, count: Int)] = []
            for try await (index, kind, count) in try await self.client.query(
                """
                SELECT (created_at - \(first)) / \(length) AS b, 'created' AS kind, COUNT(*) FROM keel_jobs
                    WHERE created_at >= \(first) GROUP BY b
                UNION ALL
                SELECT (finished_at - \(first)) / \(length) AS b, status AS kind, COUNT(*) FROM keel_jobs
                    WHERE finished_at >= \(first) AND status IN ('succeeded', 'failed', 'cancelled') GROUP BY b, status
                """,
                logger: self.logger
            ).decode((Int64, String, Int64).self) {
                rows.append((start: first + index * length, kind: kind, count: Int(count)))
            }
            return OverviewBuckets.activities(rows)
        }
    }

    func uploadTotals(since: Date) async throws -> UploadTotals {
        await self.started.wait()
        return try await withStoreErrors {
            var totals = UploadTotals()
            for try await (status, count, bytes) in try await self.client.query(
                """
                SELECT status, COUNT(*), COALESCE(SUM(upload_offset), 0)::BIGINT FROM keel_uploads
                WHERE created_at >= \(since.millisecondsSince1970) GROUP BY status
                """,
                logger: self.logger
            ).decode((String, Int64, Int64).self) {
                guard let status = UploadStatus(rawValue: status) else { continue }
                totals.byStatus[status] = Int(count)
                totals.bytesReceived += bytes
            }
            return totals
        }
    }
}
