import Foundation
import KeelCore
import Logging
import NIOSSL
import PostgresNIO
import Synchronization

/// Keel's state in a PostgreSQL database: every instance of a cluster points
/// at the same one.
public final class PostgresStore: KeelStore {
    public let driverName = "postgres"
    public let client: PostgresClient
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
    public let databaseBlobs: (any BlobStore)?
    let logger: Logger
    let started = StartSignal()

    /// - Parameter url: `postgres://user:password@host:port/database`, with
    ///   optional `sslmode` (disable, prefer, require), `pool_size`,
    ///   `session_reads`, `session_read_stall_ms`, `job_writes`,
    ///   `job_write_stall_ms` and `startup_parameters` (planner, none) query items.
    public init(url: String, logger: Logger) throws {
        let configuration = try Self.configuration(from: url)
        let sessionReads = try Self.sharing("session lookups", slots: "session_reads", defaultSlots: 2, stall: "session_read_stall_ms", in: url)
        let jobWrites = try Self.sharing(
            "job enqueues, claims and completions (each kind)", slots: "job_writes", defaultSlots: 1, stall: "job_write_stall_ms", in: url)
        self.client = PostgresClient(configuration: configuration, backgroundLogger: logger)
        self.logger = logger
        self.sessions = PostgresSessionStore(
            client: self.client,
            logger: logger,
            started: self.started,
            reads: .sessionReads(client: self.client, logger: logger, maxInFlight: sessionReads.maxInFlight, stallAfter: sessionReads.stallAfter)
        )
        self.meta = PostgresMetaStore(client: self.client, logger: logger, started: self.started)
        let jobQueue = PostgresJobQueue(
            client: self.client, logger: logger, started: self.started, maxInFlight: jobWrites.maxInFlight, stallAfter: jobWrites.stallAfter)
        self.jobs = jobQueue
        self.events = jobQueue
        self.leases = jobQueue
        self.uploads = PostgresUploadStore(client: self.client, logger: logger, started: self.started)
        self.rateWindows = PostgresRateWindowStore(client: self.client, logger: logger, started: self.started)
        self.documents = PostgresDocumentStore(client: self.client, logger: logger, started: self.started)
        self.modelHealth = PostgresModelHealthStore(client: self.client, logger: logger, started: self.started)
        self.chats = PostgresChatStore(client: self.client, logger: logger, started: self.started)
        self.analyses = PostgresAnalysisStore(client: self.client, logger: logger, started: self.started)
        self.apiKeys = PostgresAPIKeyStore(client: self.client, logger: logger, started: self.started)
        self.overview = PostgresOverviewStore(client: self.client, logger: logger, started: self.started)
        self.databaseBlobs = PostgresBlobStore(client: self.client, logger: logger, started: self.started)
        self.changes = PostgresChangeFeed(client: self.client, logger: logger, started: self.started)
    }

    public func run() async throws {
        self.started.signal()
        await self.client.run()
    }

    public func migrate(logger: Logger) async throws -> MigrationReport {
        await self.started.wait()
        let migrations = PostgresSchema.migrations
        let latest = PostgresSchema.latestVersion
        let report = try await withStoreErrors {
            try await self.client.withTransaction(logger: logger) { connection -> MigrationReport in
                // Instances starting together queue here; the first applies, the rest see it done.
                try await connection.query("SELECT pg_advisory_xact_lock(\(PostgresSchema.migrationLockKey))", logger: logger)
                try await connection.query(
                    """
                    CREATE TABLE IF NOT EXISTS keel_schema_migrations (
                        version INTEGER PRIMARY KEY,
                        name TEXT NOT NULL,
                        applied_at BIGINT NOT NULL
                    )
                    """,
                    logger: logger
                )
                let current = try await Self.currentVersion(connection, logger: logger)
                guard current <= latest else { throw KeelError.schemaTooNew(found: current, supported: latest) }
                var applied: [String] = []
                for migration in migrations where migration.version > current {
                    for statement in migration.statements {
                        try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
                    }
                    try await connection.query(
                        "INSERT INTO keel_schema_migrations (version, name, applied_at) VALUES (\(migration.version), \(migration.name), \(Date().millisecondsSince1970))",
                        logger: logger
                    )
                    applied.append("\(migration.version) \(migration.name)")
                }
                return MigrationReport(fromVersion: current, toVersion: max(current, latest), applied: applied)
            }
        }
        if !report.applied.isEmpty {
            logger.info("migrated store", metadata: ["keel.schema.applied": "\(report.applied)"])
        }
        return report
    }

    public var supportedSchemaVersion: Int { PostgresSchema.latestVersion }

