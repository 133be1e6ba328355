import KeelCore
import PostgresNIO

// The statements workers run for every job, prepared once per connection so
// PostgreSQL parses and plans them once rather than on every call. Enqueues,
// claims and completions take arrays, one element per request: under load,
// the requests that wait for a statement share the next one
// (``QueryBatcher``), so a burst costs a few round trips and commits
// instead of one per job.
/// Hands the oldest due jobs of the given types to the workers asking, one
/// job each at most. The requests come in order of their times (earliest
/// first). The jobs due by the latest request's time are locked and matched
/// in order to the latest requests (oldest job to the earliest of those), so
/// when jobs are fewer than requests, the requests made after a job became
/// due get it; a pair whose job was not yet due when its request was made
/// is left out, and that job stays queued. Every row comes back with the
/// number of its request (1-based, the order of the arrays).
struct ClaimJobsStatement: PostgresPreparedStatement {
    /// One statement, so one round trip and atomic without `BEGIN`: the
    /// claims, and for each job that already has events (a retry) its
    /// `reset` event, counted in `last_seq` and announced. A request's
    /// lease is read from the arrays at its place rather than joined from
    /// them: the planner, which cannot know how many jobs a claim locks,
    /// chose a nested loop for that join, quadratic in the batch.
    static let name = "keel_claim_jobs"
    static let sql = """
        WITH due AS (
            SELECT id AS due_id, run_at AS due_at,
                (row_number() OVER (ORDER BY run_at, created_at) + cardinality($1::text[]) - count(*) OVER ())::int4 AS place FROM (
                SELECT id, run_at, created_at FROM keel_jobs WHERE status = 'queued' AND run_at <= $5 AND type = ANY($6)
                ORDER BY run_at, created_at LIMIT cardinality($1::text[]) FOR UPDATE SKIP LOCKED
            ) AS picked
        ), claimed AS (
            UPDATE keel_jobs SET status = 'running', attempts = attempts + 1, lease_owner = ($1::text[])[place],
                lease_token = ($2::text[])[place], lease_expires_at = ($3::int8[])[place],
                started_at = COALESCE(started_at, ($4::int8[])[place]), updated_at = ($4::int8[])[place], cancel_requested = FALSE,
                last_seq = CASE WHEN last_seq > 0 THEN last_seq + 1 ELSE 0 END
            FROM due
            WHERE keel_jobs.id = due.due_id AND due.due_at <= ($4::int8[])[place]
            RETURNING \(PostgresJobQueue.columns), place AS request
        ), reset AS (
            INSERT INTO keel_job_events (job_id, seq, type, data, created_at)
            SELECT id, last_seq, '\(JobEventType.reset)', '{"attempt":' || attempts || '}', updated_at FROM claimed WHERE last_seq > 1
            RETURNING job_id
        )
        SELECT claimed.*,
            (SELECT count(*) FROM (SELECT pg_notify('\(PostgresSchema.eventsChannel)', reset.job_id) FROM reset) AS notify) AS announced
        FROM claimed
        """
    static let bindingDataTypes: [PostgresDataType] = [.textArray, .textArray, .int8Array, .int8Array, .int8, .textArray]
    typealias Row = (request: Int, job: Job)

    var owners: [String] = []
    var tokens: [String] = []
    var leasesUntil: [Int64] = []
    var claimedAt: [Int64] = []
    /// The latest request's time: jobs due by then are locked and matched.
    var dueBy: Int64 = .min
    var types: [String]

    func makeBindings() throws -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 6)
        bindings.append(self.owners)
        bindings.append(self.tokens)
        bindings.append(self.leasesUntil)
        bindings.append(self.claimedAt)
        bindings.append(self.dueBy)
        bindings.append(self.types)
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> (request: Int, job: Job) {
        var cells = JobCells(row.makeIterator())
        let job = try PostgresJobQueue.job(from: &cells)
        return (Int(try cells.next(Int32.self)), job)
    }
}

/// Appends an event with the lease as fence, in one statement, and announces it.
struct AppendEventStatement: PostgresPreparedStatement {
    static let name = "keel_append_event"
    static let sql = """
        WITH bumped AS (
            UPDATE keel_jobs SET last_seq = last_seq + 1, updated_at = $3
            WHERE id = $1 AND lease_token = $2 AND status = 'running'
            RETURNING id, last_seq
        ), inserted AS (
            INSERT INTO keel_job_events (job_id, seq, type, data, created_at)
            SELECT id, last_seq, $4, $5, $3 FROM bumped
            RETURNING job_id, seq
        )
        SELECT inserted.seq, announced.count FROM inserted
        CROSS JOIN LATERAL (SELECT count(*) FROM (SELECT pg_notify('\(PostgresSchema.eventsChannel)', inserted.job_id)) AS notify) AS announced
        """
    static let bindingDataTypes: [PostgresDataType] = [.text, .text, .int8, .text, .text]
    typealias Row = Int64

    var jobID: String
    var token: String
    var now: Int64
    var type: String
    var data: String

    func makeBindings() throws -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 5)
        bindings.append(self.jobID)
        bindings.append(self.token)
        bindings.append(self.now)
        bindings.append(self.type)
        bindings.append(self.data)
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> Int64 { try row.decode((Int64, Int64).self).0 }
}

