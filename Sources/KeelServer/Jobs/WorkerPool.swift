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
/// Drain: once ``beginDrain(releaseAfter:)`` is called no worker claims
/// again; jobs still running when `releaseAfter` has passed are stopped and
/// their leases released without counting the attempt, so another instance
/// runs them at once.
public final class WorkerPool: Service, Sendable {
    let count: Int
    let instanceID: String
    let registry: JobRegistry
    let queue: any JobQueue
    let hub: ChangeHub
    let settings: JobSettings
    let clock: any KeelClock
    let metrics: JobMetrics
    let logger: Logger

    private let draining = Atomic<Bool>(false)
    private let releasing = Atomic<Bool>(false)
    private let drainSignal = WakeSignal()
    private let running = Mutex<[ObjectIdentifier: WakeSignal]>([:])
    private let releaseAfter = Mutex<Duration>(.zero)

    init(
        count: Int, instanceID: String, registry: JobRegistry, queue: any JobQueue, hub: ChangeHub, settings: JobSettings,
        clock: any KeelClock, metrics: JobMetrics, logger: Logger
    ) {
        self.count = count
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
        self.logger.info("workers started", metadata: ["keel.workers": "\(self.count)", "keel.job_types": "\(self.registry.types)"])
        await withTaskGroup(of: Bool.self) { group in
            for index in 0..<self.count {
                group.addTask {
                    await self.work(index: index)
                    return true
                }
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
            var workersLeft = self.count
            while workersLeft > 0, let finished = await group.next() {
                if finished { workersLeft -= 1 }
            }
            group.cancelAll()
        }
        self.logger.info("workers stopped")
    }

    private func releaseRunningJobs() {
        self.releasing.store(true, ordering: .relaxed)
        let signals = self.running.withLock { Array($0.values) }
        if !signals.isEmpty { self.logger.notice("drain timeout: releasing unfinished jobs", metadata: ["keel.jobs": "\(signals.count)"]) }
        for signal in signals { signal.fire() }
    }

    private func work(index: Int) async {
        let owner = "\(self.instanceID)/worker-\(index)"
        let signal = WakeSignal()
        self.hub.addWorker(signal)
        defer { self.hub.removeWorker(signal) }
        let types = self.registry.types
        while !self.isDraining, !Task.isCancelled {
            self.hub.markIdle(signal)
            let claimed: ClaimedJob?
            do {
                claimed = try await self.queue.claim(owner: owner, types: types, leaseDuration: self.settings.leaseDuration, now: self.clock.now())
            } catch {
                self.logger.warning("claiming a job failed", metadata: ["keel.error": "\(error)"])
                _ = await signal.wait(timeout: self.settings.pollInterval)
                continue
            }
            guard let claimed else {
                _ = await signal.wait(timeout: self.settings.pollInterval)
                continue
            }
            self.hub.markBusy(signal)
            await self.execute(claimed)
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
                id: job.id, type: job.type, input: input, attempt: job.attempts, maxAttempts: job.maxAttempts, lease: lease,
                queue: self.queue, hub: self.hub, clock: self.clock
            )
            outcome = await self.run(handler, context, lease: lease)
        } else {
            outcome = .failed(JobHandlerFailure(code: "unknown_job_type", message: "No handler for job type '\(job.type)' on this worker.", retryable: false))
        }
        self.metrics.recordRun(type: job.type, duration: ContinuousClock.now - started)
        await self.record(outcome, job: job, lease: lease, logger: logger)
        self.hub.publish([.jobEvents(jobID: job.id)])
    }

    /// Runs the handler next to a supervisor that heartbeats; whichever
    /// decides first wins, and the other is cancelled.
    private func run(_ handler: any JobHandler, _ context: JobContext, lease: JobLease) async -> Outcome {
        let release = WakeSignal()
        self.running.withLock { $0[ObjectIdentifier(release)] = release }
        defer { self.running.withLock { _ = $0.removeValue(forKey: ObjectIdentifier(release)) } }
        if self.releasing.load(ordering: .relaxed) { return .release }

        return await withTaskGroup(of: Outcome.self) { group in
            group.addTask {
                do {
                    return .succeeded(try await handler.run(context))
                } catch let failure as JobHandlerFailure {
                    return .failed(failure)
                } catch let error as KeelError where error.code == .leaseLost {
                    return .leaseLost
                } catch is CancellationError {
                    return .stopped
                } catch {
                    return .failed(JobHandlerFailure(code: "handler_error", message: "\(error)"))
                }
            }
            group.addTask { await self.supervise(lease, release: release) }
            var decided: Outcome = .stopped
            if let first = await group.next() { decided = first }
            group.cancelAll()
            // A handler that ends because its supervisor cancelled it does not decide.
            if case .stopped = decided, let second = await group.next() { decided = second }
            return decided
        }
    }

    private func supervise(_ lease: JobLease, release: WakeSignal) async -> Outcome {
        let interval = self.settings.leaseDuration / 3
        while true {
            let released = await release.wait(timeout: interval)
            if Task.isCancelled { return .stopped }
            if released || self.releasing.load(ordering: .relaxed) { return .release }
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
