import Foundation
import GRDB
import KeelCore

/// Jobs, their event logs and leader leases in SQLite. Every method is one
/// `BEGIN IMMEDIATE` transaction, so the database's write lock serializes it
/// against every other process: claims never collide and sequence numbers
/// never skip.
struct SQLiteJobQueue: JobQueue, EventLog, LeaderLease {
    let pool: DatabasePool
    /// Enqueues, claims and completions, the writes a busy process makes
    /// many of at once, share transactions (group commit).
    let batcher: SQLiteWriteBatcher

    init(pool: DatabasePool) {
        self.pool = pool
        self.batcher = SQLiteWriteBatcher(pool: pool)
    }

    static let columns = """
        id, session_id, type, input, status, progress, result, error, attempts, max_attempts, idempotency_key,
        created_at, updated_at, run_at, started_at, finished_at, expires_at, lease_owner, lease_expires_at,
        cancel_requested, last_seq
        """

    /// Fenced writes match only the running job whose lease the worker holds.
    static let fence = "id = ? AND lease_token = ? AND status = 'running'"

    func enqueue(_ new: NewJob, now: Date) async throws -> (job: Job, created: Bool) {
        try await withStoreErrors {
            try await self.batcher.write { db in
                if let key = new.idempotencyKey,
                    let existing = try Self.fetch(db, where: "session_id = ? AND idempotency_key = ?", [new.sessionID, key])
                {
                    return (existing, false)
                }
                let ms = now.millisecondsSince1970
                let row = try Row.fetchOne(
                    cached: db,
                    sql: """
                        INSERT INTO keel_jobs (id, session_id, type, input, status, progress, attempts, max_attempts,
                            idempotency_key, created_at, updated_at, run_at)
                        VALUES (?, ?, ?, ?, 'queued', '{}', 0, ?, ?, ?, ?, ?)
                        RETURNING \(Self.columns)
                        """,
                    arguments: [new.id, new.sessionID, new.type, new.inputJSON, new.maxAttempts, new.idempotencyKey, ms, ms, ms]
                )
                return (try Self.decode(row!), true)
            }
        }
    }

    func job(id: String) async throws -> Job? {
        try await withStoreErrors {
            try await self.pool.read { db in try Self.fetch(db, id: id) }
        }
    }

    func jobs(sessionID: String, status: JobStatus?, limit: Int, cursor: String?, now: Date) async throws -> JobPage {
        let position = try cursor.map(JobCursor.init(parsing:))
        return try await withStoreErrors {
            try await self.pool.read { db in
                var conditions = ["session_id = ?", "(expires_at IS NULL OR expires_at > ?)"]
                var arguments: [any DatabaseValueConvertible] = [sessionID, now.millisecondsSince1970]
                if let status {
                    conditions.append("status = ?")
                    arguments.append(status.rawValue)
                }
                if let position {
                    conditions.append("(created_at < ? OR (created_at = ? AND id < ?))")
                    arguments += [position.createdAt, position.createdAt, position.id]
                }
                let rows = try Row.fetchAll(
                    cached: db,
                    sql: "SELECT \(Self.columns) FROM keel_jobs WHERE \(conditions.joined(separator: " AND ")) ORDER BY created_at DESC, id DESC LIMIT ?",
                    arguments: StatementArguments(arguments + [limit + 1])
                )
                let jobs = try rows.map(Self.decode)
                return JobPage(jobs: jobs, limit: limit)
            }
        }
    }

