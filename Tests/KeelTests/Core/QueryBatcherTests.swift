import Foundation
import KeelCore
@testable import KeelPostgres
import Logging
import Synchronization
import Testing

/// `QueryBatcher` with a run of our own, so a statement can be made to hang.
@Suite("Query batching")
struct QueryBatcherTests {
    /// Holds back every fetch that asks for a "stuck…" id until opened.
    final class Gate: Sendable {
        private let state = Mutex<(open: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

        var isOpen: Bool { self.state.withLock { $0.open } }

        /// Statements held at the gate: sent, not merely holding a slot (a
        /// slot's first request takes the requests queued behind it until
        /// its statement starts).
        var waiting: Int { self.state.withLock { $0.waiters.count } }

        func wait() async {
            await withCheckedContinuation { continuation in
                let resume = self.state.withLock { state -> Bool in
                    if state.open { return true }
                    state.waiters.append(continuation)
                    return false
                }
                if resume { continuation.resume() }
            }
        }

        /// Opens the gate after `limit` unless the test did: should the
        /// batcher wait for the stuck statements after all, the test fails
        /// instead of hanging.
        func openLater(after limit: Duration = .seconds(30)) -> Task<Void, any Error> {
            Task {
                try await Task.sleep(for: limit)
                self.open()
            }
        }

        func open() {
            let waiters = self.state.withLock { state -> [CheckedContinuation<Void, Never>] in
                state.open = true
                defer { state.waiters = [] }
                return state.waiters
            }
            for waiter in waiters { waiter.resume() }
        }
    }

    static func session(_ id: String) -> Session {
        let t0 = Date(timeIntervalSince1970: 1_800_000_000)
        return Session(id: id, dataJSON: #"{"id":"\#(id)"}"#, version: 1, createdAt: t0, lastSeenAt: t0, expiresAt: t0.addingTimeInterval(3600))
    }

    @Test("lookups stop waiting behind stalled queries; the stalled ones still finish and give their slots back")
    func stalledQueries() async throws {
        let gate = Gate()
        let batcher = QueryBatcher<String, Session?>("lookups", maxInFlight: 2, stallAfter: .milliseconds(200), maxBatch: 256, logger: Logger(label: "test")) { ids in
            if ids.contains(where: { $0.hasPrefix("stuck") }) { await gate.wait() }
            return ids.map { $0.hasPrefix("missing") ? nil : Self.session($0) }
        }
        let safety = gate.openLater()
        defer { safety.cancel() }

        async let first = batcher.submit("stuck-1")
        async let second = batcher.submit("stuck-2")
        for _ in 0..<1000 where gate.waiting < 2 { try await Task.sleep(for: .milliseconds(10)) }

        // Both slots are taken by queries that never return: these wait,
        // then get a query of their own once the stall limit has passed.
        async let third = batcher.submit("fresh-1")
        async let fourth = batcher.submit("missing-1")
        let (fresh, missing) = try await (third, fourth)
        #expect(!gate.isOpen, "the lookups waited for the stuck queries to finish")
        #expect(fresh == Self.session("fresh-1"))
        #expect(missing == nil)

        gate.open()
        let (stuckFirst, stuckSecond) = try await (first, second)
        #expect(stuckFirst?.id == "stuck-1" && stuckSecond?.id == "stuck-2")

        // Full capacity afterwards: many lookups at once, each its own answer.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<200 {
                group.addTask {
                    let id = index.isMultiple(of: 5) ? "missing-\(index)" : "s-\(index % 20)"
                    let found = try await batcher.submit(id)
                    #expect(found == (id.hasPrefix("missing") ? nil : Self.session(id)))
                }
            }
            try await group.waitForAll()
        }
        // Every slot is given back (the last round frees its slot just after
        // resuming its lookups).
        for _ in 0..<100 where batcher.statementsCounted > 0 { try await Task.sleep(for: .milliseconds(10)) }
        #expect(batcher.statementsCounted == 0)
    }

    @Test("when stalled statements free several slots, the waiting requests take all of them at once")
    func everyFreedSlot() async throws {
        let stuck = Gate()
        let slow = Gate()
        let batcher = QueryBatcher<String, Session?>("lookups", maxInFlight: 2, stallAfter: .milliseconds(300), maxBatch: 1, logger: Logger(label: "test")) { ids in
            if ids.contains(where: { $0.hasPrefix("stuck") }) { await stuck.wait() }
            if ids.contains("slow") { await slow.wait() }
            return ids.map(Self.session)
        }
        let safety = [stuck.openLater(), slow.openLater()]
        defer { for task in safety { task.cancel() } }

        async let first = batcher.submit("stuck-1")
        async let second = batcher.submit("stuck-2")
        for _ in 0..<1000 where stuck.waiting < 2 { try await Task.sleep(for: .milliseconds(5)) }
        // Two requests wait behind the stuck statements, one batch each (maxBatch 1).
        async let third = batcher.submit("slow")
        async let fourth = batcher.submit("fresh")
        for _ in 0..<1000 where batcher.requestsWaiting < 2 { try await Task.sleep(for: .milliseconds(5)) }
        try #require(batcher.requestsWaiting == 2)
        // The stall frees both slots: both waiting requests leave the queue
        // together, so the fresh one does not wait behind the slow one.
        for _ in 0..<2000 where batcher.requestsWaiting == 2 { try await Task.sleep(for: .milliseconds(2)) }
        #expect(batcher.requestsWaiting == 0)
        #expect(try await fourth == Self.session("fresh"))
        #expect(!slow.isOpen)

        slow.open()
        stuck.open()
        let answers = try await [first, second, third]
        #expect(answers.map { $0?.id } == ["stuck-1", "stuck-2", "slow"])
    }

