import KeelCore
import PostgresNIO

// The statements workers run for every job, prepared once per connection so
// PostgreSQL parses and plans them once rather than on every call.

/// Hands the oldest due job of the given types to a worker.
struct ClaimJobStatement: PostgresPreparedStatement {
    /// One statement, so one round trip and atomic without `BEGIN`: the
    /// claim, and for a job that already has events (a retry) its `reset`
    /// event, counted in `last_seq` and announced.
    static let sql = """
        WITH claimed AS (
            UPDATE keel_jobs SET status = 'running', attempts = attempts + 1, lease_owner = $1, lease_token = $2,
                lease_expires_at = $3, started_at = COALESCE(started_at, $4), updated_at = $4, cancel_requested = FALSE,
                last_seq = CASE WHEN last_seq > 0 THEN last_seq + 1 ELSE 0 END
            WHERE id = (
                SELECT id FROM keel_jobs WHERE status = 'queued' AND run_at <= $4 AND type = ANY($5)
                ORDER BY run_at, created_at LIMIT 1 FOR UPDATE SKIP LOCKED
            )
            RETURNING \(PostgresJobQueue.columns)
        ), reset AS (
            INSERT INTO keel_job_events (job_id, seq, type, data, created_at)
            SELECT id, last_seq, '\(JobEventType.reset)', '{"attempt":' || attempts || '}', $4 FROM claimed WHERE last_seq > 1
            RETURNING job_id
        )
        SELECT claimed.*,
            (SELECT count(*) FROM (SELECT pg_notify('\(PostgresSchema.eventsChannel)', reset.job_id) FROM reset) AS notify) AS announced
        FROM claimed
        """
    static let bindingDataTypes: [PostgresDataType] = [.text, .text, .int8, .int8, .textArray]
    typealias Row = Job

    var owner: String
    var token: String
    var leaseUntil: Int64
    var now: Int64
    var types: [String]

    func makeBindings() throws -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 5)
        bindings.append(self.owner)
        bindings.append(self.token)
        bindings.append(self.leaseUntil)
        bindings.append(self.now)
        bindings.append(self.types)
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> Job { try PostgresJobQueue.job(from: row) }
}

/// Appends an event with the lease as fence, in one statement, and announces it.
struct AppendEventStatement: PostgresPreparedStatement {
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

/// Stores a new job and announces it, in one statement; no row when the
/// session already used the idempotency key.
struct EnqueueJobStatement: PostgresPreparedStatement {
    static let sql = """
        WITH inserted AS (
            INSERT INTO keel_jobs (id, session_id, type, input, status, progress, attempts, max_attempts,
                idempotency_key, created_at, updated_at, run_at)
            VALUES ($1, $2, $3, $4, 'queued', '{}', 0, $5, $6, $7, $7, $7)
            ON CONFLICT (session_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
            RETURNING \(PostgresJobQueue.columns)
        )
        SELECT inserted.*, announced.count FROM inserted
        CROSS JOIN LATERAL (SELECT count(*) FROM (SELECT pg_notify('\(PostgresSchema.jobsChannel)', inserted.type)) AS notify) AS announced
        """
    static let bindingDataTypes: [PostgresDataType] = [.text, .text, .text, .text, .int4, .text, .int8]
    typealias Row = Job

    var job: NewJob
    var now: Int64

    func makeBindings() throws -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 7)
        bindings.append(self.job.id)
        bindings.append(self.job.sessionID)
        bindings.append(self.job.type)
        bindings.append(self.job.inputJSON)
        bindings.append(Int32(clamping: self.job.maxAttempts))
        bindings.append(self.job.idempotencyKey)
        bindings.append(self.now)
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> Job { try PostgresJobQueue.job(from: row) }
}

/// Ends a job successfully if the lease is still current, counting its `done` event in `last_seq`.
struct SucceedJobStatement: PostgresPreparedStatement {
    static let sql = """
        UPDATE keel_jobs SET status = 'succeeded', result = $3, error = NULL, finished_at = $4, updated_at = $4,
            expires_at = $5, lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, last_seq = last_seq + 1
        WHERE id = $1 AND lease_token = $2 AND status = 'running'
        RETURNING \(PostgresJobQueue.columns)
        """
    static let bindingDataTypes: [PostgresDataType] = [.text, .text, .text, .int8, .int8]
    typealias Row = Job

    var lease: JobLease
    var resultJSON: String
    var now: Int64
    var expiry: Int64

    func makeBindings() throws -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 5)
        bindings.append(self.lease.jobID)
        bindings.append(self.lease.token)
        bindings.append(self.resultJSON)
        bindings.append(self.now)
        bindings.append(self.expiry)
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> Job { try PostgresJobQueue.job(from: row) }
}

/// The `done` event of a job whose row already counts it in `last_seq`, announced.
struct InsertDoneStatement: PostgresPreparedStatement {
    static let sql = """
        WITH inserted AS (
            INSERT INTO keel_job_events (job_id, seq, type, data, created_at)
            VALUES ($1, $2, '\(JobEventType.done)', $3, $4)
            RETURNING job_id
        )
        SELECT count(*) FROM inserted, LATERAL (SELECT pg_notify('\(PostgresSchema.eventsChannel)', inserted.job_id)) AS notify
        """
    static let bindingDataTypes: [PostgresDataType] = [.text, .int8, .text, .int8]
    typealias Row = Int64

    var jobID: String
    var sequence: Int64
    var data: String
    var now: Int64

    func makeBindings() throws -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 4)
        bindings.append(self.jobID)
        bindings.append(self.sequence)
        bindings.append(self.data)
        bindings.append(self.now)
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> Int64 { try row.decode(Int64.self) }
}
