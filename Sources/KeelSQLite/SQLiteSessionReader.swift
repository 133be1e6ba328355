import Foundation
import GRDBSQLite
import KeelCore
import Synchronization

/// Reads one session by id on the calling thread through a few read-only
/// SQLite connections of its own.
///
/// `GET /api/session` is Keel's hottest path and must read the store every
/// time (no per-process cache may serve stale data). Through GRDB's pool the
/// read costs several thread hand-offs, which measured ~4× the query itself;
/// here it is a mutex, a bind and a step on a prepared statement. Every
/// other query goes through GRDB.
final class SQLiteSessionReader: Sendable {
    private let slots: [Slot]
    private let next = Atomic<Int>(0)

    /// One connection and its prepared statement, used by one thread at a time.
    private final class Slot: Sendable {
        let state = Mutex<Connection>(Connection())
    }

    private struct Connection {
        var database: OpaquePointer?
        var statement: OpaquePointer?
    }

    private let path: String
    private let busyTimeoutMilliseconds: Int32

    static let query = "SELECT id, data, version, created_at, last_seen_at, expires_at FROM keel_sessions WHERE id = ?"

    init(path: String, connections: Int = 4, busyTimeout: Duration) {
        self.path = path
        self.busyTimeoutMilliseconds = Int32(clamping: Int64(busyTimeout.timeInterval * 1000))
        self.slots = (0..<max(1, connections)).map { _ in Slot() }
    }

    func session(id: String) throws -> Session? {
        let index = self.next.wrappingAdd(1, ordering: .relaxed).oldValue
        let slot = self.slots[abs(index % self.slots.count)]
        return try slot.state.withLock { connection in
            try self.prepare(&connection)
            guard let statement = connection.statement else { return nil }
            defer {
                sqlite3_reset(statement)
                sqlite3_clear_bindings(statement)
            }
            let bound = id.withCString { sqlite3_bind_text(statement, 1, $0, -1, SQLITE_TRANSIENT_KEEL) }
            try self.check(bound, connection.database)
            switch sqlite3_step(statement) {
            case SQLITE_ROW:
                return Session(
                    id: Self.text(statement, 0),
                    dataJSON: Self.text(statement, 1),
                    version: sqlite3_column_int64(statement, 2),
                    createdAt: Date(millisecondsSince1970: sqlite3_column_int64(statement, 3)),
                    lastSeenAt: Date(millisecondsSince1970: sqlite3_column_int64(statement, 4)),
                    expiresAt: Date(millisecondsSince1970: sqlite3_column_int64(statement, 5))
                )
            case SQLITE_DONE:
                return nil
            case let code:
                try self.check(code, connection.database)
                return nil
            }
        }
    }

    func close() {
        for slot in self.slots {
            slot.state.withLock { connection in
                sqlite3_finalize(connection.statement)
                sqlite3_close_v2(connection.database)
                connection = Connection()
            }
        }
    }

    private func prepare(_ connection: inout Connection) throws {
        if connection.statement != nil { return }
        var database: OpaquePointer?
        let opened = sqlite3_open_v2(self.path, &database, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, nil)
        guard opened == SQLITE_OK, let database else {
            sqlite3_close_v2(database)
            throw KeelError.storeUnavailable(SQLiteFailure(code: opened, message: "cannot open \(self.path) for reading"))
        }
        sqlite3_busy_timeout(database, self.busyTimeoutMilliseconds)
        var statement: OpaquePointer?
        let prepared = sqlite3_prepare_v3(database, Self.query, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &statement, nil)
        guard prepared == SQLITE_OK, let statement else {
            let message = String(cString: sqlite3_errmsg(database))
            sqlite3_close_v2(database)
            throw KeelError.storeUnavailable(SQLiteFailure(code: prepared, message: message))
        }
        connection.database = database
        connection.statement = statement
    }

    private func check(_ code: Int32, _ database: OpaquePointer?) throws {
        guard code != SQLITE_OK && code != SQLITE_ROW && code != SQLITE_DONE else { return }
        let message = database.map { String(cString: sqlite3_errmsg($0)) } ?? "error \(code)"
        throw KeelError.storeUnavailable(SQLiteFailure(code: code, message: message))
    }

    private static func text(_ statement: OpaquePointer, _ column: Int32) -> String {
        guard let bytes = sqlite3_column_text(statement, column) else { return "" }
        return String(cString: bytes)
    }
}

/// An SQLite result code and message, for logs.
struct SQLiteFailure: Error, CustomStringConvertible {
    var code: Int32
    var message: String
    var description: String { "SQLite error \(self.code): \(self.message)" }
}

/// `SQLITE_TRANSIENT`: SQLite copies the bound text before the call returns.
let SQLITE_TRANSIENT_KEEL = unsafeBitCast(-1, to: sqlite3_destructor_type.self)
