import Foundation
import KeelCore
@testable import KeelPostgres
import Logging
import Synchronization
import Testing

/// `SessionReadBatcher` with a fetch of our own, so a query can be made to hang.
@Suite("Session read batching")
struct SessionReadBatcherTests {
    /// Holds back every fetch that asks for a "stuck…" id until opened.
    final class Gate: Sendable {
        private let state = Mutex<(open: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

        var isOpen: Bool { self.state.withLock { $0.open } }

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
        let batcher = SessionReadBatcher(maxInFlight: 2, stallAfter: .milliseconds(200), logger: Logger(label: "test")) { ids in
            if ids.contains(where: { $0.hasPrefix("stuck") }) { await gate.wait() }
            return ids.filter { !$0.hasPrefix("missing") }.map(Self.session)
        }
        // Should the batcher wait for the stuck queries after all, the test
        // fails below instead of hanging.
        let safety = Task {
            try await Task.sleep(for: .seconds(30))
            gate.open()
        }
        defer { safety.cancel() }

        async let first = batcher.session(id: "stuck-1")
        async let second = batcher.session(id: "stuck-2")
        while batcher.queriesCounted < 2 { try await Task.sleep(for: .milliseconds(10)) }

        // Both slots are taken by queries that never return: these wait,
        // then get a query of their own once the stall limit has passed.
        async let third = batcher.session(id: "fresh-1")
        async let fourth = batcher.session(id: "missing-1")
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
                    let found = try await batcher.session(id: id)
                    #expect(found == (id.hasPrefix("missing") ? nil : Self.session(id)))
                }
            }
            try await group.waitForAll()
        }
        // Every slot is given back (the last round frees its slot just after
        // resuming its lookups).
        for _ in 0..<100 where batcher.queriesCounted > 0 { try await Task.sleep(for: .milliseconds(10)) }
        #expect(batcher.queriesCounted == 0)
    }
}
