import Foundation
import KeelCore
import Logging
import PostgresNIO

/// Jobs, their event logs and leader leases in PostgreSQL. Claims use
/// `FOR UPDATE SKIP LOCKED`; appends lock the job row, so sequence numbers
/// are gap-free and commit in order. New events and claimable jobs are
/// announced with `NOTIFY` (delivered at commit).
struct PostgresJobQueue: JobQueue, EventLog, LeaderLease, PostgresRole {
    let client: PostgresClient
    let logger: Logger
    let started: StartSignal
    /// Enqueues, claims and completions: each kind runs at most `maxInFlight`
    /// statements at once per process, and the requests waiting meanwhile
    /// share the next one.
    let enqueues: QueryBatcher<(job: NewJob, now: Int64), (job: Job, created: Bool)?>
    /// A claim's or a completion's reply is its own outcome: when a batch
    /// needs more than one statement, the requests a committed statement
    /// carried keep its result even if a later one fails.
    let claims: QueryBatcher<ClaimRequest, Result<Job?, any Error>>
    let completions: QueryBatcher<Completion, Result<Job?, any Error>>

    struct ClaimRequest: Sendable {
        var owner: String
        var token: String
        var leaseUntil: Int64
        var now: Int64
        var types: [String]
    }

    typealias Completion = (lease: JobLease, resultJSON: String, now: Int64, expiry: Int64)

    static let columns = """
        id, session_id, type, input, status, progress, result, error, attempts, max_attempts, idempotency_key,
        created_at, updated_at, run_at, started_at, finished_at, expires_at, lease_owner, lease_expires_at,
        cancel_requested, last_seq
        """

    /// The most requests one shared statement carries.
    static let maxBatch = 64

    init(client: PostgresClient, logger: Logger, started: StartSignal, maxInFlight: Int, stallAfter: Duration) {
        self.client = client
        self.logger = logger
        self.started = started
        self.enqueues = QueryBatcher("job enqueues", maxInFlight: maxInFlight, stallAfter: stallAfter, maxBatch: Self.maxBatch, logger: logger) {
            try await Self.enqueue($0, client: client, logger: logger)
        }
        self.claims = QueryBatcher("job claims", maxInFlight: maxInFlight, stallAfter: stallAfter, maxBatch: Self.maxBatch, logger: logger) {
            await Self.claim($0, client: client, logger: logger)
        }
        self.completions = QueryBatcher("job completions", maxInFlight: maxInFlight, stallAfter: stallAfter, maxBatch: Self.maxBatch, logger: logger) {
            await Self.succeed($0, client: client, logger: logger)
        }
    }

    func enqueue(_ new: NewJob, now: Date) async throws -> (job: Job, created: Bool) {
        try await self.operation {
            // One statement (its own transaction) inserts, announces and returns the row,
            // or the job of an earlier request in the same statement with the same key.
            if let enqueued = try await self.enqueues.submit((new, now.millisecondsSince1970)) { return enqueued }
            // The key was taken by an earlier statement, possibly a racing
            // request's: ON CONFLICT waited for it to commit.
            let existing = try await self.jobs(
                self.client,
                "SELECT \(unescaped: Self.columns) FROM keel_jobs WHERE session_id = \(new.sessionID) AND idempotency_key = \(new.idempotencyKey)"
            )
            guard let job = existing.first else { throw KeelError(.internalError, "idempotent enqueue found no job") }
            return (job, false)
        }
    }

    func job(id: String) async throws -> Job? {
        try await self.operation {
            try await self.jobs(self.client, "SELECT \(unescaped: Self.columns) FROM keel_jobs WHERE id = \(id)").first
        }
    }

    func jobs(sessionID: String, status: JobStatus?, limit: Int, cursor: String?, now: Date) async throws -> JobPage {
        let position = try cursor.map(JobCursor.init(parsing:))
        return try await self.operation {
            let ms = now.millisecondsSince1970
            let cursorCreated = position?.createdAt ?? Int64.max
            let cursorID = position?.id ?? ""
            let rows = try await self.jobs(
                self.client,
                """
                SELECT \(unescaped: Self.columns) FROM keel_jobs
                WHERE session_id = \(sessionID) AND (expires_at IS NULL OR expires_at > \(ms))
                  AND (\(status?.rawValue)::text IS NULL OR status = \(status?.rawValue))
                  AND (\(position == nil) OR created_at < \(cursorCreated) OR (created_at = \(cursorCreated) AND id < \(cursorID)))
                ORDER BY created_at DESC, id DESC LIMIT \(limit + 1)
                """
            )
            return JobPage(jobs: rows, limit: limit)
        }
    }

