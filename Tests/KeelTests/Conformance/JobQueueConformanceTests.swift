import Foundation
import KeelCore
import Testing

/// The contract of `JobQueue`, `EventLog` and `LeaderLease`, run unchanged against every driver.
@Suite("JobQueue conformance")
struct JobQueueConformanceTests {
    static let t0 = Date(timeIntervalSince1970: 1_800_000_000)
    static let lease: Duration = .seconds(30)

    static func newJob(session: String = "s1", type: String = "demo", key: String? = nil, maxAttempts: Int = 3) -> NewJob {
        NewJob(sessionID: session, type: type, inputJSON: #"{"n":1}"#, maxAttempts: maxAttempts, idempotencyKey: key)
    }

    static func timing(_ now: Date = t0) -> JobTiming { JobTiming(now: now, resultTTL: .seconds(3600)) }

    @Test("enqueue, read and list newest first with a cursor", arguments: Driver.available)
    func enqueueAndList(driver: Driver) async throws {
        try await StoreFixture.make(driver).withStore { store in
            var ids: [String] = []
            for index in 0..<5 {
                let (job, created) = try await store.jobs.enqueue(Self.newJob(), now: Self.t0.addingTimeInterval(Double(index)))
                #expect(created && job.status == .queued && job.attempts == 0)
                ids.append(job.id)
            }
            _ = try await store.jobs.enqueue(Self.newJob(session: "other"), now: Self.t0)
            #expect(try await store.jobs.job(id: ids[0])?.inputJSON == #"{"n":1}"#)

            let first = try await store.jobs.jobs(sessionID: "s1", status: nil, limit: 2, cursor: nil, now: Self.t0)
            #expect(first.jobs.map(\.id) == [ids[4], ids[3]])
            let second = try await store.jobs.jobs(sessionID: "s1", status: nil, limit: 2, cursor: first.nextCursor, now: Self.t0)
            #expect(second.jobs.map(\.id) == [ids[2], ids[1]])
            let last = try await store.jobs.jobs(sessionID: "s1", status: nil, limit: 2, cursor: second.nextCursor, now: Self.t0)
            #expect(last.jobs.map(\.id) == [ids[0]] && last.nextCursor == nil)
            let running = try await store.jobs.jobs(sessionID: "s1", status: .running, limit: 10, cursor: nil, now: Self.t0)
            #expect(running.jobs.isEmpty)
            await expectKeelError(.invalidCursor) {
                try await store.jobs.jobs(sessionID: "s1", status: nil, limit: 2, cursor: "garbage", now: Self.t0)
            }
            #expect(try await store.jobs.queueDepth() == 6)
        }
    }

    @Test("a session's active jobs are its queued and running ones", arguments: Driver.available)
    func activeJobs(driver: Driver) async throws {
        try await StoreFixture.make(driver).withStore { store in
            for _ in 0..<3 { _ = try await store.jobs.enqueue(Self.newJob(), now: Self.t0) }
            #expect(try await store.jobs.activeJobCount(sessionID: "s1") == 3)
            let claimed = try #require(try await store.jobs.claim(owner: "w", types: ["demo"], leaseDuration: Self.lease, now: Self.t0))
            // Running still counts; finished does not.
            #expect(try await store.jobs.activeJobCount(sessionID: "s1") == 3)
            _ = try await store.jobs.succeed(claimed.lease, resultJSON: "{}", timing: Self.timing())
            #expect(try await store.jobs.activeJobCount(sessionID: "s1") == 2)
            _ = try await store.jobs.enqueue(Self.newJob(session: "other"), now: Self.t0)
            #expect(try await store.jobs.activeJobCount(sessionID: "other") == 1)
            #expect(try await store.jobs.activeJobCount(sessionID: "nobody") == 0)
        }
    }

    @Test("the same idempotency key returns the same job, even under a race", arguments: Driver.available)
    func idempotency(driver: Driver) async throws {
        let fixture = try await StoreFixture.make(driver)
        try await fixture.withStore { _ in }
        let stores = try (0..<2).map { _ in try fixture.openStore() }
        let results = try await stores[0].withRunning {
            try await stores[1].withRunning {
                try await withThrowingTaskGroup(of: (String, Bool).self) { group in
                    for index in 0..<10 {
                        group.addTask {
                            let (job, created) = try await stores[index % 2].jobs.enqueue(Self.newJob(key: "retry-me"), now: Self.t0)
                            return (job.id, created)
                        }
                    }
                    return try await group.reduce(into: [(String, Bool)]()) { $0.append($1) }
                }
            }
        }
        #expect(Set(results.map(\.0)).count == 1)
        #expect(results.filter(\.1).count == 1)
        try await fixture.withStore { store in
            // The same key from another session is another job.
            let (other, created) = try await store.jobs.enqueue(Self.newJob(session: "s2", key: "retry-me"), now: Self.t0)
            #expect(created && other.id != results[0].0)
        }
    }

    @Test("many concurrent workers never hold the same job at once", arguments: Driver.available)
    func exclusiveClaims(driver: Driver) async throws {
        let fixture = try await StoreFixture.make(driver)
        let jobCount = 30
        try await fixture.withStore { store in
            for _ in 0..<jobCount { _ = try await store.jobs.enqueue(Self.newJob(), now: Self.t0) }
        }
        let stores = try (0..<2).map { _ in try fixture.openStore() }
        let claimed = try await stores[0].withRunning {
            try await stores[1].withRunning {
                try await withThrowingTaskGroup(of: [String].self) { group in
                    for worker in 0..<8 {
                        group.addTask {
                            var mine: [String] = []
                            while let claim = try await stores[worker % 2].jobs.claim(
                                owner: "w\(worker)", types: ["demo"], leaseDuration: Self.lease, now: Self.t0)
                            {
                                mine.append(claim.job.id)
                                #expect(claim.job.status == .running && claim.job.attempts == 1)
                            }
                            return mine
                        }
                    }
                    return try await group.reduce(into: [String]()) { $0 += $1 }
                }
            }
        }
        #expect(claimed.count == jobCount)
        #expect(Set(claimed).count == jobCount)
    }

    @Test("concurrent completions: each stale lease fails alone, every held one succeeds once", arguments: Driver.available)
    func concurrentCompletions(driver: Driver) async throws {
        try await StoreFixture.make(driver).withStore { store in
            var leases: [JobLease] = []
            for _ in 0..<12 {
                _ = try await store.jobs.enqueue(Self.newJob(), now: Self.t0)
                leases.append(try #require(try await store.jobs.claim(owner: "w", types: ["demo"], leaseDuration: Self.lease, now: Self.t0)).lease)
            }
            // Writes arriving together share transactions on SQLite (group
            // commit); a refused one must not take its neighbours down.
            let attempts = leases.map { ($0, true) } + leases.prefix(6).map { (JobLease(jobID: $0.jobID, token: "stale", owner: "old"), false) }
            let outcomes = await withTaskGroup(of: (String, Bool, Bool).self) { group in
                for (lease, held) in attempts.shuffled() {
                    group.addTask {
                        let succeeded = (try? await store.jobs.succeed(lease, resultJSON: #"{"ok":true}"#, timing: Self.timing())) != nil
                        return (lease.jobID, held, succeeded)
                    }
                }
                return await group.reduce(into: [(String, Bool, Bool)]()) { $0.append($1) }
            }
            #expect(outcomes.allSatisfy { $0.1 == $0.2 }, "\(outcomes.filter { $0.1 != $0.2 })")
            for lease in leases {
                let job = try #require(try await store.jobs.job(id: lease.jobID))
                #expect(job.status == .succeeded && job.resultJSON == #"{"ok":true}"#)
                let events = try await store.events.events(jobID: lease.jobID, after: 0, limit: 10)
                #expect(events.map(\.type) == ["done"] && events.map(\.sequence) == [1])
            }
        }
    }

    @Test("only due jobs of known types are claimed", arguments: Driver.available)
    func claimFilters(driver: Driver) async throws {
        try await StoreFixture.make(driver).withStore { store in
            _ = try await store.jobs.enqueue(Self.newJob(type: "other"), now: Self.t0)
            #expect(try await store.jobs.claim(owner: "w", types: ["demo"], leaseDuration: Self.lease, now: Self.t0) == nil)
            #expect(try await store.jobs.claim(owner: "w", types: [], leaseDuration: Self.lease, now: Self.t0) == nil)
            let claim = try await store.jobs.claim(owner: "w", types: ["demo", "other"], leaseDuration: Self.lease, now: Self.t0)
            #expect(claim?.job.type == "other")
            #expect(claim?.job.leaseOwner == "w")
        }
    }

    @Test("events get gap-free sequence numbers under concurrent appends", arguments: Driver.available)
    func gapFreeSequences(driver: Driver) async throws {
        try await StoreFixture.make(driver).withStore { store in
            _ = try await store.jobs.enqueue(Self.newJob(), now: Self.t0)
            let claim = try #require(try await store.jobs.claim(owner: "w", types: ["demo"], leaseDuration: Self.lease, now: Self.t0))
            let sequences = try await withThrowingTaskGroup(of: Int64.self) { group in
                for index in 0..<40 {
                    group.addTask {
                        try await store.jobs.appendEvent(type: "token", dataJSON: #"{"i":\#(index)}"#, lease: claim.lease, now: Self.t0)
                    }
                }
                return try await group.reduce(into: [Int64]()) { $0.append($1) }
            }
            #expect(sequences.sorted() == Array(1...40))
            let events = try await store.events.events(jobID: claim.job.id, after: 0, limit: 100)
            #expect(events.map(\.sequence) == Array(1...40))
            #expect(try await store.events.events(jobID: claim.job.id, after: 35, limit: 2).map(\.sequence) == [36, 37])

            let done = try await store.jobs.succeed(claim.lease, resultJSON: #"{"ok":true}"#, timing: Self.timing())
            #expect(done.status == .succeeded && done.lastSequence == 41)
            let last = try #require(try await store.events.events(jobID: claim.job.id, after: 40, limit: 10).first)
            #expect(last.type == JobEventType.done && last.sequence == 41)
            #expect(last.dataJSON.contains(#""status":"succeeded""#))
        }
    }

    @Test("a stale lease's writes are refused and change nothing", arguments: Driver.available)
    func fencing(driver: Driver) async throws {
        try await StoreFixture.make(driver).withStore { store in
            _ = try await store.jobs.enqueue(Self.newJob(), now: Self.t0)
            let first = try #require(try await store.jobs.claim(owner: "paused", types: ["demo"], leaseDuration: .seconds(5), now: Self.t0))
            try await store.jobs.appendEvent(type: "token", dataJSON: #"{"t":"a"}"#, lease: first.lease, now: Self.t0)

            // The worker pauses past its lease; another instance rescues and reclaims the job.
            let later = Self.t0.addingTimeInterval(10)
            #expect(try await store.jobs.rescueExpiredLeases(timing: Self.timing(later)) == 1)
            let rescued = try #require(try await store.jobs.job(id: first.job.id))
            #expect(rescued.status == .queued && rescued.error == .workerLost)
            let second = try #require(try await store.jobs.claim(owner: "successor", types: ["demo"], leaseDuration: Self.lease, now: later))
            #expect(second.job.attempts == 2)

            let stale = first.lease
            #expect(try await store.jobs.heartbeat(stale, leaseDuration: Self.lease, now: later) == .lost)
            await #expect(throws: KeelError.leaseLost) { try await store.jobs.appendEvent(type: "token", dataJSON: "{}", lease: stale, now: later) }
            await #expect(throws: KeelError.leaseLost) { try await store.jobs.setProgress(JobProgress(percent: 99), lease: stale, now: later) }
            await #expect(throws: KeelError.leaseLost) { try await store.jobs.succeed(stale, resultJSON: "{}", timing: Self.timing(later)) }
            await #expect(throws: KeelError.leaseLost) {
                try await store.jobs.fail(stale, error: JobFailure(code: "x", message: "x"), retryAt: nil, timing: Self.timing(later))
            }
            await #expect(throws: KeelError.leaseLost) { try await store.jobs.release(stale, now: later) }

            // The successor's view: a reset after the dead attempt's token, and nothing from the stale writer.
            let events = try await store.events.events(jobID: first.job.id, after: 0, limit: 10)
            #expect(events.map(\.type) == ["token", "reset"])
            #expect(events.map(\.sequence) == [1, 2])
            #expect(events.last?.dataJSON == #"{"attempt":2}"#)
            // The claimed job already counts its reset, and the next event follows it.
            #expect(second.job.lastSequence == 2)
            #expect(try await store.jobs.appendEvent(type: "token", dataJSON: "{}", lease: second.lease, now: later) == 3)
            #expect(try await store.jobs.heartbeat(second.lease, leaseDuration: Self.lease, now: later) == .active(cancelRequested: false))
            let job = try await store.jobs.job(id: first.job.id)
            #expect(job?.status == .running && job?.progress == JobProgress())
        }
    }

    @Test("failures retry until attempts run out, then fail with one done event", arguments: Driver.available)
    func retries(driver: Driver) async throws {
        try await StoreFixture.make(driver).withStore { store in
            _ = try await store.jobs.enqueue(Self.newJob(maxAttempts: 2), now: Self.t0)
            let failure = JobFailure(code: "boom", message: "exploded")
            let first = try #require(try await store.jobs.claim(owner: "w", types: ["demo"], leaseDuration: Self.lease, now: Self.t0))
            let retryAt = Self.t0.addingTimeInterval(5)
            let requeued = try await store.jobs.fail(first.lease, error: failure, retryAt: retryAt, timing: Self.timing())
            #expect(requeued.status == .queued && requeued.error == failure)
            #expect(try await store.jobs.claim(owner: "w", types: ["demo"], leaseDuration: Self.lease, now: Self.t0) == nil, "backoff ignored")
            let second = try #require(try await store.jobs.claim(owner: "w", types: ["demo"], leaseDuration: Self.lease, now: retryAt))
            #expect(second.job.attempts == 2)
            let failed = try await store.jobs.fail(second.lease, error: failure, retryAt: retryAt, timing: Self.timing(retryAt))
            #expect(failed.status == .failed && failed.finishedAt != nil && failed.expiresAt != nil)
            let types = try await store.events.events(jobID: first.job.id, after: 0, limit: 10).map(\.type)
            #expect(types == [JobEventType.done])
        }
    }

    @Test("release gives the job back without counting the attempt", arguments: Driver.available)
    func release(driver: Driver) async throws {
        try await StoreFixture.make(driver).withStore { store in
            _ = try await store.jobs.enqueue(Self.newJob(), now: Self.t0)
            let claim = try #require(try await store.jobs.claim(owner: "w", types: ["demo"], leaseDuration: Self.lease, now: Self.t0))
            try await store.jobs.appendEvent(type: "token", dataJSON: "{}", lease: claim.lease, now: Self.t0)
            try await store.jobs.release(claim.lease, now: Self.t0)
            let job = try #require(try await store.jobs.job(id: claim.job.id))
            #expect(job.status == .queued && job.attempts == 0 && job.leaseOwner == nil)
            let again = try #require(try await store.jobs.claim(owner: "w2", types: ["demo"], leaseDuration: Self.lease, now: Self.t0))
            #expect(again.job.attempts == 1)
            #expect(try await store.events.events(jobID: job.id, after: 1, limit: 10).map(\.type) == [JobEventType.reset])
        }
    }

    @Test("cancel: queued at once, running through the heartbeat, finished unchanged", arguments: Driver.available)
    func cancel(driver: Driver) async throws {
        try await StoreFixture.make(driver).withStore { store in
            let (queued, _) = try await store.jobs.enqueue(Self.newJob(type: "later"), now: Self.t0)
            let cancelled = try #require(try await store.jobs.cancel(id: queued.id, timing: Self.timing()))
            #expect(cancelled.status == .cancelled)
            #expect(try await store.events.events(jobID: queued.id, after: 0, limit: 10).map(\.type) == [JobEventType.done])
            #expect(try await store.jobs.cancel(id: queued.id, timing: Self.timing())?.status == .cancelled)
            #expect(try await store.jobs.cancel(id: "missing", timing: Self.timing()) == nil)

            _ = try await store.jobs.enqueue(Self.newJob(), now: Self.t0)
            let claim = try #require(try await store.jobs.claim(owner: "w", types: ["demo"], leaseDuration: Self.lease, now: Self.t0))
            let flagged = try #require(try await store.jobs.cancel(id: claim.job.id, timing: Self.timing()))
            #expect(flagged.status == .running && flagged.cancelRequested)
            #expect(try await store.jobs.heartbeat(claim.lease, leaseDuration: Self.lease, now: Self.t0) == .active(cancelRequested: true))
            let acknowledged = try await store.jobs.acknowledgeCancel(claim.lease, timing: Self.timing())
            #expect(acknowledged.status == .cancelled)
        }
    }

    @Test("an expired lease with no attempts left fails the job", arguments: Driver.available)
    func rescueExhausted(driver: Driver) async throws {
        try await StoreFixture.make(driver).withStore { store in
            _ = try await store.jobs.enqueue(Self.newJob(maxAttempts: 1), now: Self.t0)
            let claim = try #require(try await store.jobs.claim(owner: "w", types: ["demo"], leaseDuration: .seconds(1), now: Self.t0))
            #expect(try await store.jobs.rescueExpiredLeases(timing: Self.timing(Self.t0)) == 0)
            #expect(try await store.jobs.rescueExpiredLeases(timing: Self.timing(Self.t0.addingTimeInterval(2))) == 1)
            let job = try await store.jobs.job(id: claim.job.id)
            #expect(job?.status == .failed && job?.error == .workerLost)
        }
    }

    @Test("finished jobs expire, and the purge removes them with their events", arguments: Driver.available)
    func purge(driver: Driver) async throws {
        try await StoreFixture.make(driver).withStore { store in
            _ = try await store.jobs.enqueue(Self.newJob(), now: Self.t0)
            let claim = try #require(try await store.jobs.claim(owner: "w", types: ["demo"], leaseDuration: Self.lease, now: Self.t0))
            let done = try await store.jobs.succeed(claim.lease, resultJSON: "{}", timing: JobTiming(now: Self.t0, resultTTL: .seconds(60)))
            #expect(done.expiresAt == Self.t0.addingTimeInterval(60))
            let listedLater = try await store.jobs.jobs(sessionID: "s1", status: nil, limit: 10, cursor: nil, now: Self.t0.addingTimeInterval(61))
            #expect(listedLater.jobs.isEmpty)
            #expect(try await store.jobs.purgeExpired(now: Self.t0.addingTimeInterval(30), limit: 10) == 0)
            #expect(try await store.jobs.purgeExpired(now: Self.t0.addingTimeInterval(61), limit: 10) == 1)
            #expect(try await store.jobs.job(id: claim.job.id) == nil)
            #expect(try await store.events.events(jobID: claim.job.id, after: 0, limit: 10).isEmpty)
        }
    }

    @Test("one leader at a time; the lease passes on when it expires", arguments: Driver.available)
    func leaderLease(driver: Driver) async throws {
        try await StoreFixture.make(driver).withStore { store in
            let aTakes = try await store.leases.acquire("janitor", owner: "a", duration: .seconds(10), now: Self.t0)
            let bBlocked = try await store.leases.acquire("janitor", owner: "b", duration: .seconds(10), now: Self.t0.addingTimeInterval(5))
            let aRenews = try await store.leases.acquire("janitor", owner: "a", duration: .seconds(10), now: Self.t0.addingTimeInterval(5))
            let bTakesOver = try await store.leases.acquire("janitor", owner: "b", duration: .seconds(10), now: Self.t0.addingTimeInterval(16))
            let otherName = try await store.leases.acquire("other", owner: "a", duration: .seconds(10), now: Self.t0)
            #expect(aTakes && !bBlocked && aRenews && bTakesOver && otherName)
        }
    }
}

extension KeelError {
    static func ~= (pattern: KeelError, value: any Error) -> Bool {
        (value as? KeelError)?.code == pattern.code
    }
}
