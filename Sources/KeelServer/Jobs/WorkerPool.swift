import Foundation
import KeelCore
import Logging
import ServiceLifecycle
import Synchronization

/// The workers of one process: each claims a due job, runs its handler
/// while heartbeating the lease, and records the outcome with the lease
/// token. Idle workers sleep until a change wakes them (this process's own
/// enqueues at once; other processes' through the store's change feed), or
/// at the latest after the poll interval. A ready job wakes one idle worker,
/// and a worker that claims a job wakes the next idle one, so a burst is
/// picked up as fast as workers are free without every enqueue making every
/// worker try a claim (a write transaction).
///
/// Jobs of the ``JobLane/model`` lane (they wait on a model for seconds or
/// minutes) are claimed by one more loop, the model lane, which runs up to
/// `modelWorkers` of them at once, each in its own task: one claimer and one
/// poll for the lane however large it is, and a hundred streaming answers
/// never hold the `count` workers that run everything else. With
/// `modelWorkers` 0 the workers run every type.
///
/// Drain: once ``beginDrain(releaseAfter:)`` is called no worker claims
/// again; jobs still running when `releaseAfter` has passed are stopped and
/// their leases released without counting the attempt, so another instance
/// runs them at once.
public final class WorkerPool: Service, Sendable {
    /// The general workers (each runs one job at a time).
    let count: Int
    /// The model lane's capacity (0 when the workers run every type, or
    /// when this process runs no jobs).
    let modelWorkers: Int
    /// What the general workers claim, and what the model lane claims.
    let generalTypes: [String]
    let modelTypes: [String]
    let instanceID: String
    let registry: JobRegistry
    let queue: any JobQueue
    private let log: any EventLog
    let hub: ChangeHub
    let settings: JobSettings
    let clock: any KeelClock
    let metrics: JobMetrics
    let logger: Logger

    private let draining = Atomic<Bool>(false)
    private let releasing = Atomic<Bool>(false)
    private let drainSignal = WakeSignal()
    /// The jobs this pool is running, each with the signal its worker waits on.
    private let running = Mutex<[ObjectIdentifier: RunningJob]>([:])
    private let releaseAfter = Mutex<Duration>(.zero)

    init(
        count: Int, modelWorkers: Int = 0, instanceID: String, registry: JobRegistry, queue: any JobQueue, log: any EventLog, hub: ChangeHub,
        settings: JobSettings, clock: any KeelClock, metrics: JobMetrics, logger: Logger
    ) {
        self.log = log
        self.count = count
        // No lane when this process runs no jobs, when --model-workers is 0, or when no type is the lane's.
        let laneTypes = registry.types.filter { registry.handler(for: $0)?.lane == .model }
        let lane = count > 0 && modelWorkers > 0 && !laneTypes.isEmpty
        self.modelWorkers = lane ? modelWorkers : 0
        self.modelTypes = lane ? laneTypes : []
        self.generalTypes = lane ? registry.types.filter { !laneTypes.contains($0) } : registry.types
        self.instanceID = instanceID
        self.registry = registry
        self.queue = queue
        self.hub = hub
        self.settings = settings
        self.clock = clock
        self.metrics = metrics
        self.logger = logger
    }

    /// Stop claiming now; release the leases of jobs still running after `releaseAfter`.
    public func beginDrain(releaseAfter: Duration) {
        self.releaseAfter.withLock { $0 = releaseAfter }
        guard !self.draining.exchange(true, ordering: .relaxed) else { return }
        self.drainSignal.fire()
        self.hub.wakeWorkers()
    }

    var isDraining: Bool { self.draining.load(ordering: .relaxed) }

    public func run() async {
        await self.runWorkers()
        // A service group wants each service to end only when asked to, in order.
        try? await gracefulShutdown()
    }

    /// Runs the workers until they have drained (or the task is cancelled).
    func runWorkers() async {
        guard self.count > 0 else { return }
        self.logger.info(
            "workers started",
            metadata: [
                "keel.workers": "\(self.count)", "keel.job_types": "\(self.generalTypes)", "keel.model_workers": "\(self.modelWorkers)",
                "keel.model_job_types": "\(self.modelTypes)",
            ])
        await withTaskGroup(of: Bool.self) { group in
            for index in 0..<self.count {
                group.addTask {
                    await self.work(index: index)
                    return true
                }
            }
            if self.modelWorkers > 0 {
                group.addTask {
                    await self.runModelLane()
                    return true
                }
            }
            group.addTask {
                await self.beatLeases()
                return false
            }
            group.addTask {
                // Waits for the drain, then for its deadline, then releases.
                while !self.isDraining {
                    _ = await self.drainSignal.wait(timeout: .seconds(3600))
                    if Task.isCancelled { return false }
                }
                try? await Task.sleep(for: self.releaseAfter.withLock { $0 })
                if Task.isCancelled { return false }
                self.releaseRunningJobs()
                return false
            }
            var workersLeft = self.count + (self.modelWorkers > 0 ? 1 : 0)
            while workersLeft > 0, let finished = await group.next() {
                if finished { workersLeft -= 1 }
            }
            group.cancelAll()
        }
        self.logger.info("workers stopped")
    }

