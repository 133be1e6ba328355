import GRDB
import KeelCore
import Synchronization

/// Group commit for the writes a busy process makes many of at once
/// (claims, completions, enqueues): a write that arrives while another is
/// in its transaction waits and shares the next transaction with every
/// other write that arrived meanwhile, each in a savepoint of its own.
///
/// SQLite has one writer, so these writes queue anyway; what sharing saves
/// is the per-transaction cost: the hop to GRDB's writer queue and back,
/// the file locks, and the commit's WAL write, which rewrites whole pages
/// (the jobs table and its indexes) that neighbouring rows share.
///
/// Each write still sees the effect of every write before it, commits or
/// fails on its own terms (a failing one rolls back only its savepoint; a
/// failed commit fails all of that transaction's writes, none of which then
/// happened), and returns only after its transaction committed. A write
/// with nothing in flight runs at once, alone, with no added wait.
final class SQLiteWriteBatcher: Sendable {
    private struct Item: Sendable {
        /// Runs the write inside the shared transaction and keeps its outcome.
        let run: @Sendable (Database) -> Void
        /// Resumes the caller after the transaction: with the kept outcome,
        /// or with the commit's error.
        let finish: @Sendable ((any Error)?) -> Void
    }

    private struct State {
        var inFlight = false
        var pending: [Item] = []
    }

    private let state = Mutex(State())
    private let pool: DatabasePool
    let maxBatch: Int

    init(pool: DatabasePool, maxBatch: Int = 64) {
        precondition(maxBatch >= 1)
        self.pool = pool
        self.maxBatch = maxBatch
    }

    func write<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        let alone = self.state.withLock { state -> Bool in
            guard !state.inFlight else { return false }
            state.inFlight = true
            return true
        }
        if alone {
            // The writes that queued meanwhile get the next round.
            defer { if self.moreRounds() { Task { await self.runRounds() } } }
            return try await self.pool.write(body)
        }
        return try await withCheckedThrowingContinuation { continuation in
            let outcome = Outcome<T>()
            let item = Item(
                run: { db in
                    do {
                        var value: T?
                        try db.inSavepoint {
                            value = try body(db)
                            return .commit
                        }
                        outcome.value.withLock { $0 = .success(value!) }
                    } catch {
                        outcome.value.withLock { $0 = .failure(error) }
                    }
                },
                finish: { commitError in
                    if let commitError {
                        continuation.resume(throwing: commitError)
                    } else {
                        continuation.resume(with: outcome.value.withLock { $0 } ?? .failure(CancellationError()))
                    }
                }
            )
            let start = self.state.withLock { state -> Bool in
                state.pending.append(item)
                // The transaction in flight may have ended between the two locks.
                guard !state.inFlight else { return false }
                state.inFlight = true
                return true
            }
            if start { Task { await self.runRounds() } }
        }
    }

    /// Whether writes are waiting for another round; when none is, nothing
    /// is in flight any more.
    private func moreRounds() -> Bool {
        self.state.withLock { state in
            if state.pending.isEmpty { state.inFlight = false }
            return !state.pending.isEmpty
        }
    }

    private func runRounds() async {
        while true {
            let batch = self.state.withLock { state -> [Item] in
                let count = min(state.pending.count, self.maxBatch)
                defer { state.pending.removeFirst(count) }
                return Array(state.pending.prefix(count))
            }
            if !batch.isEmpty {
                do {
                    try await self.pool.write { db in
                        for item in batch { item.run(db) }
                    }
                    for item in batch { item.finish(nil) }
                } catch {
                    for item in batch { item.finish(error) }
                }
            }
            if !self.moreRounds() { return }
        }
    }
}

/// Where a batched write keeps its result until its transaction commits.
private final class Outcome<T: Sendable>: Sendable {
    let value = Mutex<Result<T, any Error>?>(nil)
}
