import KeelCore
import PostgresNIO

// The statements workers run for every job, prepared once per connection so
// PostgreSQL parses and plans them once rather than on every call.

/// Hands the oldest due job of the given types to a worker.
struct ClaimJobStatement: PostgresPreparedStatement {
    static let sql = """
        UPDATE keel_jobs SET status = 'running', attempts = attempts + 1, lease_owner = $1, lease_token = $2,
            lease_expires_at = $3, started_at = COALESCE(started_at, $4), updated_at = $4, cancel_requested = FALSE
        WHERE id = (
            SELECT id FROM keel_jobs WHERE status = 'queued' AND run_at <= $4 AND type = ANY($5)
            ORDER BY run_at, created_at LIMIT 1 FOR UPDATE SKIP LOCKED
        )
        RETURNING \(PostgresJobQueue.columns)
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