    func claim(owner: String, types: [String], leaseDuration: Duration, now: Date) async throws -> ClaimedJob? {
        guard !types.isEmpty else { return nil }
        let request = ClaimRequest(
            owner: owner,
            token: Identifiers.random(byteCount: 16),
            leaseUntil: now.addingTimeInterval(leaseDuration.timeInterval).millisecondsSince1970,
            now: now.millisecondsSince1970,
            types: types
        )
        return try await self.operation {
            try await self.claims.submit(request).get().map { ClaimedJob(job: $0, lease: JobLease(jobID: $0.id, token: request.token, owner: owner)) }
        }
    }

    func heartbeat(_ lease: JobLease, leaseDuration: Duration, now: Date) async throws -> HeartbeatReply {
        try await self.operation {
            let leaseUntil = now.addingTimeInterval(leaseDuration.timeInterval).millisecondsSince1970
            let rows = try await self.client.query(
                """
                UPDATE keel_jobs SET lease_expires_at = \(leaseUntil)
                WHERE id = \(lease.jobID) AND lease_token = \(lease.token) AND status = 'running'
                RETURNING cancel_requested
                """,
                logger: self.logger
            )
            var reply = HeartbeatReply.lost
            for try await cancel in rows.decode(Bool.self) { reply = .active(cancelRequested: cancel) }
            return reply
        }
    }

    func setProgress(_ progress: JobProgress, lease: JobLease, now: Date) async throws {
        try await self.operation {
            let rows = try await self.client.query(
                """
                UPDATE keel_jobs SET progress = \(progress.jsonRepresentation()), updated_at = \(now.millisecondsSince1970)
                WHERE id = \(lease.jobID) AND lease_token = \(lease.token) AND status = 'running' RETURNING id
                """,
                logger: self.logger
            )
            var updated = false
            for try await _ in rows.decode(String.self) { updated = true }
            guard updated else { throw KeelError.leaseLost }
        }
    }

    func appendEvent(type: String, dataJSON: String, lease: JobLease, now: Date) async throws -> Int64 {
        try await self.operation {
            let ms = now.millisecondsSince1970
            // One statement: the fenced bump of last_seq locks the row, so appends get gap-free numbers in commit order.
            let rows = try await self.client.execute(
                AppendEventStatement(jobID: lease.jobID, token: lease.token, now: ms, type: type, data: dataJSON), logger: self.logger)
            var sequence: Int64?
            for try await value in rows { sequence = value }
            guard let sequence else { throw KeelError.leaseLost }
            return sequence
        }
    }

    func succeed(_ lease: JobLease, resultJSON: String, timing: JobTiming) async throws -> Job {
        try await self.operation {
            let completion = (lease, resultJSON, timing.now.millisecondsSince1970, timing.expiry.millisecondsSince1970)
            guard let job = try await self.completions.submit(completion).get() else { throw KeelError.leaseLost }
            return job
        }
    }

    func fail(_ lease: JobLease, error: JobFailure, retryAt: Date?, timing: JobTiming) async throws -> Job {
        let errorJSON = try JobRowCoding.encode(error)
        let ms = timing.now.millisecondsSince1970
        return try await self.finish(lease) { connection in
            if let retryAt {
                let requeued = try await self.jobs(
                    connection,
                    """
                    UPDATE keel_jobs SET status = 'queued', error = \(errorJSON), run_at = \(retryAt.millisecondsSince1970), updated_at = \(ms),
                        lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
                    WHERE id = \(lease.jobID) AND lease_token = \(lease.token) AND status = 'running' AND attempts < max_attempts
                    RETURNING \(unescaped: Self.columns)
                    """
                )
                if let job = requeued.first { return job }
            }
            return try await self.jobs(
                connection,
                """
                UPDATE keel_jobs SET status = 'failed', error = \(errorJSON), finished_at = \(ms), updated_at = \(ms),
                    expires_at = \(timing.expiry.millisecondsSince1970), lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
                    last_seq = last_seq + 1
                WHERE id = \(lease.jobID) AND lease_token = \(lease.token) AND status = 'running'
                RETURNING \(unescaped: Self.columns)
                """
            ).first
        }
    }