/// Stores new jobs and announces them, in one statement. A job whose
/// session already used its idempotency key (in an earlier statement or
/// earlier in this one) is not inserted and has no row. Rows go in ordered
/// by key, so two statements waiting on each other's uncommitted keys
/// (`ON CONFLICT` waits for them) always wait in the same order and cannot
/// deadlock; within one key the request that came first wins. Each type is
/// announced once: `type` for one new job, `type<TAB>count` for more, so a
/// listening instance wakes that many idle workers.
struct EnqueueJobsStatement: PostgresPreparedStatement {
    static let name = "keel_enqueue_jobs"
    static let sql = """
        WITH inserted AS (
            INSERT INTO keel_jobs (id, session_id, type, input, status, progress, attempts, max_attempts,
                idempotency_key, created_at, updated_at, run_at)
            SELECT id, session_id, type, input, 'queued', '{}', 0, max_attempts,
                CASE WHEN has_key THEN idempotency_key END, created, created, created
            FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int4[], $6::bool[], $7::text[], $8::int8[])
                WITH ORDINALITY AS new(id, session_id, type, input, max_attempts, has_key, idempotency_key, created, position)
            ORDER BY session_id, idempotency_key, position
            ON CONFLICT (session_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
            RETURNING \(PostgresJobQueue.columns)
        )
        SELECT inserted.*,
            (SELECT count(*) FROM (SELECT pg_notify('\(PostgresSchema.jobsChannel)',
                CASE WHEN types.jobs = 1 THEN types.type ELSE types.type || E'\\t' || types.jobs END)
                FROM (SELECT type, count(*) AS jobs FROM inserted GROUP BY type) AS types) AS notify) AS announced
        FROM inserted
        """
    static let bindingDataTypes: [PostgresDataType] = [
        .textArray, .textArray, .textArray, .textArray, .int4Array, .boolArray, .textArray, .int8Array,
    ]
    typealias Row = Job

    var jobs: [(job: NewJob, now: Int64)]

    func makeBindings() throws -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 8)
        bindings.append(self.jobs.map(\.job.id))
        bindings.append(self.jobs.map(\.job.sessionID))
        bindings.append(self.jobs.map(\.job.type))
        bindings.append(self.jobs.map(\.job.inputJSON))
        bindings.append(self.jobs.map { Int32(clamping: $0.job.maxAttempts) })
        bindings.append(self.jobs.map { $0.job.idempotencyKey != nil })
        bindings.append(self.jobs.map { $0.job.idempotencyKey ?? "" })
        bindings.append(self.jobs.map(\.now))
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> Job { try PostgresJobQueue.job(from: row) }
}

/// Ends jobs successfully whose leases are still current, counting each
/// one's `done` event in `last_seq`; a job whose lease was lost has no row.
struct SucceedJobsStatement: PostgresPreparedStatement {
    static let name = "keel_succeed_jobs"
    static let sql = """
        UPDATE keel_jobs SET status = 'succeeded', result = finished.result_json, error = NULL, finished_at = finished.at,
            updated_at = finished.at, expires_at = finished.expiry, lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
            last_seq = last_seq + 1
        FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[], $5::int8[]) AS finished(job_id, token, result_json, at, expiry)
        WHERE keel_jobs.id = finished.job_id AND keel_jobs.lease_token = finished.token AND keel_jobs.status = 'running'
        RETURNING \(PostgresJobQueue.columns)
        """
    static let bindingDataTypes: [PostgresDataType] = [.textArray, .textArray, .textArray, .int8Array, .int8Array]
    typealias Row = Job

    /// Distinct job ids: a job is ended at most once per statement.
    var completions: [(lease: JobLease, resultJSON: String, now: Int64, expiry: Int64)]

    func makeBindings() throws -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 5)
        bindings.append(self.completions.map(\.lease.jobID))
        bindings.append(self.completions.map(\.lease.token))
        bindings.append(self.completions.map(\.resultJSON))
        bindings.append(self.completions.map(\.now))
        bindings.append(self.completions.map(\.expiry))
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> Job { try PostgresJobQueue.job(from: row) }
}

/// The `done` events of jobs whose rows already count them in `last_seq`, announced.
struct InsertDoneEventsStatement: PostgresPreparedStatement {
    static let name = "keel_insert_done_events"
    static let sql = """
        WITH inserted AS (
            INSERT INTO keel_job_events (job_id, seq, type, data, created_at)
            SELECT job_id, seq, '\(JobEventType.done)', data, at
            FROM unnest($1::text[], $2::int8[], $3::text[], $4::int8[]) AS done(job_id, seq, data, at)
            RETURNING job_id
        )
        SELECT count(*) FROM (SELECT pg_notify('\(PostgresSchema.eventsChannel)', inserted.job_id) FROM inserted) AS notify
        """
    static let bindingDataTypes: [PostgresDataType] = [.textArray, .int8Array, .textArray, .int8Array]
    typealias Row = Int64

    /// Ended jobs, each stamped with its last update (when it ended).
    var jobs: [Job]

    func makeBindings() throws -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 4)
        bindings.append(self.jobs.map(\.id))
        bindings.append(self.jobs.map(\.lastSequence))
        bindings.append(self.jobs.map { $0.jsonRepresentation() })
        bindings.append(self.jobs.map(\.updatedAt.millisecondsSince1970))
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> Int64 { try row.decode(Int64.self) }
}
