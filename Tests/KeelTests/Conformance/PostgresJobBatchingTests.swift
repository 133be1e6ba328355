import Foundation
import KeelCore
@testable import KeelPostgres
import Synchronization
import Testing

/// On PostgreSQL, concurrent enqueues, claims and completions of one process
/// share multi-row statements (`job_writes` at a time, per kind). The
/// conformance suite checks the outcomes under concurrency on both drivers;
/// this checks that the requests really were shared, and that sharing keeps
/// every request's own answer.
@Suite("PostgreSQL job statements shared between requests")
struct PostgresJobBatchingTests {
    typealias Conformance = JobQueueConformanceTests

    /// Job announcements heard by the listening instance: `demo` jobs, and the warm-up's.
    final class Tally: Sendable {
        private let counts = Mutex((demo: 0, warmUp: 0))
        var value: Int { self.counts.withLock { $0.demo } }
        var warmUp: Int { self.counts.withLock { $0.warmUp } }

        func add(_ changes: [StoreChange]) {
            self.counts.withLock { counts in
                for case .jobReady(let type) in changes {
                    if type == "demo" { counts.demo += 1 } else if type == "warm-up" { counts.warmUp += 1 }
                }
            }
        }
    }

    @Test("40 concurrent enqueues, claims and completions each take fewer than 40 statements, with every answer its own",
          .enabled(if: TestEnvironment.postgresURL != nil))
    func sharedStatements() async throws {
        let fixture = try await StoreFixture.make(.postgres)
        guard case .postgres(let url) = fixture.location else { return }
        var components = try #require(URLComponents(string: url))
        components.queryItems = (components.queryItems ?? []) + [URLQueryItem(name: "job_writes", value: "1")]
        let store = try PostgresStore(url: try #require(components.string), logger: TestEnvironment.logger)
        let queue = try #require(store.jobs as? PostgresJobQueue)
        try await store.withRunning {
            _ = try await store.migrate(logger: TestEnvironment.logger)

            // 30 new jobs, and 5 keys each sent twice: one job per key.
            let requests = (0..<30).map { _ in (Conformance.newJob(), false) }
                + (0..<5).flatMap { key in [(Conformance.newJob(key: "k\(key)"), true), (Conformance.newJob(key: "k\(key)"), true)] }
            let enqueued = try await withThrowingTaskGroup(of: (NewJob, Job, Bool).self) { group in
                for (new, _) in requests.shuffled() {
                    group.addTask {
                        let (job, created) = try await store.jobs.enqueue(new, now: Conformance.t0)
                        return (new, job, created)
                    }
                }
                return try await group.reduce(into: [(NewJob, Job, Bool)]()) { $0.append($1) }
            }
            #expect(queue.enqueues.batchesRun < requests.count, "\(queue.enqueues.batchesRun) statements")
            for (new, job, created) in enqueued where created {
                #expect(job.id == new.id && job.status == .queued && job.idempotencyKey == new.idempotencyKey)
            }
            #expect(enqueued.filter(\.2).count == 35)
            for key in 0..<5 {
                let answers = enqueued.filter { $0.0.idempotencyKey == "k\(key)" }
                #expect(answers.map(\.2).sorted { !$0 && $1 } == [false, true] && Set(answers.map(\.1.id)).count == 1, "key k\(key)")
            }

            // Five of them had an attempt that streamed a token and failed:
            // their next claim, in a shared statement, appends a `reset`.
            var retried: Set<String> = []
            for _ in 0..<5 {
                let first = try #require(try await store.jobs.claim(owner: "w", types: ["demo"], leaseDuration: Conformance.lease, now: Conformance.t0))
                _ = try await store.jobs.appendEvent(type: "token", dataJSON: #""t""#, lease: first.lease, now: Conformance.t0)
                _ = try await store.jobs.fail(first.lease, error: JobFailure(code: "x", message: "x"), retryAt: Conformance.t0, timing: Conformance.timing())
                retried.insert(first.job.id)
            }

            // 40 workers ask at once for 35 jobs: each job goes to one worker.
            let claims = try await withThrowingTaskGroup(of: ClaimedJob?.self) { group in
                for worker in 0..<40 {
                    group.addTask {
                        try await store.jobs.claim(owner: "w\(worker)", types: ["demo"], leaseDuration: Conformance.lease, now: Conformance.t0)
                    }
                }
                return try await group.reduce(into: [ClaimedJob?]()) { $0.append($1) }
            }
            #expect(queue.claims.batchesRun < 40, "\(queue.claims.batchesRun) statements")
            let claimed = claims.compactMap { $0 }
            #expect(claimed.count == 35 && Set(claimed.map(\.job.id)).count == 35)
            #expect(Set(claimed.map(\.lease.token)).count == 35)
            for claim in claimed {
                let attempts = retried.contains(claim.job.id) ? 2 : 1
                #expect(claim.job.status == .running && claim.job.leaseOwner == claim.lease.owner && claim.job.attempts == attempts)
            }

            // Every held lease completes once; 5 stale tokens for the same jobs are refused alone.
            let attempts = claimed.map { ($0.lease, true) } + claimed.prefix(5).map { (JobLease(jobID: $0.lease.jobID, token: "stale", owner: "old"), false) }
            let outcomes = await withTaskGroup(of: (JobLease, Bool, Job?).self) { group in
                for (lease, held) in attempts.shuffled() {
                    group.addTask {
                        (lease, held, try? await store.jobs.succeed(lease, resultJSON: #"{"job":"\#(lease.jobID)"}"#, timing: Conformance.timing()))
                    }
                }
                return await group.reduce(into: [(JobLease, Bool, Job?)]()) { $0.append($1) }
            }
            #expect(queue.completions.batchesRun < attempts.count, "\(queue.completions.batchesRun) statements")
            for (lease, held, job) in outcomes {
                #expect((job != nil) == held, "\(lease)")
                if let job { #expect(job.id == lease.jobID && job.status == .succeeded && job.resultJSON == #"{"job":"\#(lease.jobID)"}"#) }
            }
            for claim in claimed {
                let events = try await store.events.events(jobID: claim.job.id, after: 0, limit: 10)
                let final = try #require(try await store.jobs.job(id: claim.job.id))
                if retried.contains(claim.job.id) {
                    #expect(events.map(\.type) == ["token", "reset", "done"] && events.map(\.sequence) == [1, 2, 3])
                    #expect(events[1].dataJSON == #"{"attempt":2}"#)
                } else {
                    #expect(events.map(\.type) == ["done"] && events.map(\.sequence) == [1])
                }
                #expect(events.last?.dataJSON == final.jsonRepresentation())
            }
        }
        try await store.close()
    }

    @Test("another instance hears every job of a shared enqueue: one notification per type carries the count",
          .enabled(if: TestEnvironment.postgresURL != nil))
    func announcedCounts() async throws {
        #expect(PostgresChangeFeed.readyJobs("demo") == [.jobReady(type: "demo")])
        #expect(PostgresChangeFeed.readyJobs("demo\t1") == [.jobReady(type: "demo")])
        #expect(PostgresChangeFeed.readyJobs("demo.generate\t3") == Array(repeating: .jobReady(type: "demo.generate"), count: 3))
        #expect(PostgresChangeFeed.readyJobs("odd\tname") == [.jobReady(type: "odd\tname")])

        let fixture = try await StoreFixture.make(.postgres)
        try await fixture.withStore { store in
            let listener = try fixture.openStore()
            let heard = Tally()
            try await listener.withRunning {
                let following = Task {
                    try await listener.changes.follow { changes in
                        heard.add(changes)
                    }
                }
                defer { following.cancel() }
                // Wait until LISTEN is in place: a job enqueued now is heard.
                // Those warm-up jobs have a type of their own, not counted below.
                for _ in 0..<500 where heard.warmUp == 0 {
                    _ = try await store.jobs.enqueue(Conformance.newJob(type: "warm-up"), now: Conformance.t0)
                    try await Task.sleep(for: .milliseconds(10))
                }
                let batchesBefore = try #require(store.jobs as? PostgresJobQueue).enqueues.batchesRun
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for _ in 0..<40 {
                        group.addTask { _ = try await store.jobs.enqueue(Conformance.newJob(), now: Conformance.t0) }
                    }
                    try await group.waitForAll()
                }
                #expect(try #require(store.jobs as? PostgresJobQueue).enqueues.batchesRun - batchesBefore < 40)
                for _ in 0..<500 where heard.value < 40 { try await Task.sleep(for: .milliseconds(10)) }
                #expect(heard.value == 40)
            }
            try await listener.close()
        }
    }

    @Test("one statement: a key used twice answers both; claims go to requests made after their job was due; a failing statement fails only its own requests",
          .enabled(if: TestEnvironment.postgresURL != nil))
    func statementOutcomes() async throws {
        let fixture = try await StoreFixture.make(.postgres)
        guard case .postgres(let url) = fixture.location else { return }
        let store = try PostgresStore(url: url, logger: TestEnvironment.logger)
        let (client, logger) = (store.client, TestEnvironment.logger)
        try await store.withRunning {
            _ = try await store.migrate(logger: logger)
            let t0 = Conformance.t0.millisecondsSince1970
            func claim(_ now: Int64, types: [String] = ["demo"]) -> PostgresJobQueue.ClaimRequest {
                PostgresJobQueue.ClaimRequest(owner: "w\(now)", token: Identifiers.random(byteCount: 16), leaseUntil: now + 30_000, now: now, types: types)
            }

            // The same key twice in one statement: the first request creates the job, the second gets it.
            let keyed = [Conformance.newJob(key: "k"), Conformance.newJob(key: "k"), Conformance.newJob()]
            let enqueued = try await PostgresJobQueue.enqueue(keyed.map { ($0, t0) }, client: client, logger: logger)
            #expect(enqueued[0]?.created == true && enqueued[0]?.job.id == keyed[0].id)
            #expect(enqueued[1]?.created == false && enqueued[1]?.job.id == keyed[0].id)
            #expect(enqueued[2]?.created == true && enqueued[2]?.job.id == keyed[2].id)
            // A key taken by an earlier statement: no row, the caller looks it up.
            let again = try await PostgresJobQueue.enqueue([(Conformance.newJob(key: "k"), t0)], client: client, logger: logger)
            #expect(again.count == 1 && again[0] == nil)

            // Both t0 jobs go to two claims; then one job due at t0+5s, asked
            // for at t0 and at t0+10s: the later request gets it.
            let first = await PostgresJobQueue.claim([claim(t0), claim(t0)], client: client, logger: logger)
            #expect(try first.compactMap { try $0.get()?.id }.sorted() == [keyed[0].id, keyed[2].id].sorted())
            let later = try #require(try await PostgresJobQueue.enqueue([(Conformance.newJob(), t0 + 5_000)], client: client, logger: logger)[0]).job
            let matched = await PostgresJobQueue.claim([claim(t0), claim(t0 + 10_000)], client: client, logger: logger)
            #expect(try matched[0].get() == nil)
            #expect(try matched[1].get()?.id == later.id)
            #expect(try matched[1].get()?.startedAt == Date(millisecondsSince1970: t0 + 10_000))

            // Two type lists make two statements; the one PostgreSQL refuses
            // (a NUL byte in text) fails alone.
            let spare = try #require(try await PostgresJobQueue.enqueue([(Conformance.newJob(), t0)], client: client, logger: logger)[0]).job
            let request = claim(t0)
            let split = await PostgresJobQueue.claim([request, claim(t0, types: ["x\u{0}"])], client: client, logger: logger)
            let claimedSpare = try #require(try split[0].get())
            #expect(claimedSpare.id == spare.id)
            #expect(throws: (any Error).self) { try split[1].get() }

            // A job id twice makes two rounds; the second, refused, does not undo or fail the first.
            let lease = JobLease(jobID: spare.id, token: request.token, owner: request.owner)
            let ends = await PostgresJobQueue.succeed(
                [(lease, #"{"ok":true}"#, t0 + 1, t0 + 3_600_000), (lease, "\"\u{0}\"", t0 + 1, t0 + 3_600_000)], client: client, logger: logger)
            #expect(try ends[0].get()?.status == .succeeded)
            #expect(throws: (any Error).self) { try ends[1].get() }
            #expect(try await store.jobs.job(id: spare.id)?.resultJSON == #"{"ok":true}"#)
            #expect(try await store.events.events(jobID: spare.id, after: 0, limit: 10).map(\.type) == ["done"])
        }
        try await store.close()
    }
}