    public func schemaVersion() async throws -> Int {
        await self.started.wait()
        return try await withStoreErrors {
            try await self.client.withConnection { connection in
                let rows = try await connection.query("SELECT to_regclass('keel_schema_migrations') IS NOT NULL", logger: self.logger)
                var exists = false
                for try await flag in rows.decode(Bool.self) { exists = flag }
                guard exists else { return 0 }
                return try await Self.currentVersion(connection, logger: self.logger)
            }
        }
    }

    public func ping() async throws {
        await self.started.wait()
        try await withStoreErrors {
            let rows = try await self.client.query("SELECT 1", logger: self.logger)
            for try await _ in rows.decode(Int32.self) {}
        }
    }

    public func close() async throws {}

    /// Runs raw SQL: for tests and tools that prepare databases.
    public func execute(_ sql: String) async throws {
        await self.started.wait()
        try await withStoreErrors {
            try await self.client.query(PostgresQuery(unsafeSQL: sql), logger: self.logger)
        }
    }

    private static func currentVersion(_ connection: PostgresConnection, logger: Logger) async throws -> Int {
        let rows = try await connection.query("SELECT COALESCE(MAX(version), 0) FROM keel_schema_migrations", logger: logger)
        var version = 0
        for try await value in rows.decode(Int32.self) { version = Int(value) }
        return version
    }

    /// How many statements of one shared kind a process runs at once (the
    /// requests arriving meanwhile wait and share the next one), and after
    /// how long a running one stops holding back those waiting (1000 ms by
    /// default): `session_reads` (default 2) and `session_read_stall_ms`;
    /// `job_writes` (default 1, per kind) and `job_write_stall_ms`. One job
    /// statement at a time gave the most jobs a second on a 2-core machine,
    /// two session lookups the most reads (docs/benchmarks.md): the requests
    /// that wait make the next statement larger, not slower.
    static func sharing(
        _ what: String, slots: String, defaultSlots: Int, stall: String, in url: String
    ) throws -> (maxInFlight: Int, stallAfter: Duration) {
        let maxInFlight = try Self.integerOption(
            slots, in: url, range: 1...1000,
            hint: "It is how many \(what) of one process run at once; the others wait and share the next statement."
        ) ?? defaultSlots
        let stallAfter = try Self.integerOption(
            stall, in: url, range: 10...600_000,
            hint: "After this many milliseconds a statement of \(what) no longer holds back the requests waiting behind it."
        ) ?? 1000
        return (maxInFlight, .milliseconds(stallAfter))
    }

    /// The integer query item `name` of the URL (the last one given), or nil
    /// when absent; refused when it is not a number within `range`.
    private static func integerOption(_ name: String, in url: String, range: ClosedRange<Int>, hint: String) throws -> Int? {
        let items = URLComponents(string: url)?.queryItems ?? []
        guard let item = items.last(where: { $0.name == name }) else { return nil }
        let text = item.value ?? ""
        guard let number = Int(text), range.contains(number) else {
            throw KeelError.invalidConfiguration(
                "\(name) '\(text)' in the PostgreSQL URL must be \(range.lowerBound)…\(range.upperBound).", hint: hint)
        }
        return number
    }

    static func configuration(from url: String) throws -> PostgresClient.Configuration {
        guard let components = URLComponents(string: url), let host = components.host, !host.isEmpty else {
            throw KeelError.invalidConfiguration("The PostgreSQL URL is not valid.", hint: "Use postgres://user:password@host:5432/database")
        }
        let items = Dictionary((components.queryItems ?? []).map { ($0.name, $0.value ?? "") }, uniquingKeysWith: { $1 })
        let tls: PostgresClient.Configuration.TLS
        switch items["sslmode"] ?? "prefer" {
        case "disable": tls = .disable
        case "prefer", "allow": tls = .prefer(.makeClientConfiguration())
        case "require", "verify-ca", "verify-full": tls = .require(.makeClientConfiguration())
        case let other:
            throw KeelError.invalidConfiguration("Unknown sslmode '\(other)' in the PostgreSQL URL.", hint: "Use disable, prefer or require.")
        }
        let database = components.path.hasPrefix("/") ? String(components.path.dropFirst()) : components.path
        var configuration = PostgresClient.Configuration(
            host: host,
            port: components.port ?? 5432,
            username: components.user?.removingPercentEncoding ?? "postgres",
            password: components.password?.removingPercentEncoding,
            database: database.isEmpty ? nil : database,
            tls: tls
        )
        if let size = try Self.integerOption(
            "pool_size", in: url, range: 2...1000,
            hint: "Each instance keeps one pooled connection listening for notifications, so it needs at least two."
        ) {
            configuration.options.maximumConnections = size
        }
        configuration.options.connectTimeout = .seconds(5)
        // Keel's statements are all index lookups and ordered index ranges. Until
        // autovacuum has analyzed a fast-growing queue, the planner believes it
        // holds a few rows and claims by bitmap scan plus sort: every claim sorts
        // the whole queue (4.9 ms at 6,000 queued, against 0.1 ms by index). A
        // bitmap scan stays possible where nothing else is (the setting is a cost
        // penalty, not a ban). See docs/architecture.md.
        // `startup_parameters=none` leaves the setting to the server, for a
        // PgBouncer that refuses startup parameters it does not know: set it
        // there with ALTER DATABASE … SET enable_bitmapscan = off.
        switch items["startup_parameters"] ?? "planner" {
        case "planner": configuration.options.additionalStartupParameters = [("enable_bitmapscan", "off")]
        case "none": configuration.options.additionalStartupParameters = []
        case let other:
            throw KeelError.invalidConfiguration(
                "startup_parameters '\(other)' in the PostgreSQL URL must be planner or none.",
                hint: "planner (the default) starts each connection with enable_bitmapscan = off; none sends nothing, for a PgBouncer that refuses it."
            )
        }
        return configuration
    }
}

