import Foundation
import KeelCore
import Logging
import PostgresNIO
import Synchronization

/// Session lookups (`GET /api/session` and every authenticated request) that
/// arrive while `maxInFlight` queries are already running share the next
/// query: `SELECT … WHERE id = ANY($1)`.
///
/// This is not a cache. A lookup joins only a batch that has not been sent
/// yet, so its query starts after the lookup did and sees every write
/// committed before it. When fewer than `maxInFlight` lookups run, each one
/// queries alone, inline, with no added wait; under load the waiting ones
/// ride on a single round trip instead of a pooled connection each, which is
/// where the time of a PostgreSQL session read goes (leasing a connection,
/// two event-loop hops and a wake-up per query; measured in
/// docs/benchmarks.md).
///
/// A query still running after `stallAfter` (a connection gone silent, say)
/// stops counting against `maxInFlight`, so the lookups behind it get a
/// query of their own instead of waiting for it; it finishes on its own.
final class SessionReadBatcher: Sendable {
    /// Looks up sessions by id (distinct ids, at least one).
    typealias Fetch = @Sendable (_ ids: [String]) async throws -> [Session]

    private struct Waiter {
        let id: String
        let continuation: CheckedContinuation<Session?, any Error>
    }

    private struct State {
        /// The queries holding a slot, by slot number, with when each started.
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

        /// Frees the slots of queries running for longer than `stallAfter`.
        mutating func releaseStalled(now: ContinuousClock.Instant, stallAfter: Duration) -> Int {
            let stalled = self.running.filter { now - $0.value > stallAfter }.map(\.key)
            for slot in stalled { self.running[slot] = nil }
            return stalled.count
        }
    }

    private let state = Mutex(State())
    private let fetchSessions: Fetch
    private let logger: Logger
    let maxInFlight: Int
    let maxBatch: Int
    let stallAfter: Duration

    init(maxInFlight: Int, stallAfter: Duration, maxBatch: Int = 256, logger: Logger, fetch: @escaping Fetch) {
        precondition(maxInFlight >= 1 && maxBatch >= 1 && stallAfter > .zero)
        self.maxInFlight = maxInFlight
        self.stallAfter = stallAfter
        self.maxBatch = maxBatch
        self.logger = logger
        self.fetchSessions = fetch
    }

    convenience init(client: PostgresClient, logger: Logger, maxInFlight: Int, stallAfter: Duration) {
        self.init(maxInFlight: maxInFlight, stallAfter: stallAfter, logger: logger) { ids in
            var sessions: [Session] = []
            for try await session in try await client.execute(SessionsByIDs(ids: ids), logger: logger) {
                sessions.append(session)
            }
            return sessions
        }
    }

    /// Queries holding a slot (for tests).
    var queriesCounted: Int { self.state.withLock { $0.running.count } }

    func session(id: String) async throws -> Session? {
        let now = ContinuousClock.now
        let slot = self.state.withLock { state -> UInt64? in
            guard state.running.count < self.maxInFlight else { return nil }
            return state.open(at: now)
        }
        if let slot {
            defer { self.finishRound(slot) }
            return try await self.fetchSessions([id]).first { $0.id == id }
        }
        return try await withCheckedThrowingContinuation { continuation in
            let (batch, watch) = self.state.withLock { state -> ((UInt64, [Waiter])?, Bool) in
                state.pending.append(Waiter(id: id, continuation: continuation))
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

    /// Ends a leader's query: hands its slot to the lookups that queued meanwhile, or frees it.
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
            await self.fetch(batch)
            guard let next = self.nextBatch(slot) else { return }
            batch = next
        }
    }

    /// Runs while lookups wait and every slot is taken: when the oldest
    /// query has run for `stallAfter`, frees the slots of the stalled ones
    /// and sends the waiting lookups a query of their own.
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
            let (released, batch) = self.state.withLock { state -> (Int, (UInt64, [Waiter])?) in
                let released = state.releaseStalled(now: now, stallAfter: self.stallAfter)
                guard !state.pending.isEmpty, state.running.count < self.maxInFlight else { return (released, nil) }
                return (released, (state.open(at: now), state.take(limit: self.maxBatch)))
            }
            if released > 0 {
                self.logger.warning(
                    "session lookups: queries running longer than the stall limit no longer hold back the others",
                    metadata: ["keel.stalled_queries": "\(released)", "keel.stall_after": "\(self.stallAfter)"]
                )
            }
            if let (slot, batch) = batch {
                Task { await self.runRounds(batch, slot: slot) }
            }
        }
    }

    private func fetch(_ batch: [Waiter]) async {
        var ids: [String] = []
        ids.reserveCapacity(batch.count)
        var seen = Set<String>()
        for waiter in batch where seen.insert(waiter.id).inserted {
            ids.append(waiter.id)
        }
        do {
            var found: [String: Session] = [:]
            for session in try await self.fetchSessions(ids) {
                found[session.id] = session
            }
            for waiter in batch {
                waiter.continuation.resume(returning: found[waiter.id])
            }
        } catch {
            for waiter in batch {
                waiter.continuation.resume(throwing: error)
            }
        }
    }
}

/// The session lookup of ``SessionReadBatcher``, one id or many, prepared
/// once per connection.
struct SessionsByIDs: PostgresPreparedStatement {
    static let sql = "SELECT id, data, version, created_at, last_seen_at, expires_at FROM keel_sessions WHERE id = ANY($1)"
    typealias Row = Session

    var ids: [String]

    func makeBindings() throws -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 1)
        bindings.append(self.ids)
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> Session {
        try Session(sessionRow: row)
    }
}

extension Session {
    /// A row of `SELECT id, data, version, created_at, last_seen_at, expires_at FROM keel_sessions`.
    init(sessionRow row: PostgresRow) throws {
        let (id, data, version, created, lastSeen, expires) = try row.decode((String, String, Int64, Int64, Int64, Int64).self)
        self.init(
            id: id,
            dataJSON: data,
            version: version,
            createdAt: Date(millisecondsSince1970: created),
            lastSeenAt: Date(millisecondsSince1970: lastSeen),
            expiresAt: Date(millisecondsSince1970: expires)
        )
    }
}
