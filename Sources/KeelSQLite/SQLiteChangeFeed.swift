import Foundation
import GRDB
import KeelCore

/// Notices commits by other processes sharing the SQLite file.
///
/// SQLite has no notifications between processes, so one connection per
/// process polls `PRAGMA data_version`, which changes exactly when another
/// connection committed, and costs a look at the WAL index in shared
/// memory. Only when it changed does the feed query what: new rows of the
/// event log (by rowid), running jobs asked to stop, and job types with due
/// queued jobs.
final class SQLiteChangeFeed: ChangeFeed {
    let path: String
    let interval: Duration
    let busyTimeout: Duration

    init(path: String, interval: Duration, busyTimeout: Duration) {
        self.path = path
        self.interval = interval
        self.busyTimeout = busyTimeout
    }

    func follow(_ deliver: @escaping @Sendable ([StoreChange]) -> Void) async throws {
        var configuration = Configuration()
        configuration.busyMode = .timeout(self.busyTimeout.timeInterval)
        configuration.label = "keel-change-feed"
        let queue = try DatabaseQueue(path: self.path, configuration: configuration)
        defer { try? queue.close() }

        var (lastVersion, lastRowID) = try await queue.read { db in
            (try Int64.fetchOne(cached: db, sql: "PRAGMA data_version") ?? 0,
             try Int64.fetchOne(cached: db, sql: "SELECT COALESCE(MAX(rowid), 0) FROM keel_job_events") ?? 0)
        }
        while true {
            try await Task.sleep(for: self.interval)
            let seenVersion = lastVersion
            let seenRowID = lastRowID
            let now = Date().millisecondsSince1970
            let poll = try await queue.read { db -> (version: Int64, rowID: Int64, changes: [StoreChange]) in
                let version = try Int64.fetchOne(cached: db, sql: "PRAGMA data_version") ?? 0
                guard version != seenVersion else { return (version, seenRowID, []) }
                var changes: [StoreChange] = []
                var rowID = seenRowID
                let rows = try Row.fetchAll(cached: db, sql: "SELECT rowid, job_id FROM keel_job_events WHERE rowid > ? ORDER BY rowid LIMIT 5000", arguments: [seenRowID])
                var jobs = Set<String>()
                for row in rows {
                    rowID = row[0]
                    let jobID: String = row[1]
                    if jobs.insert(jobID).inserted { changes.append(.jobEvents(jobID: jobID)) }
                }
                if rows.isEmpty {
                    // Purged rows can lower the largest rowid; follow it down.
                    rowID = min(rowID, try Int64.fetchOne(cached: db, sql: "SELECT COALESCE(MAX(rowid), 0) FROM keel_job_events") ?? 0)
                }
                // Running jobs someone asked to stop (few rows: the claim index
                // holds the running ones); repeated while the flag stands, harmlessly.
                for jobID in try String.fetchAll(
                    cached: db, sql: "SELECT id FROM keel_jobs WHERE status = 'running' AND cancel_requested = 1 LIMIT 1000")
                {
                    changes.append(.cancelRequested(jobID: jobID))
                }
                // Idle workers wake for any due job (one indexed probe, not a scan of the queue).
                if let type = try String.fetchOne(cached: db, sql: "SELECT type FROM keel_jobs WHERE status = 'queued' AND run_at <= ? LIMIT 1", arguments: [now]) {
                    changes.append(.jobReady(type: type))
                }
                return (version, rowID, changes)
            }
            lastVersion = poll.version
            lastRowID = poll.rowID
            if !poll.changes.isEmpty { deliver(poll.changes) }
        }
    }
}