    private func releaseRunningJobs() {
        self.releasing.store(true, ordering: .relaxed)
        let jobs = self.running.withLock { Array($0.values) }
        if !jobs.isEmpty { self.logger.notice("drain timeout: releasing unfinished jobs", metadata: ["keel.jobs": "\(jobs.count)"]) }
        for job in jobs { job.signal.fire() }
    }

    /// The pool's one heartbeat clock: every running job's worker is told
    /// when its lease is a third of the way to expiring. One timer for the
    /// pool rather than one per job keeps a short job down to its handler's
    /// task and its two writes.
    private func beatLeases() async {
        let interval = self.settings.leaseDuration / 3
        let tick = min(interval / 4, .seconds(1))
        while !Task.isCancelled {
            try? await Task.sleep(for: tick)
            let now = ContinuousClock.now
            let jobs = self.running.withLock { Array($0.values) }
            for job in jobs where job.beatDue(now: now, interval: interval) { job.signal.fire() }
        }
    }

    private func work(index: Int) async {
        let owner = "\(self.instanceID)/worker-\(index)"
        let signal = WakeSignal()
        self.hub.addWorker(signal)
        defer { self.hub.removeWorker(signal) }
        let types = self.generalTypes
        let typeSet = Set(types)
        while !self.isDraining, !Task.isCancelled {
            self.hub.markIdle(signal, types: typeSet)
            let claimed: ClaimedJob?
            do {
                claimed = try await self.queue.claim(owner: owner, types: types, leaseDuration: self.settings.leaseDuration, now: self.clock.now())
            } catch {
                self.logger.warning("claiming a job failed", metadata: ["keel.error": "\(error)"])
                _ = await signal.wait(timeout: self.settings.pollInterval)
                continue
            }
            guard let claimed else {
                self.metrics.claimsEmpty.increment()
                _ = await signal.wait(timeout: self.settings.pollInterval)
                continue
            }
            self.metrics.claimsWithJob.increment()
            self.hub.markBusy(signal, types: typeSet)
            await self.execute(claimed)
        }
    }

    /// The model lane: claims a job of ``modelTypes`` whenever one of its
    /// `modelWorkers` slots is free and runs it in a task of its own. Like a
    /// worker, it sleeps until a ready job (or a freed slot) wakes it, or the
    /// poll interval passes. On drain it stops claiming and waits for its
    /// jobs (which the drain releases after its timeout).
    private func runModelLane() async {
        let signal = WakeSignal()
        let types = self.modelTypes
        let typeSet = Set(types)
        let free = FreeSlots(count: self.modelWorkers)
        self.hub.addWorker(signal)
        defer { self.hub.removeWorker(signal) }
        await withDiscardingTaskGroup { group in
            while !self.isDraining, !Task.isCancelled {
                guard let slot = free.take() else {
                    // Every slot busy: a finishing job fires the signal.
                    _ = await signal.wait(timeout: self.settings.pollInterval)
                    continue
                }
                self.hub.markIdle(signal, types: typeSet)
                let claimed: ClaimedJob?
                do {
                    claimed = try await self.queue.claim(
                        owner: "\(self.instanceID)/model-\(slot)", types: types, leaseDuration: self.settings.leaseDuration, now: self.clock.now())
                } catch {
                    self.logger.warning("claiming a job failed", metadata: ["keel.error": "\(error)"])
                    free.put(slot)
                    _ = await signal.wait(timeout: self.settings.pollInterval)
                    continue
                }
                guard let claimed else {
                    free.put(slot)
                    self.metrics.claimsEmpty.increment()
                    _ = await signal.wait(timeout: self.settings.pollInterval)
                    continue
                }
                self.metrics.claimsWithJob.increment()
                // Out of the idle list; the loop itself looks for the next job at once.
                self.hub.markBusy(signal, types: typeSet)
                group.addTask {
                    await self.execute(claimed)
                    free.put(slot)
                    signal.fire()
                }
            }
        }
    }

