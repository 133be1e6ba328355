import Foundation
import KeelCore
import Logging
import PostgresNIO
import Synchronization

/// Runs one kind of statement for many callers: a request that arrives
/// while `maxInFlight` statements of its kind are already running waits and
/// shares the next one with every request that queued meanwhile (at most
/// `maxBatch`). Session lookups share `SELECT … WHERE id = ANY($1)`; job
/// enqueues, claims and completions share one multi-row statement each.
///
/// This is not a cache. A request joins only a batch that has not been sent
/// yet, so its statement starts after the request did and sees every write
/// committed before it. When fewer than `maxInFlight` requests run, a request
/// takes a slot and runs inline after one `Task.yield()` (the requests made
/// during it share its statement), with no other wait; under load the waiting ones ride
/// on a single round trip instead of a pooled connection each, which is
/// where the time of a short PostgreSQL statement goes (leasing a
/// connection, two event-loop hops and a wake-up per statement on our side;
/// parsing the message, binding and committing on the server's; measured in
/// docs/benchmarks.md).
///
/// A statement still running after `stallAfter` (a connection gone silent,
/// say) stops counting against `maxInFlight`, so the requests behind it get
/// a statement of their own instead of waiting for it; it finishes on its own.
final class QueryBatcher<Request: Sendable, Reply: Sendable>: Sendable {
    /// Runs one batch: one reply per request, in the requests' order.
    typealias Run = @Sendable (_ requests: [Request]) async throws -> [Reply]

    private struct Waiter {
        let request: Request
        let continuation: CheckedContinuation<Reply, any Error>
    }

    private struct State {
        /// The statements holding a slot, by slot number, with when each started.
        var running: [UInt64: ContinuousClock.Instant] = [:]
        var lastSlot: UInt64 = 0
        var pending: [Waiter] = []
        var watching = false

        mutating func open(at now: ContinuousClock.Instant) -> UInt64 {
            self.lastSlot &+= 1
            self.running[self.lastSlot] = now
            return self.lastSlot
        }

        /// Takes the next batch (at most `limit` waiters).
        mutating func take(limit: Int) -> [Waiter] {
            if self.pending.count <= limit {
                defer { self.pending.removeAll(keepingCapacity: true) }
                return self.pending
            }
            defer { self.pending.removeFirst(limit) }
            return Array(self.pending.prefix(limit))
        }

        /// Frees the slots of statements running for longer than `stallAfter`.
        mutating func releaseStalled(now: ContinuousClock.Instant, stallAfter: Duration) -> Int {
            let stalled = self.running.filter { now - $0.value > stallAfter }.map(\.key)
            for slot in stalled { self.running[slot] = nil }
            return stalled.count
        }
    }

    private let state = Mutex(State())
    private let statementCount = Atomic<Int>(0)
    private let runBatch: Run
    private let logger: Logger
    /// What the statements do, for the log ("session lookups", "job claims").
    let name: String
    let maxInFlight: Int
    let maxBatch: Int
    let stallAfter: Duration

    init(_ name: String, maxInFlight: Int, stallAfter: Duration, maxBatch: Int, logger: Logger, run: @escaping Run) {
        precondition(maxInFlight >= 1 && maxBatch >= 1 && stallAfter > .zero)
        self.name = name
        self.maxInFlight = maxInFlight
        self.stallAfter = stallAfter
        self.maxBatch = maxBatch
        self.logger = logger
        self.runBatch = run
    }

    /// Statements holding a slot (for tests).
    var statementsCounted: Int { self.state.withLock { $0.running.count } }

    /// Requests waiting for a slot (for tests).
    var requestsWaiting: Int { self.state.withLock { $0.pending.count } }

    /// Batches run so far, alone or shared (for tests).
    var batchesRun: Int { self.statementCount.load(ordering: .relaxed) }