    func acknowledgeCancel(_ lease: JobLease, timing: JobTiming) async throws -> Job {
        let ms = timing.now.millisecondsSince1970
        return try await self.finish(lease) { connection in
            try await self.jobs(
                connection,
                """
                UPDATE keel_jobs SET status = 'cancelled', finished_at = \(ms), updated_at = \(ms),
                    expires_at = \(timing.expiry.millisecondsSince1970), lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
                    last_seq = last_seq + 1
                WHERE id = \(lease.jobID) AND lease_token = \(lease.token) AND status = 'running'
                RETURNING \(unescaped: Self.columns)
                """
            ).first
        }
    }

    func release(_ lease: JobLease, now: Date) async throws {
        try await self.operation {
            let ms = now.millisecondsSince1970
            let rows = try await self.client.query(
                """
                UPDATE keel_jobs SET status = 'queued', attempts = GREATEST(attempts - 1, 0), run_at = \(ms), updated_at = \(ms),
                    lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
                WHERE id = \(lease.jobID) AND lease_token = \(lease.token) AND status = 'running' RETURNING type
                """,
                logger: self.logger
            )
            var type: String?
            for try await value in rows.decode(String.self) { type = value }
            guard let type else { throw KeelError.leaseLost }
            try await self.client.query("SELECT pg_notify(\(PostgresSchema.jobsChannel), \(type))", logger: self.logger)
        }
    }

    func cancel(id: String, timing: JobTiming) async throws -> Job? {
        try await self.transaction { connection -> Job? in
            guard let job = try await self.jobs(connection, "SELECT \(unescaped: Self.columns) FROM keel_jobs WHERE id = \(id) FOR UPDATE").first else {
                return nil
            }
            let ms = timing.now.millisecondsSince1970
            switch job.status {
            case .queued:
                try await self.markCancelled(connection, id: id, ms: ms, expiry: timing.expiry.millisecondsSince1970)
                return try await self.appendDone(connection, id: id, ms: ms)
            case .running:
                try await connection.query("UPDATE keel_jobs SET cancel_requested = TRUE, updated_at = \(ms) WHERE id = \(id)", logger: self.logger)
                // Its worker, on whichever instance, hears of it at commit.
                try await connection.query("SELECT pg_notify(\(PostgresSchema.cancelsChannel), \(id))", logger: self.logger)
                var flagged = job
                flagged.cancelRequested = true
                return flagged
            case .succeeded, .failed, .cancelled:
                return job
            }
        }
    }

    func rescueExpiredLeases(timing: JobTiming) async throws -> Int {
        try await self.transaction { connection in
            let ms = timing.now.millisecondsSince1970
            let lost = try JobRowCoding.encode(JobFailure.workerLost)
            let rows = try await connection.query(
                """
                SELECT id, attempts, max_attempts, type FROM keel_jobs
                WHERE status = 'running' AND lease_expires_at < \(ms) FOR UPDATE SKIP LOCKED
                """,
                logger: self.logger
            )
            var expired: [(String, Int32, Int32, String)] = []
            for try await row in rows.decode((String, Int32, Int32, String).self) { expired.append(row) }
            for (id, attempts, maxAttempts, type) in expired {
                if attempts < maxAttempts {
                    try await connection.query(
                        """
                        UPDATE keel_jobs SET status = 'queued', error = \(lost), run_at = \(ms), updated_at = \(ms),
                            lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
                        WHERE id = \(id)
                        """,
                        logger: self.logger
                    )
                    try await connection.query("SELECT pg_notify(\(PostgresSchema.jobsChannel), \(type))", logger: self.logger)
                } else {
                    try await self.markFailed(connection, id: id, errorJSON: lost, ms: ms, expiry: timing.expiry.millisecondsSince1970)
                    _ = try await self.appendDone(connection, id: id, ms: ms)
                }
            }
            return expired.count
        }
    }

