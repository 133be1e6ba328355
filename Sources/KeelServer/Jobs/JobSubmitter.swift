import KeelCore

/// Puts jobs in the queue and wakes the workers that can run them: what the
/// jobs API and any route or handler that starts a job share.
public struct JobSubmitter: Sendable {
    let queue: any JobQueue
    let hub: ChangeHub
    let clock: any KeelClock
    let metrics: JobMetrics

    /// Enqueues `job`, or finds the session's job with the same idempotency
    /// key (`created` false), and wakes an idle worker for a new one.
    public func enqueue(_ job: NewJob) async throws -> (job: Job, created: Bool) {
        let (stored, created) = try await self.queue.enqueue(job, now: self.clock.now())
        if created {
            self.metrics.created(type: stored.type)
            self.hub.publish([.jobReady(type: stored.type)])
        }
        return (stored, created)
    }

    /// Cancels a job: a queued one at once (its `done` is in the log), a
    /// running one once its worker hears of it: at once in this process, in
    /// another through the store's change feed (at the latest at its next
    /// heartbeat). Returns the job after, or nil when there is no such job.
    @discardableResult
    public func cancel(id: String, resultTTL: Duration) async throws -> Job? {
        guard let job = try await self.queue.cancel(id: id, timing: JobTiming(now: self.clock.now(), resultTTL: resultTTL)) else { return nil }
        switch job.status {
        case .cancelled: self.hub.publish([.jobEvents(jobID: job.id)])
        case .running: self.hub.publish([.cancelRequested(jobID: job.id)])
        case .queued, .succeeded, .failed: break
        }
        return job
    }

    /// ``enqueue(_:)`` when the caller does not care whether the job is new.
    @discardableResult
    public func submit(_ job: NewJob) async throws -> Job {
        try await self.enqueue(job).job
    }
}
