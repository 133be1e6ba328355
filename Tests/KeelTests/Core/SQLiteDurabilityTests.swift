import Foundation
import KeelCore
import KeelSQLite
import Testing

/// `--sqlite-synchronous` reaches the connection that commits: GRDB's WAL
/// set-up once overrode it with NORMAL, so `full` was silently not in effect.
@Suite("SQLite durability knob")
struct SQLiteDurabilityTests {
    @Test("the writer runs with the chosen synchronous mode", arguments: [("normal", 1), ("full", 2)])
    func writerMode(mode: String, expected: Int) async throws {
        let directory = try TestEnvironment.directory("sqlite-sync")
        var options = SQLiteOptions()
        options.synchronous = mode
        let store = try SQLiteStore(path: directory.appendingPathComponent("keel.sqlite").path, options: options)
        let actual = try await store.withRunning {
            _ = try await store.migrate(logger: TestEnvironment.logger)
            return try await store.synchronousMode()
        }
        try await store.close()
        #expect(actual == expected)
    }

    @Test("the default is normal, as documented")
    func defaultMode() {
        #expect(SQLiteOptions().synchronous == "normal")
    }
}