    func purgeExpired(now: Date, limit: Int) async throws -> Int {
        try await self.transaction { connection in
            let rows = try await connection.query(
                """
                DELETE FROM keel_jobs WHERE id IN (
                    SELECT id FROM keel_jobs WHERE expires_at IS NOT NULL AND expires_at < \(now.millisecondsSince1970)
                    LIMIT \(limit) FOR UPDATE SKIP LOCKED
                ) RETURNING id
                """,
                logger: self.logger
            )
            var ids: [String] = []
            for try await id in rows.decode(String.self) { ids.append(id) }
            if !ids.isEmpty {
                try await connection.query("DELETE FROM keel_job_events WHERE job_id = ANY(\(ids))", logger: self.logger)
            }
            return ids.count
        }
    }

    func activeJobCount(sessionID: String) async throws -> Int {
        try await self.operation {
            let rows = try await self.client.query(
                "SELECT COUNT(*) FROM keel_jobs WHERE session_id = \(sessionID) AND status IN ('queued', 'running')", logger: self.logger)
            var count: Int64 = 0
            for try await value in rows.decode(Int64.self) { count = value }
            return Int(count)
        }
    }

    func queueDepth() async throws -> Int {
        try await self.operation {
            let rows = try await self.client.query("SELECT COUNT(*) FROM keel_jobs WHERE status = 'queued'", logger: self.logger)
            var count: Int64 = 0
            for try await value in rows.decode(Int64.self) { count = value }
            return Int(count)
        }
    }

    func events(jobID: String, after: Int64, limit: Int) async throws -> [JobEvent] {
        try await self.operation {
            let rows = try await self.client.query(
                "SELECT seq, type, data, created_at FROM keel_job_events WHERE job_id = \(jobID) AND seq > \(after) ORDER BY seq LIMIT \(limit)",
                logger: self.logger
            )
            var events: [JobEvent] = []
            for try await (sequence, type, data, created) in rows.decode((Int64, String, String, Int64).self) {
                events.append(JobEvent(jobID: jobID, sequence: sequence, type: type, dataJSON: data, createdAt: Date(millisecondsSince1970: created)))
            }
            return events
        }
    }

    func acquire(_ name: String, owner: String, duration: Duration, now: Date) async throws -> Bool {
        try await self.operation {
            let until = now.addingTimeInterval(duration.timeInterval).millisecondsSince1970
            let rows = try await self.client.query(
                """
                INSERT INTO keel_leases (name, owner, expires_at) VALUES (\(name), \(owner), \(until))
                ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
                WHERE keel_leases.owner = excluded.owner OR keel_leases.expires_at < \(now.millisecondsSince1970)
                RETURNING owner
                """,
                logger: self.logger
            )
            var holder: String?
            for try await value in rows.decode(String.self) { holder = value }
            return holder == owner
        }
    }

    // MARK: Shared statements

    /// Inserts a batch of new jobs. A request whose key an earlier request
    /// of the batch used gets that job (not created); nil for each whose
    /// key an earlier statement took.
    static func enqueue(_ requests: [(job: NewJob, now: Int64)], client: PostgresClient, logger: Logger) async throws -> [(job: Job, created: Bool)?] {
        var inserted: [String: Job] = [:]
        var byKey: [KeyedJob: Job] = [:]
        for try await job in try await client.execute(EnqueueJobsStatement(jobs: requests), logger: logger) {
            inserted[job.id] = job
            if let key = job.idempotencyKey { byKey[KeyedJob(sessionID: job.sessionID, key: key)] = job }
        }
        return requests.map { request in
            if let job = inserted[request.job.id] { return (job, true) }
            guard let key = request.job.idempotencyKey, let job = byKey[KeyedJob(sessionID: request.job.sessionID, key: key)] else { return nil }
            return (job, false)
        }
    }

    private struct KeyedJob: Hashable {
        var sessionID: String
        var key: String
    }