/// Runs `body`, turning PostgreSQL failures into ``KeelError/Code/storeUnavailable``.
@discardableResult
func withStoreErrors<T>(_ body: () async throws -> T) async throws -> T {
    do {
        return try await body()
    } catch let error as PSQLError {
        throw KeelError.storeUnavailable(error)
    } catch let error as PostgresTransactionError {
        // A KeelError thrown inside a transaction (a conflict, a refused
        // transform) keeps its meaning; anything else is the store failing.
        if let keelError = error.closureError as? KeelError { throw keelError }
        throw KeelError.storeUnavailable(error)
    }
}

extension Date {
    var millisecondsSince1970: Int64 { Int64((self.timeIntervalSince1970 * 1000).rounded()) }

    init(millisecondsSince1970 milliseconds: Int64) {
        self.init(timeIntervalSince1970: TimeInterval(milliseconds) / 1000)
    }
}

/// A one-shot signal: `wait` returns once `signal` has been called. Every
/// operation waits for `run()` to have begun, so nothing leases a connection
/// from a pool that is not running (postgres-nio warns about that).
final class StartSignal: Sendable {
    private let state = Mutex<(signalled: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    func signal() {
        let waiters = self.state.withLock { state in
            state.signalled = true
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    func wait() async {
        await withCheckedContinuation { continuation in
            let ready = self.state.withLock { state in
                if !state.signalled { state.waiters.append(continuation) }
                return state.signalled
            }
            if ready { continuation.resume() }
        }
    }
}

/// A store role on the shared pool: every operation waits for the pool to
/// run and reports PostgreSQL failures as `storeUnavailable`.
protocol PostgresRole: Sendable {
    var client: PostgresClient { get }
    var logger: Logger { get }
    var started: StartSignal { get }
}

extension PostgresRole {
    @discardableResult
    func operation<T>(_ body: () async throws -> T) async throws -> T {
        await self.started.wait()
        return try await withStoreErrors(body)
    }

    func transaction<T: Sendable>(_ body: (PostgresConnection) async throws -> T) async throws -> T {
        await self.started.wait()
        return try await withStoreErrors {
            try await self.client.withTransaction(logger: self.logger) { connection in
                try await body(connection)
            }
        }
    }

    /// Deletes at most `limit` rows of `table` whose session no longer
    /// exists, skipping rows another instance holds, and their rows in
    /// `children` (whose `childColumn` names the row); returns how many.
    /// The names are this driver's own constants, never input.
    func removeOrphans(table: StaticString, children: StaticString, childColumn: StaticString, limit: Int) async throws -> Int {
        try await self.transaction { connection in
            var ids: [String] = []
            let select = """
                DELETE FROM \(table) WHERE id IN (
                    SELECT id FROM \(table) t WHERE NOT EXISTS (SELECT 1 FROM keel_sessions s WHERE s.id = t.session_id)
                    LIMIT $1 FOR UPDATE SKIP LOCKED
                ) RETURNING id
                """
            var binds = PostgresBindings()
            binds.append(limit)
            for try await id in try await connection.query(PostgresQuery(unsafeSQL: select, binds: binds), logger: self.logger).decode(String.self) {
                ids.append(id)
            }
            if !ids.isEmpty {
                var childBinds = PostgresBindings()
                childBinds.append(ids)
                try await connection.query(
                    PostgresQuery(unsafeSQL: "DELETE FROM \(children) WHERE \(childColumn) = ANY($1)", binds: childBinds), logger: self.logger)
            }
            return ids.count
        }
    }
}
