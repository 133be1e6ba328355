import Foundation
import GRDB
import KeelCore
import KeelPostgres
import KeelSQLite
import Logging
import PostgresNIO
import Testing

/// The store drivers a test can run against: SQLite always, PostgreSQL when
/// `KEEL_TEST_POSTGRES_URL` points at a server the tests may create databases on.
enum Driver: String, CaseIterable, CustomTestStringConvertible, Sendable {
    case sqlite
    case postgres

    /// Every driver: a PostgreSQL case without `KEEL_TEST_POSTGRES_URL` is
    /// reported as skipped (cancelled, saying why), never silently left out.
    static var available: [Driver] { Driver.allCases }

    var testDescription: String { self.rawValue }
}

enum TestEnvironment {
    static var postgresURL: String? {
        ProcessInfo.processInfo.environment["KEEL_TEST_POSTGRES_URL"].flatMap { $0.isEmpty ? nil : $0 }
    }

    /// Where a test's files go (stores, upload bytes, server logs): one directory
    /// per test run, `KEEL_TEST_SCRATCH` when set. `scripts/test` sets it, removes it
    /// after a passing run and names it after a failing one.
    static let scratch: URL = {
        let configured = ProcessInfo.processInfo.environment["KEEL_TEST_SCRATCH"].flatMap { $0.isEmpty ? nil : URL(fileURLWithPath: $0) }
        return configured ?? FileManager.default.temporaryDirectory.appendingPathComponent("keel-tests-\(ProcessInfo.processInfo.processIdentifier)")
    }()

    /// A new, empty directory under ``scratch`` named `prefix-<uuid>`.
    static func directory(_ prefix: String) throws -> URL {
        let directory = self.scratch.appendingPathComponent("\(prefix)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        return directory
    }

    static let logger: Logger = {
        var logger = Logger(label: "keel-test")
        logger.logLevel = .warning
        return logger
    }()
}

/// A fresh, empty place for a store: a new SQLite file in a temporary
/// directory, or a new database on the test PostgreSQL server.
struct StoreFixture: Sendable {
    let driver: Driver
    let location: StoreLocation
    let directory: URL

    static func make(_ driver: Driver) async throws -> StoreFixture {
        let directory = try TestEnvironment.directory("store")
        switch driver {
        case .sqlite:
            return StoreFixture(driver: driver, location: .sqlite(path: directory.appendingPathComponent("keel.sqlite").path), directory: directory)
        case .postgres:
            guard let adminURL = TestEnvironment.postgresURL else { try Self.skipPostgres() }
            let name = "keel_test_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased().prefix(16)
            try await Self.createDatabase(named: String(name), adminURL: adminURL)
            var components = try #require(URLComponents(string: adminURL))
            components.path = "/" + name
            return StoreFixture(driver: driver, location: .postgres(url: try #require(components.string)), directory: directory)
        }
    }

    /// Ends the current PostgreSQL test case as skipped when no server is configured.
    static func skipPostgres() throws -> Never {
        try Test.cancel("skipped: KEEL_TEST_POSTGRES_URL is not set (./scripts/test starts a PostgreSQL and sets it)")
    }

    /// A new store object on this fixture's location (several may share it,
    /// as several processes would).
    func openStore() throws -> any KeelStore {
        switch self.location {
        case .sqlite(let path): try SQLiteStore(path: path)
        case .postgres(let url): try PostgresStore(url: url, logger: TestEnvironment.logger)
        }
    }

    /// Opens, runs and migrates a store around `body`.
    func withStore<T: Sendable>(_ body: @Sendable (any KeelStore) async throws -> T) async throws -> T {
        let store = try self.openStore()
        let result = try await store.withRunning {
            try await store.migrate(logger: TestEnvironment.logger)
            return try await body(store)
        }
        try await store.close()
        return result
    }

    private static func createDatabase(named name: String, adminURL: String) async throws {
        let store = try PostgresStore(url: adminURL, logger: TestEnvironment.logger)
        try await store.withRunning {
            try await store.execute("CREATE DATABASE \(name)")
        }
    }

    /// Runs raw SQL on this fixture's store (to simulate other versions of Keel).
    func execute(_ sql: String) async throws {
        switch self.location {
        case .sqlite(let path):
            var configuration = Configuration()
            configuration.busyMode = .timeout(5)
            let queue = try DatabaseQueue(path: path, configuration: configuration)
            try await queue.write { db in try db.execute(sql: sql) }
            try queue.close()
        case .postgres(let url):
            let store = try PostgresStore(url: url, logger: TestEnvironment.logger)
            try await store.withRunning {
                try await store.execute(sql)
            }
        }
    }
}

/// Expects `body` to throw a ``KeelError`` with exactly `code`: a check that
/// any error passes would pass for the wrong reason too.
func expectKeelError<T>(
    _ code: KeelError.Code, _ comment: Comment? = nil, sourceLocation: SourceLocation = #_sourceLocation, _ body: () async throws -> T
) async {
    do {
        _ = try await body()
        Issue.record("expected \(code.rawValue), but nothing was thrown. \(comment.map { "\($0)" } ?? "")", sourceLocation: sourceLocation)
    } catch let error as KeelError {
        #expect(error.code == code, "\(error) \(comment.map { "\($0)" } ?? "")", sourceLocation: sourceLocation)
    } catch {
        Issue.record("expected \(code.rawValue), got \(error) \(comment.map { "\($0)" } ?? "")", sourceLocation: sourceLocation)
    }
}