    /// Claims for a batch of workers, one statement per distinct list of
    /// types (a process's workers all share one); nil for each worker left
    /// without a due job. A statement that fails fails only its own requests.
    static func claim(_ requests: [ClaimRequest], client: PostgresClient, logger: Logger) async -> [Result<Job?, any Error>] {
        var replies = [Result<Job?, any Error>](repeating: .success(nil), count: requests.count)
        var groups: [[String]: [Int]] = [:]
        for (index, request) in requests.enumerated() { groups[request.types, default: []].append(index) }
        for (types, indices) in groups {
            var statement = ClaimJobsStatement(types: types)
            // In order of their times, as the statement wants them.
            let indices = indices.sorted { (requests[$0].now, $0) < (requests[$1].now, $1) }
            for index in indices {
                statement.owners.append(requests[index].owner)
                statement.tokens.append(requests[index].token)
                statement.leasesUntil.append(requests[index].leaseUntil)
                statement.claimedAt.append(requests[index].now)
                statement.dueBy = max(statement.dueBy, requests[index].now)
            }
            do {
                for try await (request, job) in try await client.execute(statement, logger: logger) {
                    guard indices.indices.contains(request - 1) else {
                        throw KeelError(.internalError, "a claim answered request \(request) of \(indices.count)")
                    }
                    replies[indices[request - 1]] = .success(job)
                }
            } catch {
                for index in indices { replies[index] = .failure(error) }
            }
        }
        return replies
    }

    /// Ends a batch of jobs in one transaction: the fenced updates, then
    /// the `done` events of those whose lease held; nil for the others. A
    /// transaction that fails fails only its own requests.
    static func succeed(_ requests: [Completion], client: PostgresClient, logger: Logger) async -> [Result<Job?, any Error>] {
        var replies = [Result<Job?, any Error>](repeating: .success(nil), count: requests.count)
        var remaining = Array(requests.indices)
        // A job is ended at most once per statement; a repeated id (which a
        // worker pool never sends) waits for the next round.
        while !remaining.isEmpty {
            var seen = Set<String>()
            var round: [Int] = []
            var later: [Int] = []
            for index in remaining {
                if seen.insert(requests[index].lease.jobID).inserted { round.append(index) } else { later.append(index) }
            }
            remaining = later
            do {
                let finished = try await client.withTransaction(logger: logger) { connection -> [String: Job] in
                    var jobs: [Job] = []
                    for try await job in try await connection.execute(SucceedJobsStatement(completions: round.map { requests[$0] }), logger: logger) {
                        jobs.append(job)
                    }
                    if !jobs.isEmpty {
                        for try await _ in try await connection.execute(InsertDoneEventsStatement(jobs: jobs), logger: logger) {}
                    }
                    return Dictionary(jobs.map { ($0.id, $0) }, uniquingKeysWith: { first, _ in first })
                }
                for index in round { replies[index] = .success(finished[requests[index].lease.jobID]) }
            } catch {
                for index in round { replies[index] = .failure(error) }
            }
        }
        return replies
    }

    // MARK: Helpers

    /// A worker's last write: `update` is a single UPDATE fenced by the lease
    /// that returns the row (or nothing once the lease is lost). A job that
    /// ended gets its `done` event (the UPDATE counted it in `last_seq`); one
    /// queued again for a retry is announced to idle workers.
    private func finish(_ lease: JobLease, _ update: (PostgresConnection) async throws -> Job?) async throws -> Job {
        try await self.transaction { connection in
            guard let job = try await update(connection) else { throw KeelError.leaseLost }
            if job.status.isTerminal {
                try await self.insertDone(connection, job)
            } else {
                try await connection.query("SELECT pg_notify(\(PostgresSchema.jobsChannel), \(job.type))", logger: self.logger)
            }
            return job
        }
    }

    /// Appends the `done` event of a job whose row already counts it in `last_seq`, and announces it.
    private func insertDone(_ connection: PostgresConnection, _ job: Job) async throws {
        for try await _ in try await connection.execute(InsertDoneEventsStatement(jobs: [job]), logger: self.logger) {}
    }

    private func appendDone(_ connection: PostgresConnection, id: String, ms: Int64) async throws -> Job {
        try await connection.query("UPDATE keel_jobs SET last_seq = last_seq + 1 WHERE id = \(id)", logger: self.logger)
        let job = try await self.jobs(connection, "SELECT \(unescaped: Self.columns) FROM keel_jobs WHERE id = \(id)").first!
        try await connection.query(
            """
            INSERT INTO keel_job_events (job_id, seq, type, data, created_at)
            VALUES (\(id), \(job.lastSequence), \(JobEventType.done), \(job.jsonRepresentation()), \(ms))
            """,
            logger: self.logger
        )
        try await connection.query("SELECT pg_notify(\(PostgresSchema.eventsChannel), \(id))", logger: self.logger)
        return job
    }