    @Test("requests that arrive while a statement runs share the next one, each with its own reply; a failing statement fails only its own")
    func sharing() async throws {
        let gate = Gate()
        let batches = Mutex<[[String]]>([])
        let batcher = QueryBatcher<String, Session?>("lookups", maxInFlight: 1, stallAfter: .seconds(60), maxBatch: 8, logger: Logger(label: "test")) { ids in
            batches.withLock { $0.append(ids) }
            if ids.contains(where: { $0.hasPrefix("stuck") }) { await gate.wait() }
            if ids.contains("poison") { throw KeelError(.storeUnavailable, "refused") }
            return ids.map { $0.hasPrefix("missing") ? nil : Self.session($0) }
        }
        let safety = gate.openLater()
        defer { safety.cancel() }

        async let stuck = batcher.submit("stuck")
        for _ in 0..<2000 where gate.waiting < 1 { try await Task.sleep(for: .milliseconds(5)) }
        // 20 requests wait; one of them makes its shared statement fail.
        let ids = (0..<19).map { $0.isMultiple(of: 4) ? "missing-\($0)" : "s-\($0)" } + ["poison"]
        let failed = try await withThrowingTaskGroup(of: String?.self) { group in
            for id in ids {
                group.addTask {
                    do {
                        let found = try await batcher.submit(id)
                        #expect(found == (id.hasPrefix("missing") ? nil : Self.session(id)))
                        return nil
                    } catch {
                        return id
                    }
                }
            }
            for _ in 0..<2000 where batcher.requestsWaiting < ids.count { try await Task.sleep(for: .milliseconds(5)) }
            try #require(batcher.requestsWaiting == ids.count)
            gate.open()
            return try await group.reduce(into: Set<String>()) { if let id = $1 { $0.insert(id) } }
        }
        #expect(try await stuck?.id == "stuck")
        // One statement for the first request, then batches of at most 8 for the 20 that waited.
        let shared = batches.withLock { Array($0.dropFirst()) }
        #expect(shared.count == 3 && shared.allSatisfy { $0.count <= 8 }, "\(shared)")
        #expect(shared.flatMap { $0 }.sorted() == ids.sorted())
        #expect(batcher.batchesRun == 4)
        // The failing statement failed exactly the requests it carried.
        let poisoned = try #require(shared.first { $0.contains("poison") })
        #expect(failed == Set(poisoned))
        for _ in 0..<100 where batcher.statementsCounted > 0 { try await Task.sleep(for: .milliseconds(10)) }
        #expect(batcher.statementsCounted == 0)
    }

    /// Runs every task given to it on one thread, one job at a time, in order:
    /// what interleaves is then fixed, not left to the scheduler.
    final class SerialExecutor: TaskExecutor {
        private let queue = DispatchQueue(label: "keel.tests.serial")

        func enqueue(_ job: consuming ExecutorJob) {
            let job = UnownedJob(job)
            self.queue.async { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
        }
    }

    @Test("requests made together share a statement even when none is running: the first lets the others queue behind it")
    func gathering() async throws {
        let batches = Mutex<[Int]>([])
        let batcher = QueryBatcher<String, Session?>("lookups", maxInFlight: 1, stallAfter: .seconds(60), maxBatch: 64, logger: Logger(label: "test")) { ids in
            batches.withLock { $0.append(ids.count) }
            return ids.map { Self.session($0) }
        }
        let ids = (0..<32).map { "s-\($0)" }
        // On one thread, each request would otherwise find the slot free and run alone: 32 statements.
        try await withTaskExecutorPreference(SerialExecutor()) {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for id in ids {
                    group.addTask {
                        let found = try await batcher.submit(id)
                        #expect(found == Self.session(id))
                    }
                }
                try await group.waitForAll()
            }
        }
        #expect(batches.withLock { $0 } == [ids.count])
    }

    @Test("the first request's cancellation does not fail the requests that share its statement")
    func leaderCancelled() async throws {
        let gate = Gate()
        let batches = Mutex<[[String]]>([])
        let batcher = QueryBatcher<String, Session?>("lookups", maxInFlight: 1, stallAfter: .seconds(60), maxBatch: 64, logger: Logger(label: "test")) { ids in
            batches.withLock { $0.append(ids) }
            await gate.wait()
            // As postgres-nio does when it leases a connection.
            try Task.checkCancellation()
            return ids.map { Self.session($0) }
        }
        let safety = gate.openLater()
        defer { safety.cancel() }
        // On one thread, in order: the first takes the slot and yields, the others queue behind it.
        // The tasks are made from the executor's own thread, so none starts before all are queued.
        let executor = SerialExecutor()
        let (first, others) = await withTaskExecutorPreference(executor) {
            let first = Task(executorPreference: executor) { try await batcher.submit("first") }
            let others = (0..<5).map { index in Task(executorPreference: executor) { try await batcher.submit("other-\(index)") } }
            return (first, others)
        }
        for _ in 0..<2000 where gate.waiting < 1 { try await Task.sleep(for: .milliseconds(5)) }
        try #require(batches.withLock { $0 } == [["first"] + (0..<5).map { "other-\($0)" }])

        first.cancel()
        gate.open()
        for (index, other) in others.enumerated() {
            #expect(try await other.value == Self.session("other-\(index)"))
        }
        _ = try? await first.value
    }
}