    func claim(owner: String, types: [String], leaseDuration: Duration, now: Date) async throws -> ClaimedJob? {
        guard !types.isEmpty else { return nil }
        let token = Identifiers.random(byteCount: 16)
        return try await withStoreErrors {
            try await self.batcher.write { db -> ClaimedJob? in
                let placeholders = Array(repeating: "?", count: types.count).joined(separator: ", ")
                let ms = now.millisecondsSince1970
                var arguments: [any DatabaseValueConvertible] = [
                    owner, token, now.addingTimeInterval(leaseDuration.timeInterval).millisecondsSince1970, ms, ms, ms,
                ]
                arguments += types
                // One statement: pick the oldest due job, take it, return it.
                guard
                    let row = try Row.fetchOne(
                        cached: db,
                        sql: """
                            UPDATE keel_jobs SET status = 'running', attempts = attempts + 1, lease_owner = ?, lease_token = ?,
                                lease_expires_at = ?, started_at = COALESCE(started_at, ?), updated_at = ?, cancel_requested = 0
                            WHERE id = (
                                SELECT id FROM keel_jobs
                                WHERE status = 'queued' AND run_at <= ? AND type IN (\(placeholders))
                                ORDER BY run_at, created_at LIMIT 1)
                            RETURNING \(Self.columns)
                            """,
                        arguments: StatementArguments(arguments)
                    )
                else { return nil }
                var job = try Self.decode(row)
                if job.lastSequence > 0 {
                    // A retried attempt: clients drop the earlier attempt's partial output.
                    try Self.appendUnfenced(db, jobID: job.id, type: JobEventType.reset, dataJSON: #"{"attempt":\#(job.attempts)}"#, now: ms)
                    job = try Self.fetch(db, id: job.id)!
                }
                return ClaimedJob(job: job, lease: JobLease(jobID: job.id, token: token, owner: owner))
            }
        }
    }

    func heartbeat(_ lease: JobLease, leaseDuration: Duration, now: Date) async throws -> HeartbeatReply {
        try await withStoreErrors {
            try await self.pool.write { db in
                try db.executeCached(
                    sql: "UPDATE keel_jobs SET lease_expires_at = ? WHERE \(Self.fence)",
                    arguments: [now.addingTimeInterval(leaseDuration.timeInterval).millisecondsSince1970, lease.jobID, lease.token]
                )
                guard db.changesCount > 0 else { return .lost }
                let cancel = try Bool.fetchOne(cached: db, sql: "SELECT cancel_requested FROM keel_jobs WHERE id = ?", arguments: [lease.jobID]) ?? false
                return .active(cancelRequested: cancel)
            }
        }
    }

    func setProgress(_ progress: JobProgress, lease: JobLease, now: Date) async throws {
        try await withStoreErrors {
            try await self.pool.write { db in
                try db.executeCached(
                    sql: "UPDATE keel_jobs SET progress = ?, updated_at = ? WHERE \(Self.fence)",
                    arguments: [progress.jsonRepresentation(), now.millisecondsSince1970, lease.jobID, lease.token]
                )
                guard db.changesCount > 0 else { throw KeelError.leaseLost }
            }
        }
    }

    func appendEvent(type: String, dataJSON: String, lease: JobLease, now: Date) async throws -> Int64 {
        try await withStoreErrors {
            try await self.pool.write { db in
                try Self.requireLease(db, lease)
                return try Self.appendUnfenced(db, jobID: lease.jobID, type: type, dataJSON: dataJSON, now: now.millisecondsSince1970)
            }
        }
    }

    func succeed(_ lease: JobLease, resultJSON: String, timing: JobTiming) async throws -> Job {
        try await withStoreErrors {
            try await self.batcher.write { db in
                let ms = timing.now.millisecondsSince1970
                // The fence, the transition and the `done` event's sequence
                // number in one statement, which returns the final job.
                guard
                    let row = try Row.fetchOne(
                        cached: db,
                        sql: """
                            UPDATE keel_jobs SET status = 'succeeded', result = ?, error = NULL, finished_at = ?, updated_at = ?,
                                expires_at = ?, lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, last_seq = last_seq + 1
                            WHERE \(Self.fence)
                            RETURNING \(Self.columns)
                            """,
                        arguments: [resultJSON, ms, ms, timing.expiry.millisecondsSince1970, lease.jobID, lease.token]
                    )
                else { throw KeelError.leaseLost }
                let job = try Self.decode(row)
                try Self.insertEvent(db, jobID: job.id, sequence: job.lastSequence, type: JobEventType.done, dataJSON: job.jsonRepresentation(), ms: ms)
                return job
            }
        }
    }

    func fail(_ lease: JobLease, error: JobFailure, retryAt: Date?, timing: JobTiming) async throws -> Job {
        let errorJSON = try Self.encode(error)
        return try await self.finish(lease, timing: timing) { db, ms in
            let (attempts, maxAttempts) = try Self.attempts(db, id: lease.jobID)
            if let retryAt, attempts < maxAttempts {
                try db.executeCached(
                    sql: """
                        UPDATE keel_jobs SET status = 'queued', error = ?, run_at = ?, updated_at = ?,
                            lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
                        WHERE id = ?
                        """,
                    arguments: [errorJSON, retryAt.millisecondsSince1970, ms, lease.jobID]
                )
                return false
            }
            try Self.markFailed(db, id: lease.jobID, errorJSON: errorJSON, ms: ms, expiry: timing.expiry.millisecondsSince1970)
            return true
        }
    }

    func acknowledgeCancel(_ lease: JobLease, timing: JobTiming) async throws -> Job {
        try await self.finish(lease, timing: timing) { db, ms in
            try Self.markCancelled(db, id: lease.jobID, ms: ms, expiry: timing.expiry.millisecondsSince1970)
            return true
        }
    }

    func release(_ lease: JobLease, now: Date) async throws {
        try await withStoreErrors {
            try await self.pool.write { db in
                let ms = now.millisecondsSince1970
                try db.executeCached(
                    sql: """
                        UPDATE keel_jobs SET status = 'queued', attempts = MAX(attempts - 1, 0), run_at = ?, updated_at = ?,
                            lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
                        WHERE \(Self.fence)
                        """,
                    arguments: [ms, ms, lease.jobID, lease.token]
                )
                guard db.changesCount > 0 else { throw KeelError.leaseLost }
            }
        }
    }

    func cancel(id: String, timing: JobTiming) async throws -> Job? {
        try await withStoreErrors {
            try await self.pool.write { db -> Job? in
                guard let job = try Self.fetch(db, id: id) else { return nil }
                let ms = timing.now.millisecondsSince1970
                switch job.status {
                case .queued:
                    try Self.markCancelled(db, id: id, ms: ms, expiry: timing.expiry.millisecondsSince1970)
                    return try Self.appendDone(db, id: id, ms: ms)
                case .running:
                    try db.executeCached(sql: "UPDATE keel_jobs SET cancel_requested = 1, updated_at = ? WHERE id = ?", arguments: [ms, id])
                    return try Self.fetch(db, id: id)
                case .succeeded, .failed, .cancelled:
                    return job
                }
            }
        }
    }

    func rescueExpiredLeases(timing: JobTiming) async throws -> Int {
        try await withStoreErrors {
            try await self.pool.write { db in
                let ms = timing.now.millisecondsSince1970
                let rows = try Row.fetchAll(
                    cached: db,
                    sql: "SELECT id, attempts, max_attempts FROM keel_jobs WHERE status = 'running' AND lease_expires_at < ?",
                    arguments: [ms]
                )
                let lost = try Self.encode(JobFailure.workerLost)
                for row in rows {
                    let id: String = row[0]
                    let attempts: Int = row[1]
                    let maxAttempts: Int = row[2]
                    if attempts < maxAttempts {
                        try db.executeCached(
                            sql: """
                                UPDATE keel_jobs SET status = 'queued', error = ?, run_at = ?, updated_at = ?,
                                    lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
                                WHERE id = ?
                                """,
                            arguments: [lost, ms, ms, id]
                        )
                    } else {
                        try Self.markFailed(db, id: id, errorJSON: lost, ms: ms, expiry: timing.expiry.millisecondsSince1970)
                        _ = try Self.appendDone(db, id: id, ms: ms)
                    }
                }
                return rows.count
            }
        }
    }

    func purgeExpired(now: Date, limit: Int) async throws -> Int {
        try await withStoreErrors {
            try await self.pool.write { db in
                let ids = try String.fetchAll(
                    cached: db,
                    sql: "SELECT id FROM keel_jobs WHERE expires_at IS NOT NULL AND expires_at < ? LIMIT ?",
                    arguments: [now.millisecondsSince1970, limit]
                )
                for id in ids {
                    try db.executeCached(sql: "DELETE FROM keel_job_events WHERE job_id = ?", arguments: [id])
                    try db.executeCached(sql: "DELETE FROM keel_jobs WHERE id = ?", arguments: [id])
                }
                return ids.count
            }
        }
    }

    func activeJobCount(sessionID: String) async throws -> Int {
        try await withStoreErrors {
            try await self.pool.read { db in
                try Int.fetchOne(
                    cached: db,
                    sql: "SELECT COUNT(*) FROM keel_jobs WHERE session_id = ? AND status IN ('queued', 'running')",
                    arguments: [sessionID]
                ) ?? 0
            }
        }
    }

    func queueDepth() async throws -> Int {
        try await withStoreErrors {
            try await self.pool.read { db in
                try Int.fetchOne(cached: db, sql: "SELECT COUNT(*) FROM keel_jobs WHERE status = 'queued'") ?? 0
            }
        }
    }

    func events(jobID: String, after: Int64, limit: Int) async throws -> [JobEvent] {
        try await withStoreErrors {
            try await self.pool.read { db in
                try Row.fetchAll(
                    cached: db,
                    sql: "SELECT seq, type, data, created_at FROM keel_job_events WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                    arguments: [jobID, after, limit]
                ).map { row in
                    JobEvent(jobID: jobID, sequence: row[0], type: row[1], dataJSON: row[2], createdAt: Date(millisecondsSince1970: row[3]))
                }
            }
        }
    }

    func acquire(_ name: String, owner: String, duration: Duration, now: Date) async throws -> Bool {
        try await withStoreErrors {
            try await self.pool.write { db in
                try db.executeCached(
                    sql: """
                        INSERT INTO keel_leases (name, owner, expires_at) VALUES (?, ?, ?)
                        ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
                        WHERE keel_leases.owner = excluded.owner OR keel_leases.expires_at < ?
                        """,
                    arguments: [name, owner, now.addingTimeInterval(duration.timeInterval).millisecondsSince1970, now.millisecondsSince1970]
                )
                return try String.fetchOne(cached: db, sql: "SELECT owner FROM keel_leases WHERE name = ?", arguments: [name]) == owner
            }
        }
    }

    // MARK: Helpers (inside a transaction)

    /// Runs a fenced terminal transition; appends `done` when `transition` says the job ended.
    private func finish(_ lease: JobLease, timing: JobTiming, _ transition: @escaping @Sendable (Database, Int64) throws -> Bool) async throws -> Job {
        try await withStoreErrors {
            try await self.pool.write { db in
                try Self.requireLease(db, lease)
                let ms = timing.now.millisecondsSince1970
                if try transition(db, ms) {
                    return try Self.appendDone(db, id: lease.jobID, ms: ms)
                }
                return try Self.fetch(db, id: lease.jobID)!
            }
        }
    }

    private static func requireLease(_ db: Database, _ lease: JobLease) throws {
        let held = try Bool.fetchOne(cached: db, sql: "SELECT 1 FROM keel_jobs WHERE \(Self.fence)", arguments: [lease.jobID, lease.token]) ?? false
        guard held else { throw KeelError.leaseLost }
    }

    @discardableResult
    private static func appendUnfenced(_ db: Database, jobID: String, type: String, dataJSON: String, now ms: Int64) throws -> Int64 {
        try db.executeCached(sql: "UPDATE keel_jobs SET last_seq = last_seq + 1, updated_at = ? WHERE id = ?", arguments: [ms, jobID])
        let sequence = try Int64.fetchOne(cached: db, sql: "SELECT last_seq FROM keel_jobs WHERE id = ?", arguments: [jobID]) ?? 0
        try Self.insertEvent(db, jobID: jobID, sequence: sequence, type: type, dataJSON: dataJSON, ms: ms)
        return sequence
    }

    private static func insertEvent(_ db: Database, jobID: String, sequence: Int64, type: String, dataJSON: String, ms: Int64) throws {
        try db.executeCached(
            sql: "INSERT INTO keel_job_events (job_id, seq, type, data, created_at) VALUES (?, ?, ?, ?, ?)",
            arguments: [jobID, sequence, type, dataJSON, ms]
        )
    }

    /// Appends the terminal `done` event, whose data is the final job.
    private static func appendDone(_ db: Database, id: String, ms: Int64) throws -> Job {
        try db.executeCached(sql: "UPDATE keel_jobs SET last_seq = last_seq + 1 WHERE id = ?", arguments: [id])
        let job = try Self.fetch(db, id: id)!
        try Self.insertEvent(db, jobID: id, sequence: job.lastSequence, type: JobEventType.done, dataJSON: job.jsonRepresentation(), ms: ms)
        return job
    }

    private static func markFailed(_ db: Database, id: String, errorJSON: String, ms: Int64, expiry: Int64) throws {
        try db.executeCached(
            sql: """
                UPDATE keel_jobs SET status = 'failed', error = ?, finished_at = ?, updated_at = ?, expires_at = ?,
                    lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
                WHERE id = ?
                """,
            arguments: [errorJSON, ms, ms, expiry, id]
        )
    }

    private static func markCancelled(_ db: Database, id: String, ms: Int64, expiry: Int64) throws {
        try db.executeCached(
            sql: """
                UPDATE keel_jobs SET status = 'cancelled', finished_at = ?, updated_at = ?, expires_at = ?,
                    lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
                WHERE id = ?
                """,
            arguments: [ms, ms, expiry, id]
        )
    }

    private static func attempts(_ db: Database, id: String) throws -> (Int, Int) {
        let row = try Row.fetchOne(cached: db, sql: "SELECT attempts, max_attempts FROM keel_jobs WHERE id = ?", arguments: [id])!
        return (row[0], row[1])
    }

    private static func fetch(_ db: Database, id: String) throws -> Job? {
        try Self.fetch(db, where: "id = ?", [id])
    }

    private static func fetch(_ db: Database, where condition: String, _ arguments: [any DatabaseValueConvertible]) throws -> Job? {
        try Row.fetchOne(cached: db, sql: "SELECT \(Self.columns) FROM keel_jobs WHERE \(condition)", arguments: StatementArguments(arguments)).map(Self.decode)
    }

    private static func decode(_ row: Row) throws -> Job {
        Job(
            id: row[0],
            sessionID: row[1],
            type: row[2],
            inputJSON: row[3],
            status: JobStatus(rawValue: row[4]) ?? .failed,
            progress: try JobRowCoding.decode(JobProgress.self, from: row[5]) ?? JobProgress(),
            resultJSON: row[6],
            error: try JobRowCoding.decode(JobFailure.self, from: row[7]),
            attempts: row[8],
            maxAttempts: row[9],
            idempotencyKey: row[10],
            createdAt: Date(millisecondsSince1970: row[11]),
            updatedAt: Date(millisecondsSince1970: row[12]),
            runAt: Date(millisecondsSince1970: row[13]),
            startedAt: (row[14] as Int64?).map(Date.init(millisecondsSince1970:)),
            finishedAt: (row[15] as Int64?).map(Date.init(millisecondsSince1970:)),
            expiresAt: (row[16] as Int64?).map(Date.init(millisecondsSince1970:)),
            leaseOwner: row[17],
            leaseExpiresAt: (row[18] as Int64?).map(Date.init(millisecondsSince1970:)),
            cancelRequested: row[19],
            lastSequence: row[20]
        )
    }

    private static func encode(_ failure: JobFailure) throws -> String {
        try JobRowCoding.encode(failure)
    }
}