    enum Outcome: Sendable {
        case succeeded(JSONValue)
        case failed(JobHandlerFailure)
        case cancelRequested
        case leaseLost
        case release
        case stopped
    }

    func execute(_ claimed: ClaimedJob) async {
        let job = claimed.job
        let lease = claimed.lease
        var logger = self.logger
        logger[metadataKey: "keel.job"] = "\(job.id)"
        logger[metadataKey: "keel.job.type"] = "\(job.type)"
        logger[metadataKey: "keel.job.attempt"] = "\(job.attempts)"
        self.metrics.workerBusy(1)
        defer { self.metrics.workerBusy(-1) }
        // The claim may have appended a `reset` event for a retried attempt.
        self.hub.publish([.jobEvents(jobID: job.id)])
        logger.debug("job started")

        let started = ContinuousClock.now
        let outcome: Outcome
        if let handler = self.registry.handler(for: job.type) {
            let input = (try? JSONValue.parse(Array(job.inputJSON.utf8))) ?? .null
            let context = JobContext(
                id: job.id, sessionID: job.sessionID, type: job.type, input: input, attempt: job.attempts, maxAttempts: job.maxAttempts, lease: lease,
                queue: self.queue, log: self.log, hub: self.hub, clock: self.clock,
                events: EventBudget(limit: self.settings.maxEvents, lastSequence: job.lastSequence)
            )
            outcome = await self.run(handler, context, lease: lease, logger: logger)
        } else {
            outcome = .failed(JobHandlerFailure(code: "unknown_job_type", message: "No handler for job type '\(job.type)' on this worker.", retryable: false))
        }
        self.metrics.recordRun(type: job.type, duration: ContinuousClock.now - started)
        await self.record(outcome, job: job, lease: lease, logger: logger)
        self.hub.publish([.jobEvents(jobID: job.id)])
    }

    /// Runs the handler in a child task while this worker supervises it:
    /// it sleeps until the handler ends, the pool's heartbeat clock says the
    /// lease needs extending, or the drain releases the job. A heartbeat that
    /// finds the lease lost or cancellation requested stops the handler.
    /// Whichever decides first wins; a handler that ends because it was
    /// stopped does not decide.
    private func run(_ handler: any JobHandler, _ context: JobContext, lease: JobLease, logger: Logger) async -> Outcome {
        let job = RunningJob()
        self.running.withLock { $0[ObjectIdentifier(job)] = job }
        // Asked to stop: check the store now, not at the next heartbeat.
        self.hub.watchCancel(jobID: lease.jobID, owner: ObjectIdentifier(job)) { job.beatNow() }
        defer {
            self.hub.unwatchCancel(jobID: lease.jobID, ObjectIdentifier(job))
            self.running.withLock { _ = $0.removeValue(forKey: ObjectIdentifier(job)) }
        }
        if self.releasing.load(ordering: .relaxed) { return .release }

        return await withTaskGroup(of: Outcome.self) { group in
            group.addTask {
                defer {
                    job.handlerEnded.store(true, ordering: .releasing)
                    job.signal.fire()
                }
                do {
                    return .succeeded(try await handler.run(context))
                } catch let failure as JobHandlerFailure {
                    return .failed(failure)
                } catch let error as KeelError where error.code == .leaseLost {
                    return .leaseLost
                } catch is CancellationError {
                    return .stopped
                } catch {
                    return .failed(Self.clientFailure(for: error, jobID: context.id, attempt: context.attempt, logger: logger))
                }
            }
            let decided = await self.supervise(job, lease: lease)
            if let decided {
                group.cancelAll()
                _ = await group.next()
                return decided
            }
            return await group.next() ?? .stopped
        }
    }

    /// What the client sees of an error a handler did not turn into a
    /// ``JobHandlerFailure``: a code and a message that name no host, URL or
    /// key (provider errors carry them). The error itself goes to the log,
    /// under the job's id, which the message names.
    static func clientFailure(for error: any Error, jobID: String, attempt: Int, logger: Logger) -> JobHandlerFailure {
        logger.error("job handler failed", metadata: ["keel.job.error.detail": "\(LogRedaction.redact(String(reflecting: error)))"])
        if let error = error as? KeelError {
            // A KeelError's message is written for clients; its detail is not.
            return JobHandlerFailure(code: error.code.rawValue, message: error.message, retryable: error.code != .invalidInput)
        }
        return JobHandlerFailure(
            code: "handler_error",
            message: "The job's attempt \(attempt) failed with an internal error; the server's log has the details under job \(jobID)."
        )
    }

