import Foundation
import GRDB
@testable import KeelSQLite
import Synchronization
import Testing

/// `SQLiteWriteBatcher` (group commit) on a real SQLite file.
@Suite("SQLite write batching")
struct SQLiteWriteBatcherTests {
    struct Refused: Error, Equatable {
        let id: Int
    }

    static func pool() throws -> DatabasePool {
        let directory = try TestEnvironment.directory("write-batcher")
        var configuration = Configuration()
        configuration.journalMode = .wal
        let pool = try DatabasePool(path: directory.appendingPathComponent("batcher.sqlite").path, configuration: configuration)
        try pool.write { db in try db.execute(sql: "CREATE TABLE t (id INTEGER PRIMARY KEY)") }
        return pool
    }

    @Test("writes queued behind a transaction share the next one; a failing write rolls back alone")
    func sharedTransactions() async throws {
        let pool = try Self.pool()
        let batcher = SQLiteWriteBatcher(pool: pool)
        let holding = Atomic<Bool>(false)
        // The first write holds the writer while the others arrive.
        async let first: Date = batcher.write { db in
            try db.execute(sql: "INSERT INTO t (id) VALUES (0)")
            holding.store(true, ordering: .releasing)
            Thread.sleep(forTimeInterval: 0.3)
            return try db.transactionDate
        }
        while !holding.load(ordering: .acquiring) { try await Task.sleep(for: .milliseconds(5)) }
        let outcomes = await withTaskGroup(of: (Int, Result<Date, any Error>).self) { group in
            for id in 1...20 {
                group.addTask {
                    do {
                        return (id, .success(try await batcher.write { db in
                            try db.execute(sql: "INSERT INTO t (id) VALUES (?)", arguments: [id])
                            // Every fourth write fails after its insert.
                            if id % 4 == 0 { throw Refused(id: id) }
                            return try db.transactionDate
                        }))
                    } catch {
                        return (id, .failure(error))
                    }
                }
            }
            return await group.reduce(into: [Int: Result<Date, any Error>]()) { $0[$1.0] = $1.1 }
        }
        let firstDate = try await first
        var transactions = Set<Date>()
        for id in 1...20 {
            switch try #require(outcomes[id]) {
            case .success(let date):
                #expect(id % 4 != 0)
                #expect(date != firstDate, "write \(id) ran in the held transaction")
                transactions.insert(date)
            case .failure(let error):
                #expect(error as? Refused == Refused(id: id))
            }
        }
        // Twenty writes queued behind one transaction: far fewer than twenty transactions.
        #expect(transactions.count <= 3, "\(transactions.count) transactions for 15 queued writes")
        let stored = try await pool.read { db in try Int.fetchAll(db, sql: "SELECT id FROM t ORDER BY id") }
        #expect(stored == [0] + (1...20).filter { $0 % 4 != 0 })
    }

    @Test("a write with nothing in flight runs at once, and its error reaches the caller")
    func aloneWrites() async throws {
        let pool = try Self.pool()
        let batcher = SQLiteWriteBatcher(pool: pool)
        let id = try await batcher.write { db -> Int64 in
            try db.execute(sql: "INSERT INTO t (id) VALUES (7)")
            return db.lastInsertedRowID
        }
        #expect(id == 7)
        await #expect(throws: Refused(id: 8)) {
            try await batcher.write { db in
                try db.execute(sql: "INSERT INTO t (id) VALUES (8)")
                throw Refused(id: 8)
            }
        }
        // A constraint violation fails only its own write.
        await #expect(throws: DatabaseError.self) {
            try await batcher.write { db in try db.execute(sql: "INSERT INTO t (id) VALUES (7)") }
        }
        let stored = try await pool.read { db in try Int.fetchAll(db, sql: "SELECT id FROM t ORDER BY id") }
        #expect(stored == [7])
    }
}
