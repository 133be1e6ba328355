import Foundation
import KeelCore
import Synchronization

/// Runs one type of job. Register handlers in a ``JobRegistry``; the API
/// refuses job types nobody registered, and workers run each claimed job
/// with the handler of its type.
///
/// A handler must assume it can be stopped at any moment (the process dies,
/// the lease is lost) and run again from the start on another worker: Keel
/// appends a `reset` event before a retried attempt so clients drop the
/// partial output of the dead one.
public protocol JobHandler: Sendable {
    /// The type clients name in `POST /api/jobs`, such as `demo.generate`.
    var type: String { get }

    /// Checks the input when the job is created, so bad input is a 400 at
    /// once rather than a failed job later. Returns the input to store
    /// (normalized, defaults filled in). Throw ``KeelError`` with
    /// ``KeelError/Code/invalidInput`` and a hint naming the rule.
    func validate(_ input: JSONValue) throws -> JSONValue

    /// Runs one attempt and returns the job's result. Throw
    /// ``JobHandlerFailure`` (or any error) to fail the attempt; it is
    /// retried with backoff while attempts remain and the failure is
    /// retryable. Cancellation (the client cancelled the job, the lease was
    /// lost, the process drains) arrives as task cancellation.
    func run(_ job: JobContext) async throws -> JSONValue

    /// Which of a process's workers run this type (``JobLane/general`` unless
    /// the handler says otherwise).
    var lane: JobLane { get }
}

/// The two kinds of worker in a process. A job that spends its life waiting
/// on a model's answer (a chat reply, an analysis, an OpenAI response) runs
/// in the `model` lane, where up to `--model-workers` run at once beside the
/// `--workers` that run everything else: a hundred streaming answers cost
/// little CPU but would otherwise hold every worker, and an upload's
/// ingestion would wait behind them.
public enum JobLane: String, Sendable {
    case general
    case model
}

extension JobHandler {
    public var lane: JobLane { .general }
}

/// A failed attempt, as the client will see it in the job's `error`.
public struct JobHandlerFailure: Error, Sendable, Equatable {
    public var code: String
    public var message: String
    /// `false` fails the job at once, whatever attempts remain.
    public var retryable: Bool

    public init(code: String, message: String, retryable: Bool = true) {
        self.code = code
        self.message = message
        self.retryable = retryable
    }
}

/// What a running handler knows about its job, and how it reports: every
/// write carries the worker's lease, so a worker that lost its job (paused,
/// partitioned, presumed dead) gets ``KeelError/Code/leaseLost`` instead of
/// overwriting its successor.
public struct JobContext: Sendable {
    public let id: String
    /// The session that created the job: a handler checks that what the
    /// input names (an upload, a document) belongs to it.
    public let sessionID: String
    public let type: String
    public let input: JSONValue
    /// 1 for the first attempt.
    public let attempt: Int
    public let maxAttempts: Int
    let lease: JobLease
    let queue: any JobQueue
    let log: any EventLog
    let hub: ChangeHub
    let clock: any KeelClock
    let events: EventBudget

    /// Appends an event of any type to the job's log (and wakes its streams).
    /// Past the deployment's `--job-max-events` it throws a
    /// ``JobHandlerFailure`` `too_many_events` that fails the job.
    @discardableResult
    public func emit(_ type: String, _ data: JSONValue) async throws -> Int64 {
        try self.events.check()
        let sequence = try await self.queue.appendEvent(type: type, dataJSON: data.serialized(), lease: self.lease, now: self.clock.now())
        self.events.record(sequence)
        self.hub.publish([.jobEvents(jobID: self.id)])
        return sequence
    }

    /// Streams a piece of output: a `token` event `{"text": …}`.
    @discardableResult
    public func token(_ text: String) async throws -> Int64 {
        try await self.emit(JobEventType.token, .object(["text": .string(text)]))
    }

    /// Records where the job is (readable from any instance in the job's
    /// `progress`) and appends a `progress` event.
    public func progress(stage: String? = nil, percent: Double? = nil, message: String? = nil) async throws {
        let progress = JobProgress(stage: stage, percent: percent.map { min(100, max(0, $0)) }, message: message)
        try await self.queue.setProgress(progress, lease: self.lease, now: self.clock.now())
        var data: [String: JSONValue] = [:]
        if let stage = progress.stage { data["stage"] = .string(stage) }
        if let percent = progress.percent { data["percent"] = .double(percent) }
        if let message = progress.message { data["message"] = .string(message) }
        try await self.emit(JobEventType.progress, .object(data))
    }
}

extension JobContext {
    /// The job's log so far, oldest first: on a retried attempt, what the
    /// earlier attempts wrote (and every client has been sent). A handler
    /// continues from it rather than starting over.
    public func loggedEvents() async throws -> [JobEvent] {
        try await self.log.allEvents(jobID: self.id)
    }

    /// Whether a client asked to cancel the job (as opposed to the lease
    /// being lost or the process draining, which also cancel the handler's
    /// task).
    public func cancelRequested() async -> Bool {
        (try? await self.queue.job(id: self.id))?.cancelRequested ?? false
    }
}

/// The job types this deployment runs, by name.
public struct JobRegistry: Sendable {
    private var handlers: [String: any JobHandler] = [:]

    public init(_ handlers: [any JobHandler] = []) {
        for handler in handlers { self.register(handler) }
    }

    /// No types of the application's own: `KeelApplication.build` adds
    /// Keel's `keel.probe` and `upload.digest` always and `demo.generate`
    /// with `--demo-jobs`.
    public static let builtIn = JobRegistry()

    /// `base` plus Keel's own types as `configuration` asks.
    static func withKeelTypes(_ base: JobRegistry, demo: Bool, store: any KeelStore, blobs: any BlobStore) -> JobRegistry {
        var registry = base
        registry.register(UploadDigestJob(store: store.uploads, blobs: blobs))
        if registry.handler(for: ProbeJobHandler.type) == nil { registry.register(ProbeJobHandler()) }
        if demo, registry.handler(for: DemoGenerateHandler.typeName) == nil { registry.register(DemoGenerateHandler()) }
        return registry
    }

    public mutating func register(_ handler: any JobHandler) {
        precondition(!handler.type.isEmpty, "a job type needs a name")
        // PostgreSQL announces new jobs as `type<TAB>count`.
        precondition(!handler.type.contains("\t"), "a job type's name has no tab")
        self.handlers[handler.type] = handler
    }

    public func handler(for type: String) -> (any JobHandler)? { self.handlers[type] }

    public var types: [String] { self.handlers.keys.sorted() }
}

/// How many events a job may still append: the log's length is known from
/// each append's sequence number, so the check costs no store read.
final class EventBudget: Sendable {
    let limit: Int64
    private let last: Atomic<Int64>

    init(limit: Int, lastSequence: Int64) {
        self.limit = Int64(limit)
        self.last = Atomic(lastSequence)
    }

    func check() throws {
        // One place is kept for the terminal `done` event.
        guard self.last.load(ordering: .relaxed) < self.limit - 1 else {
            throw JobHandlerFailure(
                code: "too_many_events",
                message: "The job wrote \(self.limit - 1) events, the most this deployment allows (--job-max-events).",
                retryable: false
            )
        }
    }

    func record(_ sequence: Int64) {
        self.last.store(sequence, ordering: .relaxed)
    }
}
