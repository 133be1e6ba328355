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
final class SessionReadBatcher: Sendable {
    private struct Waiter {
        let id: String
        let continuation: CheckedContinuation<Session?, any Error>
    }

    private struct State {
        var inFlight = 0
        var pending: [Waiter] = []

        /// Takes the next batch (at most `limit` waiters) and keeps the slot.
        mutating func take(limit: Int) -> [Waiter] {
            if self.pending.count <= limit {
                defer { self.pending.removeAll(keepingCapacity: true) }
                return self.pending
            }
            defer { self.pending.removeFirst(limit) }
            return Array(self.pending.prefix(limit))
        }
    }

    private let state = Mutex(State())
    private let client: PostgresClient
    private let logger: Logger
    let maxInFlight: Int
    let maxBatch: Int

    init(client: PostgresClient, logger: Logger, maxInFlight: Int, maxBatch: Int = 256) {
        precondition(maxInFlight >= 1 && maxBatch >= 1)
        self.client = client
        self.logger = logger
        self.maxInFlight = maxInFlight
        self.maxBatch = maxBatch
    }

    func session(id: String) async throws -> Session? {
        let lead = self.state.withLock { state -> Bool in
            guard state.inFlight < self.maxInFlight else { return false }
            state.inFlight += 1
            return true
        }
        if lead {
            defer { self.finishRound() }
            return try await self.fetchOne(id)
        }
        return try await withCheckedThrowingContinuation { continuation in
            let batch = self.state.withLock { state -> [Waiter]? in
                state.pending.append(Waiter(id: id, continuation: continuation))
                // A slot may have freed between the two locks.
                guard state.inFlight < self.maxInFlight else { return nil }
                state.inFlight += 1
                return state.take(limit: self.maxBatch)
            }
            if let batch {
                Task { await self.runRounds(batch) }
            }
        }
    }

    /// Ends a round: hands the slot to the lookups that queued meanwhile, or frees it.
    private func finishRound() {
        if let next = self.nextBatch() {
            Task { await self.runRounds(next) }
        }
    }

    private func nextBatch() -> [Waiter]? {
        self.state.withLock { state -> [Waiter]? in
            guard !state.pending.isEmpty else {
                state.inFlight -= 1
                return nil
            }
            return state.take(limit: self.maxBatch)
        }
    }

    private func runRounds(_ first: [Waiter]) async {
        var batch = first
        while true {
            await self.fetch(batch)
            guard let next = self.nextBatch() else { return }
            batch = next
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
            if ids.count == 1 {
                if let session = try await self.fetchOne(ids[0]) { found[session.id] = session }
            } else {
                for try await session in try await self.client.execute(SessionsByIDs(ids: ids), logger: self.logger) {
                    found[session.id] = session
                }
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

    private func fetchOne(_ id: String) async throws -> Session? {
        var session: Session?
        for try await row in try await self.client.execute(SessionByID(id: id), logger: self.logger) {
            session = row
        }
        return session
    }
}

/// `GET /api/session`'s lookup, prepared once per connection.
struct SessionByID: PostgresPreparedStatement {
    static let sql = "SELECT id, data, version, created_at, last_seen_at, expires_at FROM keel_sessions WHERE id = $1"
    typealias Row = Session

    var id: String

    func makeBindings() throws -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 1)
        bindings.append(self.id)
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> Session {
        try Session(sessionRow: row)
    }
}

/// The batched lookup of ``SessionReadBatcher``.
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