    func submit(_ request: Request) async throws -> Reply {
        let now = ContinuousClock.now
        let slot = self.state.withLock { state -> UInt64? in
            guard state.running.count < self.maxInFlight else { return nil }
            return state.open(at: now)
        }
        if let slot {
            defer { self.finishRound(slot) }
            // Let the tasks that are ready to run go first: requests made
            // together (the workers a shared claim just answered, coming
            // back for their next job) then queue behind this slot and
            // share this statement, instead of this one running alone and
            // the rest sharing the next. With nothing else to run, the
            // yield returns at once.
            await Task.yield()
            let others = self.state.withLock { $0.take(limit: self.maxBatch - 1) }
            if others.isEmpty { return try await self.runAlone(request) }
            // The statement carries other callers' requests, so it runs in a
            // task of its own, with this request as one of its waiters: this
            // caller's cancellation (which postgres-nio checks when it leases
            // a connection) must not fail the others.
            return try await withCheckedThrowingContinuation { continuation in
                let batch = [Waiter(request: request, continuation: continuation)] + others
                Task { await self.run(batch) }
            }
        }
        return try await withCheckedThrowingContinuation { continuation in
            let (batch, watch) = self.state.withLock { state -> ((UInt64, [Waiter])?, Bool) in
                state.pending.append(Waiter(request: request, continuation: continuation))
                // A slot may have freed between the two locks.
                if state.running.count < self.maxInFlight {
                    return ((state.open(at: now), state.take(limit: self.maxBatch)), false)
                }
                guard !state.watching else { return (nil, false) }
                state.watching = true
                return (nil, true)
            }
            if let (slot, batch) = batch {
                Task { await self.runRounds(batch, slot: slot) }
            }
            if watch {
                Task { await self.watchForStalls() }
            }
        }
    }

    private func runAlone(_ request: Request) async throws -> Reply {
        self.statementCount.add(1, ordering: .relaxed)
        let replies = try await self.runBatch([request])
        guard replies.count == 1 else { throw self.miscounted(replies.count, requests: 1) }
        return replies[0]
    }

    /// Ends a leader's statement: hands its slot to the requests that queued meanwhile, or frees it.
    private func finishRound(_ slot: UInt64) {
        if let next = self.nextBatch(slot) {
            Task { await self.runRounds(next, slot: slot) }
        }
    }

    /// The next batch for `slot`, which keeps it; or nil, and the slot is
    /// freed (or had already been, as stalled).
    private func nextBatch(_ slot: UInt64) -> [Waiter]? {
        let now = ContinuousClock.now
        return self.state.withLock { state -> [Waiter]? in
            guard state.running[slot] != nil else { return nil }
            guard !state.pending.isEmpty else {
                state.running[slot] = nil
                return nil
            }
            state.running[slot] = now
            return state.take(limit: self.maxBatch)
        }
    }

    private func runRounds(_ first: [Waiter], slot: UInt64) async {
        var batch = first
        while true {
            await self.run(batch)
            guard let next = self.nextBatch(slot) else { return }
            batch = next
        }
    }

    /// Runs while requests wait and every slot is taken: when the oldest
    /// statement has run for `stallAfter`, frees the slots of the stalled
    /// ones and sends the waiting requests a statement of their own.
    private func watchForStalls() async {
        while true {
            let deadline = self.state.withLock { state -> ContinuousClock.Instant? in
                guard !state.pending.isEmpty, state.running.count >= self.maxInFlight, let oldest = state.running.values.min() else {
                    state.watching = false
                    return nil
                }
                return oldest + self.stallAfter
            }
            guard let deadline else { return }
            try? await Task.sleep(until: deadline + .milliseconds(1), clock: .continuous)
            let now = ContinuousClock.now
            // Every freed slot takes a batch of the waiting requests.
            let (released, batches) = self.state.withLock { state -> (Int, [(UInt64, [Waiter])]) in
                let released = state.releaseStalled(now: now, stallAfter: self.stallAfter)
                var batches: [(UInt64, [Waiter])] = []
                while !state.pending.isEmpty, state.running.count < self.maxInFlight {
                    batches.append((state.open(at: now), state.take(limit: self.maxBatch)))
                }
                return (released, batches)
            }
            if released > 0 {
                self.logger.warning(
                    "\(self.name): statements running longer than the stall limit no longer hold back the others",
                    metadata: ["keel.stalled_statements": "\(released)", "keel.stall_after": "\(self.stallAfter)"]
                )
            }
            for (slot, batch) in batches {
                Task { await self.runRounds(batch, slot: slot) }
            }
        }
    }

    private func run(_ batch: [Waiter]) async {
        self.statementCount.add(1, ordering: .relaxed)
        do {
            let replies = try await self.runBatch(batch.map(\.request))
            guard replies.count == batch.count else { throw self.miscounted(replies.count, requests: batch.count) }
            for (waiter, reply) in zip(batch, replies) {
                waiter.continuation.resume(returning: reply)
            }
        } catch {
            for waiter in batch {
                waiter.continuation.resume(throwing: error)
            }
        }
    }

    private func miscounted(_ replies: Int, requests: Int) -> KeelError {
        KeelError(.internalError, "\(self.name): a batch of \(requests) got \(replies) replies")
    }
}