    private func markFailed(_ connection: PostgresConnection, id: String, errorJSON: String, ms: Int64, expiry: Int64) async throws {
        try await connection.query(
            """
            UPDATE keel_jobs SET status = 'failed', error = \(errorJSON), finished_at = \(ms), updated_at = \(ms), expires_at = \(expiry),
                lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
            WHERE id = \(id)
            """,
            logger: self.logger
        )
    }

    private func markCancelled(_ connection: PostgresConnection, id: String, ms: Int64, expiry: Int64) async throws {
        try await connection.query(
            """
            UPDATE keel_jobs SET status = 'cancelled', finished_at = \(ms), updated_at = \(ms), expires_at = \(expiry),
                lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
            WHERE id = \(id)
            """,
            logger: self.logger
        )
    }

    private func jobs(_ connection: PostgresConnection, _ query: PostgresQuery) async throws -> [Job] {
        try await Self.decode(connection.query(query, logger: self.logger))
    }

    private func jobs(_ client: PostgresClient, _ query: PostgresQuery) async throws -> [Job] {
        try await Self.decode(client.query(query, logger: self.logger))
    }

    private static func decode(_ rows: PostgresRowSequence) async throws -> [Job] {
        var jobs: [Job] = []
        for try await row in rows { jobs.append(try Self.job(from: row)) }
        return jobs
    }

    /// A job from a row whose first columns are ``columns``, in that order
    /// (a statement may add more after them). Read by position: opening a
    /// row for access by name builds a dictionary of its columns, which
    /// showed in profiles for rows every job goes through several times.
    static func job(from row: PostgresRow) throws -> Job {
        var cells = JobCells(row.makeIterator())
        return try Self.job(from: &cells)
    }

    /// The same, leaving `cells` at the first column after ``columns``.
    static func job(from cells: inout JobCells) throws -> Job {
        Job(
            id: try cells.next(String.self),
            sessionID: try cells.next(String.self),
            type: try cells.next(String.self),
            inputJSON: try cells.next(String.self),
            status: JobStatus(rawValue: try cells.next(String.self)) ?? .failed,
            progress: try JobRowCoding.decode(JobProgress.self, from: cells.next(String.self)) ?? JobProgress(),
            resultJSON: try cells.next(String?.self),
            error: try JobRowCoding.decode(JobFailure.self, from: cells.next(String?.self)),
            attempts: Int(try cells.next(Int32.self)),
            maxAttempts: Int(try cells.next(Int32.self)),
            idempotencyKey: try cells.next(String?.self),
            createdAt: try cells.date(),
            updatedAt: try cells.date(),
            runAt: try cells.date(),
            startedAt: try cells.optionalDate(),
            finishedAt: try cells.optionalDate(),
            expiresAt: try cells.optionalDate(),
            leaseOwner: try cells.next(String?.self),
            leaseExpiresAt: try cells.optionalDate(),
            cancelRequested: try cells.next(Bool.self),
            lastSequence: try cells.next(Int64.self)
        )
    }
}

/// The cells of a row, decoded one after another in column order.
struct JobCells {
    private var iterator: PostgresRow.Iterator

    init(_ iterator: PostgresRow.Iterator) {
        self.iterator = iterator
    }

    mutating func next<Value: PostgresDecodable>(_ type: Value.Type) throws -> Value {
        guard let cell = self.iterator.next() else {
            throw KeelError(.internalError, "a job row has fewer columns than PostgresJobQueue.columns")
        }
        return try cell.decode(Value.self)
    }

    mutating func optionalDate() throws -> Date? {
        try self.next(Int64?.self).map(Date.init(millisecondsSince1970:))
    }

    mutating func date() throws -> Date {
        guard let date = try self.optionalDate() else {
            throw KeelError(.internalError, "a job row lacks a time it always has")
        }
        return date
    }
}