    /// Returns when the handler has ended (`nil`: its outcome decides) or
    /// when the job must stop (the reason).
    private func supervise(_ job: RunningJob, lease: JobLease) async -> Outcome? {
        while true {
            await job.signal.wait()
            if job.handlerEnded.load(ordering: .acquiring) { return nil }
            if Task.isCancelled { return .stopped }
            if self.releasing.load(ordering: .relaxed) { return .release }
            guard job.takeBeat() else { continue }
            do {
                switch try await self.queue.heartbeat(lease, leaseDuration: self.settings.leaseDuration, now: self.clock.now()) {
                case .lost: return .leaseLost
                case .active(cancelRequested: true): return .cancelRequested
                case .active(cancelRequested: false): self.metrics.workerHeartbeats.increment()
                }
            } catch {
                // The lease is still ours until it expires; try again next beat.
                self.logger.warning("job heartbeat failed", metadata: ["keel.job": "\(lease.jobID)", "keel.error": "\(error)"])
            }
        }
    }

    private func record(_ outcome: Outcome, job: Job, lease: JobLease, logger: Logger) async {
        let timing = JobTiming(now: self.clock.now(), resultTTL: self.settings.resultTTL)
        do {
            switch outcome {
            case .succeeded(let result):
                let finished = try await self.queue.succeed(lease, resultJSON: result.serialized(), timing: timing)
                self.metrics.finished(type: job.type, status: finished.status.rawValue)
                logger.info("job succeeded")
            case .failed(let failure):
                let retryAt = failure.retryable ? timing.now.addingTimeInterval(self.settings.backoff(afterAttempt: job.attempts).timeInterval) : nil
                let after = try await self.queue.fail(lease, error: JobFailure(code: failure.code, message: failure.message), retryAt: retryAt, timing: timing)
                if after.status == .failed {
                    self.metrics.finished(type: job.type, status: after.status.rawValue)
                    logger.notice("job failed", metadata: ["keel.job.error": "\(failure.code): \(failure.message)"])
                } else {
                    self.metrics.retried(type: job.type)
                    logger.info("job attempt failed; will retry", metadata: ["keel.job.error": "\(failure.code)", "keel.job.run_at": "\(after.runAt)"])
                }
            case .cancelRequested:
                let cancelled = try await self.queue.acknowledgeCancel(lease, timing: timing)
                self.metrics.finished(type: job.type, status: cancelled.status.rawValue)
                logger.info("job cancelled while running")
            case .leaseLost:
                self.metrics.leasesLost.increment()
                logger.warning("lost the job's lease; another worker owns it now")
            case .release, .stopped:
                try await self.queue.release(lease, now: timing.now)
                self.hub.publish([.jobReady(type: job.type)])
                logger.notice("job released unfinished; it will run again without counting this attempt")
            }
        } catch let error as KeelError where error.code == .leaseLost {
            self.metrics.leasesLost.increment()
            logger.warning("lost the job's lease before recording its outcome")
        } catch {
            logger.error("recording the job's outcome failed; its lease will expire and it will run again", metadata: ["keel.error": "\(error)"])
        }
    }
}

/// The model lane's free slots: a job's owner names its slot.
private final class FreeSlots: Sendable {
    private let slots: Mutex<[Int]>

    init(count: Int) { self.slots = Mutex(Array((0..<count).reversed())) }

    func take() -> Int? { self.slots.withLock { $0.popLast() } }

    func put(_ slot: Int) { self.slots.withLock { $0.append(slot) } }
}

/// A job a worker of this pool is running: what its worker waits on, and
/// when its lease was last extended.
private final class RunningJob: Sendable {
    let signal = WakeSignal()
    let handlerEnded = Atomic<Bool>(false)
    private let beats = Mutex<(last: ContinuousClock.Instant, due: Bool)>((ContinuousClock.now, false))

    /// Marks a heartbeat due when the last one is `interval` old; says whether it did.
    func beatDue(now: ContinuousClock.Instant, interval: Duration) -> Bool {
        self.beats.withLock { beats in
            guard !beats.due, now - beats.last >= interval else { return false }
            beats.due = true
            return true
        }
    }

    /// Makes a heartbeat due at once and wakes the worker to send it (it
    /// reads whether cancellation was requested).
    func beatNow() {
        self.beats.withLock { $0.due = true }
        self.signal.fire()
    }

    /// Takes the due heartbeat, if any (the worker is about to send it).
    func takeBeat() -> Bool {
        self.beats.withLock { beats in
            guard beats.due else { return false }
            beats = (.now, false)
            return true
        }
    }
}
