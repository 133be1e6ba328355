import Foundation
import GRDB
import KeelCore
import Logging

/// Keel's state in one SQLite file in WAL mode, safe to share between
/// several processes on one machine.
///
/// Writes run in `BEGIN IMMEDIATE` transactions: a process takes the write
/// lock before reading, so two processes can never deadlock upgrading read
/// locks, and a busy lock is waited for up to the busy timeout.
public final class SQLiteStore: KeelStore {
    public let driverName = "sqlite"
    public let path: String
    public let sessions: any SessionStore
    public let meta: any MetaStore
    public let jobs: any JobQueue
    public let events: any EventLog
    public let leases: any LeaderLease
    public let changes: any ChangeFeed
    public let uploads: any UploadStore
    public let rateWindows: any RateWindowStore
    public let documents: any DocumentStore
    public let modelHealth: any ModelHealthStore
    public let chats: any ChatStore
    public let analyses: any AnalysisStore
    public let apiKeys: any APIKeyStore
    public let overview: any OverviewStore
    /// SQLite keeps upload bytes in files, never in the database.
    public var databaseBlobs: (any BlobStore)? { nil }
    let pool: DatabasePool
    let sessionReader: SQLiteSessionReader

    public init(path: String, options: SQLiteOptions = SQLiteOptions()) throws {
        let url = URL(fileURLWithPath: path)
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        var configuration = Configuration()
        configuration.busyMode = .timeout(options.busyTimeout.timeInterval)
        configuration.journalMode = .wal
        configuration.label = "keel"
        let synchronous = options.synchronous == "normal" ? "NORMAL" : "FULL"
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = \(synchronous)")
        }
        do {
            self.pool = try DatabasePool(path: url.path, configuration: configuration)
            // GRDB's WAL set-up sets the writer's synchronous to NORMAL after
            // prepareDatabase ran: set the chosen mode again on the writer,
            // the connection whose commits it governs.
            try self.pool.writeWithoutTransaction { db in
                try db.execute(sql: "PRAGMA synchronous = \(synchronous)")
            }
        } catch {
            throw KeelError.invalidConfiguration(
                "Cannot open the SQLite store at \(url.path): \(error)",
                hint: "Check that the directory is writable by this user."
            )
        }
        self.path = url.path
        self.sessionReader = SQLiteSessionReader(path: url.path, busyTimeout: options.busyTimeout)
        self.sessions = SQLiteSessionStore(pool: self.pool, reader: self.sessionReader)
        self.meta = SQLiteMetaStore(pool: self.pool)
        let jobQueue = SQLiteJobQueue(pool: self.pool)
        self.jobs = jobQueue
        self.events = jobQueue
        self.leases = jobQueue
        self.uploads = SQLiteUploadStore(pool: self.pool)
        self.rateWindows = SQLiteRateWindowStore(pool: self.pool)
        self.documents = SQLiteDocumentStore(pool: self.pool)
        self.modelHealth = SQLiteModelHealthStore(pool: self.pool)
        self.chats = SQLiteChatStore(pool: self.pool)
        self.analyses = SQLiteAnalysisStore(pool: self.pool)
        self.apiKeys = SQLiteAPIKeyStore(pool: self.pool)
        self.overview = SQLiteOverviewStore(pool: self.pool)
        self.changes = SQLiteChangeFeed(path: url.path, interval: options.pollInterval, busyTimeout: options.busyTimeout)
    }

    /// The writer connection's `PRAGMA synchronous` (1 NORMAL, 2 FULL).
    public func synchronousMode() async throws -> Int {
        try await withStoreErrors {
            try await self.pool.write { db in try Int.fetchOne(db, sql: "PRAGMA synchronous") ?? -1 }
        }
    }

    public func run() async throws {
        // SQLite needs no background work; stay alive until cancelled.
        while !Task.isCancelled {
            try? await Task.sleep(for: .seconds(3600))
        }
    }

    public func migrate(logger: Logger) async throws -> MigrationReport {
        let migrations = SQLiteSchema.migrations
        let latest = SQLiteSchema.latestVersion
        // The IMMEDIATE transaction holds the database's write lock, which
        // serializes concurrent migrations from several processes.
        let report = try await withStoreErrors {
            try await self.pool.write { db -> MigrationReport in
                try db.execute(
                    sql: """
                        CREATE TABLE IF NOT EXISTS keel_schema_migrations (
                            version INTEGER PRIMARY KEY,
                            name TEXT NOT NULL,
                            applied_at INTEGER NOT NULL
                        )
                        """
                )
                let current = try Int.fetchOne(db, sql: "SELECT COALESCE(MAX(version), 0) FROM keel_schema_migrations") ?? 0
                guard current <= latest else { throw KeelError.schemaTooNew(found: current, supported: latest) }
                var applied: [String] = []
                for migration in migrations where migration.version > current {
                    for statement in migration.statements {
                        try db.execute(sql: statement)
                    }
                    try db.execute(
                        sql: "INSERT INTO keel_schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                        arguments: [migration.version, migration.name, Date().millisecondsSince1970]
                    )
                    applied.append("\(migration.version) \(migration.name)")
                }
                return MigrationReport(fromVersion: current, toVersion: max(current, latest), applied: applied)
            }
        }
        if !report.applied.isEmpty {
            logger.info("migrated store", metadata: ["keel.store": "\(self.path)", "keel.schema.applied": "\(report.applied)"])
        }
        return report
    }

    public var supportedSchemaVersion: Int { SQLiteSchema.latestVersion }

    public func schemaVersion() async throws -> Int {
        try await withStoreErrors {
            try await self.pool.read { db in
                guard try db.tableExists("keel_schema_migrations") else { return 0 }
                return try Int.fetchOne(db, sql: "SELECT COALESCE(MAX(version), 0) FROM keel_schema_migrations") ?? 0
            }
        }
    }

    public func ping() async throws {
        try await withStoreErrors {
            _ = try await self.pool.read { db in try Int.fetchOne(db, sql: "SELECT 1") }
        }
    }

    public func close() async throws {
        self.sessionReader.close()
        try self.pool.close()
    }
}

/// Runs `body`, turning SQLite failures into ``KeelError/Code/storeUnavailable``.
@discardableResult
func withStoreErrors<T>(_ body: () async throws -> T) async throws -> T {
    do {
        return try await body()
    } catch let error as DatabaseError {
        throw KeelError.storeUnavailable(error)
    }
}

extension Date {
    var millisecondsSince1970: Int64 { Int64((self.timeIntervalSince1970 * 1000).rounded()) }

    init(millisecondsSince1970 milliseconds: Int64) {
        self.init(timeIntervalSince1970: TimeInterval(milliseconds) / 1000)
    }
}

/// Deletes at most `limit` rows of `table` whose session no longer exists,
/// and their rows in `children` (whose `childColumn` names the row); returns
/// how many. The names are this driver's own constants, never input.
func removeOrphans(_ db: Database, table: StaticString, children: StaticString, childColumn: StaticString, limit: Int) throws -> Int {
    let ids = try String.fetchAll(
        cached: db, sql: "SELECT id FROM \(table) t WHERE NOT EXISTS (SELECT 1 FROM keel_sessions s WHERE s.id = t.session_id) LIMIT ?",
        arguments: [limit])
    for id in ids {
        try db.executeCached(sql: "DELETE FROM \(children) WHERE \(childColumn) = ?", arguments: [id])
        try db.executeCached(sql: "DELETE FROM \(table) WHERE id = ?", arguments: [id])
    }
    return ids.count
}
