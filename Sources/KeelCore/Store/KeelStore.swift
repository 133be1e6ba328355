import Logging

/// A backend holding all of Keel's shared state: one value per process,
/// shared by every request.
///
/// A driver is complete when the conformance suites pass against it unchanged.
public protocol KeelStore: Sendable {
    /// Short driver name, such as `sqlite` or `postgres`.
    var driverName: String { get }
    var sessions: any SessionStore { get }
    var meta: any MetaStore { get }
    var jobs: any JobQueue { get }
    var events: any EventLog { get }
    var leases: any LeaderLease { get }
    var uploads: any UploadStore { get }
    /// Rate-limit counters every instance shares.
    var rateWindows: any RateWindowStore { get }
    /// Documents, their sections and passages, and full-text search.
    var documents: any DocumentStore { get }
    /// Model cooldowns and failure counts every instance shares.
    var modelHealth: any ModelHealthStore { get }
    /// Conversations and their messages, each scoped to its session.
    var chats: any ChatStore { get }
    /// Document analyses and their section results.
    var analyses: any AnalysisStore { get }
    /// API keys of the OpenAI-compatible API (only their hashes) and their usage.
    var apiKeys: any APIKeyStore { get }
    /// Instances' reports and deployment-wide counts, for the admin dashboard.
    var overview: any OverviewStore { get }
    /// Blob storage inside the database, for drivers that have it (PostgreSQL).
    var databaseBlobs: (any BlobStore)? { get }
    /// Changes committed by other processes, for prompt wake-ups.
    var changes: any ChangeFeed { get }

    /// Runs the driver's background machinery (a connection pool, say) until
    /// the task is cancelled. Other methods may wait until it has started.
    func run() async throws

    /// Applies missing schema migrations, serialized across every process
    /// that shares the store. Throws ``KeelError/Code/schemaTooNew`` when the
    /// store was migrated by a newer Keel.
    @discardableResult
    func migrate(logger: Logger) async throws -> MigrationReport

    /// The schema version recorded in the store (0 before any migration).
    func schemaVersion() async throws -> Int

    /// The newest schema version this binary knows (what `migrate` brings the store to).
    var supportedSchemaVersion: Int { get }

    /// One round trip to the store, for readiness checks.
    func ping() async throws

    /// Releases files and connections. The store is unusable afterwards.
    func close() async throws
}

/// What `migrate` did.
public struct MigrationReport: Sendable, Equatable {
    public var fromVersion: Int
    public var toVersion: Int
    public var applied: [String]

    public init(fromVersion: Int, toVersion: Int, applied: [String]) {
        self.fromVersion = fromVersion
        self.toVersion = toVersion
        self.applied = applied
    }
}

/// One step of the schema, identical in meaning on every driver.
public struct Migration: Sendable {
    public var version: Int
    public var name: String
    public var statements: [String]

    public init(version: Int, name: String, statements: [String]) {
        self.version = version
        self.name = name
        self.statements = statements
    }
}

extension KeelError {
    public static func schemaTooNew(found: Int, supported: Int) -> KeelError {
        KeelError(
            .schemaTooNew,
            "The store's schema is at version \(found), but this keel binary knows versions up to \(supported).",
            hint: "A newer keel has migrated this store; run that version (or newer) of keel instead of downgrading."
        )
    }
}

/// Validates a list of migrations: versions strictly increasing from 1.
public func latestVersion(of migrations: [Migration]) -> Int {
    precondition(
        migrations.enumerated().allSatisfy { $0.offset + 1 == $0.element.version },
        "migrations must be numbered 1, 2, 3… in order"
    )
    return migrations.last?.version ?? 0
}

extension KeelStore {
    /// Runs the store's background machinery around `body`, then stops it.
    @discardableResult
    public func withRunning<T: Sendable>(_ body: @Sendable () async throws -> T) async throws -> T {
        try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask {
                try await self.run()
                return nil
            }
            defer { group.cancelAll() }
            return try await body()
        }
    }
}
