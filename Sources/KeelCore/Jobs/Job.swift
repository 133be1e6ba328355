import Foundation

/// The life of a job: `queued → running → succeeded | failed | cancelled`.
/// A failed attempt with attempts left goes back to `queued`.
public enum JobStatus: String, Sendable, CaseIterable, Codable {
    case queued
    case running
    case succeeded
    case failed
    case cancelled

    public var isTerminal: Bool {
        switch self {
        case .succeeded, .failed, .cancelled: true
        case .queued, .running: false
        }
    }
}

/// Where a running job says it is, readable from any instance.
public struct JobProgress: Sendable, Equatable, Codable {
    public var stage: String?
    /// 0…100.
    public var percent: Double?
    public var message: String?

    public init(stage: String? = nil, percent: Double? = nil, message: String? = nil) {
        self.stage = stage
        self.percent = percent
        self.message = message
    }
}

/// Why a job (or its latest attempt) failed.
public struct JobFailure: Sendable, Equatable, Codable {
    public var code: String
    public var message: String

    public init(code: String, message: String) {
        self.code = code
        self.message = message
    }
}

/// A unit of background work owned by a session, stored durably so any
/// instance can report on it and any worker can run it.
public struct Job: Sendable, Equatable {
    public var id: String
    public var sessionID: String
    public var type: String
    public var inputJSON: String
    public var status: JobStatus
    public var progress: JobProgress
    public var resultJSON: String?
    public var error: JobFailure?
    /// Attempts started so far (a released lease does not count).
    public var attempts: Int
    public var maxAttempts: Int
    public var idempotencyKey: String?
    public var createdAt: Date
    public var updatedAt: Date
    /// The earliest time a worker may claim it (later after a failed attempt).
    public var runAt: Date
    public var startedAt: Date?
    public var finishedAt: Date?
    /// After this instant a finished job and its events are gone.
    public var expiresAt: Date?
    public var leaseOwner: String?
    public var leaseExpiresAt: Date?
    public var cancelRequested: Bool
    /// The sequence number of the job's last event (0: none yet).
    public var lastSequence: Int64

    public init(
        id: String, sessionID: String, type: String, inputJSON: String, status: JobStatus = .queued,
        progress: JobProgress = JobProgress(), resultJSON: String? = nil, error: JobFailure? = nil, attempts: Int = 0,
        maxAttempts: Int, idempotencyKey: String? = nil, createdAt: Date, updatedAt: Date, runAt: Date,
        startedAt: Date? = nil, finishedAt: Date? = nil, expiresAt: Date? = nil, leaseOwner: String? = nil,
        leaseExpiresAt: Date? = nil, cancelRequested: Bool = false, lastSequence: Int64 = 0
    ) {
        self.id = id
        self.sessionID = sessionID
        self.type = type
        self.inputJSON = inputJSON
        self.status = status
        self.progress = progress
        self.resultJSON = resultJSON
        self.error = error
        self.attempts = attempts
        self.maxAttempts = maxAttempts
        self.idempotencyKey = idempotencyKey
        self.createdAt = createdAt
        self.updatedAt = updatedAt
        self.runAt = runAt
        self.startedAt = startedAt
        self.finishedAt = finishedAt
        self.expiresAt = expiresAt
        self.leaseOwner = leaseOwner
        self.leaseExpiresAt = leaseExpiresAt
        self.cancelRequested = cancelRequested
        self.lastSequence = lastSequence
    }

    /// Whether the job still exists for its owner at `now` (results expire).
    public func isVisible(at now: Date) -> Bool {
        guard let expiresAt else { return true }
        return now < expiresAt
    }
}

/// A worker's right to run a job: every write it makes carries the token,
/// and the store refuses writes once another lease replaced it.
public struct JobLease: Sendable, Equatable {
    public var jobID: String
    public var token: String
    public var owner: String

    public init(jobID: String, token: String, owner: String) {
        self.jobID = jobID
        self.token = token
        self.owner = owner
    }
}

/// What a worker gets from a claim.
public struct ClaimedJob: Sendable, Equatable {
    public var job: Job
    public var lease: JobLease

    public init(job: Job, lease: JobLease) {
        self.job = job
        self.lease = lease
    }
}

/// One entry of a job's append-only event log.
public struct JobEvent: Sendable, Equatable {
    public var jobID: String
    /// 1, 2, 3… per job, without gaps, assigned by the store.
    public var sequence: Int64
    public var type: String
    public var dataJSON: String
    public var createdAt: Date

    public init(jobID: String, sequence: Int64, type: String, dataJSON: String, createdAt: Date) {
        self.jobID = jobID
        self.sequence = sequence
        self.type = type
        self.dataJSON = dataJSON
        self.createdAt = createdAt
    }
}

/// Event types Keel itself writes.
public enum JobEventType {
    public static let progress = "progress"
    public static let token = "token"
    /// First event of a retried attempt: clients drop the partial output before it.
    public static let reset = "reset"
    /// Exactly one per job, last: its data is the final job.
    public static let done = "done"
}
