import Foundation

/// What a client asks to run.
public struct NewJob: Sendable, Equatable {
    public var id: String
    public var sessionID: String
    public var type: String
    public var inputJSON: String
    public var maxAttempts: Int
    public var idempotencyKey: String?

    public init(id: String = Identifiers.random(byteCount: 16), sessionID: String, type: String, inputJSON: String, maxAttempts: Int, idempotencyKey: String? = nil) {
        self.id = id
        self.sessionID = sessionID
        self.type = type
        self.inputJSON = inputJSON
        self.maxAttempts = maxAttempts
        self.idempotencyKey = idempotencyKey
    }
}

/// One page of a session's jobs, newest first.
public struct JobPage: Sendable, Equatable {
    public var jobs: [Job]
    /// Pass back to get the next page; `nil` on the last page.
    public var nextCursor: String?
}

/// What a heartbeat learns.
public enum HeartbeatReply: Sendable, Equatable {
    /// The lease is extended; `cancelRequested` tells the worker to stop.
    case active(cancelRequested: Bool)
    /// Another worker owns the job now, or it ended: stop at once, write nothing.
    case lost
}

/// How long finished jobs live, and how retries back off.
public struct JobTiming: Sendable, Equatable {
    public var now: Date
    /// How long a finished job and its events stay readable.
    public var resultTTL: Duration

    public init(now: Date, resultTTL: Duration) {
        self.now = now
        self.resultTTL = resultTTL
    }

    public var expiry: Date { self.now.addingTimeInterval(self.resultTTL.timeInterval) }
}

/// Durable jobs with leases, shared by every worker of every instance.
///
/// Every write a worker makes carries its ``JobLease``; once the lease has
/// expired and been rescued (or the job ended), those writes throw
/// ``KeelError/Code/leaseLost`` and change nothing.
public protocol JobQueue: Sendable {
    /// Stores a new job, or, when the session already used this idempotency
    /// key, returns that job with `created == false` (even under a race).
    func enqueue(_ job: NewJob, now: Date) async throws -> (job: Job, created: Bool)

    /// The job, whoever owns it; `nil` when there is none.
    func job(id: String) async throws -> Job?

    /// A session's jobs, newest first, optionally of one status.
    func jobs(sessionID: String, status: JobStatus?, limit: Int, cursor: String?, now: Date) async throws -> JobPage

    /// Hands the oldest due job of one of `types` to `owner`, in one
    /// transaction: `running`, one more attempt, a fresh lease. A job that
    /// already has events gets a `reset` event first.
    func claim(owner: String, types: [String], leaseDuration: Duration, now: Date) async throws -> ClaimedJob?

    /// Extends the lease; says whether cancellation was requested.
    func heartbeat(_ lease: JobLease, leaseDuration: Duration, now: Date) async throws -> HeartbeatReply

    func setProgress(_ progress: JobProgress, lease: JobLease, now: Date) async throws

    /// Appends an event to the job's log; returns its sequence number.
    @discardableResult
    func appendEvent(type: String, dataJSON: String, lease: JobLease, now: Date) async throws -> Int64

    /// Ends the job successfully and appends its `done` event.
    @discardableResult
    func succeed(_ lease: JobLease, resultJSON: String, timing: JobTiming) async throws -> Job

    /// Records a failed attempt: back to `queued` until `retryAt` when given
    /// and attempts remain, else `failed` with a `done` event.
    @discardableResult
    func fail(_ lease: JobLease, error: JobFailure, retryAt: Date?, timing: JobTiming) async throws -> Job

    /// The worker stopped because cancellation was requested: `cancelled`, `done` event.
    @discardableResult
    func acknowledgeCancel(_ lease: JobLease, timing: JobTiming) async throws -> Job

    /// Gives the job back without counting the attempt (shutdown).
    func release(_ lease: JobLease, now: Date) async throws

    /// A queued job is cancelled at once (with its `done` event); a running
    /// one is flagged for its worker, which reads the flag at its next heartbeat (or at once when told by the change feed). `nil` when no such job.
    func cancel(id: String, timing: JobTiming) async throws -> Job?

    /// Jobs whose lease expired (their worker died) go back to the queue, or
    /// fail when no attempts remain. Returns how many were rescued.
    func rescueExpiredLeases(timing: JobTiming) async throws -> Int

    /// Deletes up to `limit` jobs whose results expired, with their events.
    func purgeExpired(now: Date, limit: Int) async throws -> Int

    /// Jobs waiting to run.
    func queueDepth() async throws -> Int

    /// How many of the session's jobs are queued or running (for the per-session quota).
    func activeJobCount(sessionID: String) async throws -> Int
}

/// A job's append-only log of events, read by any instance.
public protocol EventLog: Sendable {
    /// Events with sequence numbers above `after`, oldest first.
    func events(jobID: String, after: Int64, limit: Int) async throws -> [JobEvent]
}

extension EventLog {
    /// The job's whole log, oldest first, read a thousand events at a time.
    public func allEvents(jobID: String) async throws -> [JobEvent] {
        var all: [JobEvent] = []
        var after: Int64 = 0
        while true {
            let page = try await self.events(jobID: jobID, after: after, limit: 1000)
            all += page
            guard page.count == 1000, let last = page.last else { return all }
            after = last.sequence
        }
    }
}

/// Named, expiring leases for chores that one instance at a time should do.
public protocol LeaderLease: Sendable {
    /// Takes or renews the lease `name` for `owner` until `now + duration`;
    /// returns whether `owner` holds it.
    func acquire(_ name: String, owner: String, duration: Duration, now: Date) async throws -> Bool
}

extension KeelError {
    public static let leaseLost = KeelError(
        .leaseLost,
        "This worker no longer holds the job's lease.",
        hint: "Another worker took over after the lease expired; stop without writing."
    )
}
