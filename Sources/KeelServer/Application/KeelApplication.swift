import Foundation
import Hummingbird
import KeelCore
import KeelModels
import Logging
import ServiceLifecycle

public typealias KeelHTTPApplication = Application<RouterResponder<KeelRequestContext>>

/// The composition root: one place that wires configuration, store, routes
/// and middleware, used by `keel serve` and by the tests alike.
public struct KeelApplication: Sendable {
    public let configuration: KeelConfiguration
    public let store: any KeelStore
    public let metrics: KeelMetrics
    public let drain: DrainState
    public let logger: Logger
    /// Wakes this process's streams and idle workers.
    public let hub: ChangeHub
    /// This process's job workers (none when `--workers 0`).
    public let workers: WorkerPool
    /// What runs next to the HTTP server: the change feed, the workers, the janitor.
    public let background: [any Service]
    /// The Hummingbird application; `.test(.router)` drives it in process.
    public let http: KeelHTTPApplication
    /// Every route the API registered, `(method, path)` with `:name`
    /// parameters (not the HEAD, 405 and OPTIONS answers derived from them).
    public let routes: [(method: String, path: String)]

    /// The features `keel serve` and `keel worker` run: documents, chat and
    /// analysis, the OpenAI-compatible API, and the web pages.
    public static let standardModules: [any KeelModule] = [DocumentsModule(), ChatModule(), OpenAIModule(), WebModule()]

    /// Builds the application on a migrated, running store.
    public static func build(
        configuration: KeelConfiguration,
        store: any KeelStore,
        logger: Logger,
        clock: any KeelClock = SystemClock(),
        metrics: KeelMetrics = KeelMetrics(),
        jobTypes: JobRegistry = .builtIn,
        uploadHooks: UploadHooks = UploadHooks(),
        modules: [any KeelModule] = KeelApplication.standardModules,
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) async throws -> KeelApplication {
        try ConfigurationLoader.validate(configuration)
        let models = try ModelRuntime(configuration: configuration, store: store, metrics: metrics, logger: logger, clock: clock, environment: environment)
        let signer = try await SessionSigner.resolve(configured: configuration.secrets, meta: store.meta)
        let drain = DrainState()
        let hub = ChangeHub()
        let jobMetrics = JobMetrics(metrics)
        let submitter = JobSubmitter(queue: store.jobs, hub: hub, clock: clock, metrics: jobMetrics)
        let authenticator = SessionAuthenticator(store: store.sessions, signer: signer, policy: configuration.session, clock: clock)
        let blobs = try UploadRuntime.blobStore(configuration, store: store)
        let streams = JobStreams(streamer: JobEventStream(events: store.events, hub: hub, settings: configuration.streams, metrics: jobMetrics))
        let modules = try KeelModuleBuilder.registering(
            modules, configuration: configuration, store: store, clock: clock, logger: logger, metrics: metrics, jobs: submitter,
            sessions: SessionAccess(authenticator: authenticator), apiKeys: APIKeyAccess(store: store, clock: clock, metrics: metrics, logger: logger),
            uploads: UploadContents(store: store.uploads, blobs: blobs),
            models: models.router, jobStreams: streams, jobTypes: jobTypes, uploadHooks: uploadHooks
        )
        let uploads = UploadRuntime(
            configuration: configuration, store: store, blobs: blobs, hooks: modules.uploadHooks, clock: clock, metrics: metrics, logger: logger)
        let jobTypes = JobRegistry.withKeelTypes(modules.jobTypes, demo: configuration.demoJobs, store: store, blobs: uploads.blobs)
        let jobRuntime = JobRuntime(
            configuration: configuration, store: store, registry: jobTypes, hub: hub, clock: clock, metrics: jobMetrics, logger: logger,
            workerCount: configuration.jobs.workers, uploads: uploads
        )

        // Middleware must be added before the routes it wraps. Outermost first.
        // HEAD on every GET route: the GET's status and headers, no body.
        let router = Router(context: KeelRequestContext.self, options: .autoGenerateHeadEndpoints)
        router.add(middleware: RequestIdentityMiddleware(instanceID: configuration.instanceID, drain: drain))
        router.add(middleware: RequestMetricsMiddleware(metrics: metrics))
        router.add(middleware: CORSAllowlistMiddleware(policy: configuration.cors))
        router.add(middleware: SessionCookieMiddleware(cookies: SessionCookies(policy: configuration.session, secure: configuration.cookieSecure)))
        router.add(middleware: ErrorMiddleware())

        let clients = ClientAddressResolver(trustedProxies: configuration.trustedProxies)
        let connectionCount = ConnectionCount()
        let figures = InstanceFigures(
            instanceID: configuration.instanceID, role: .server, startedAt: clock.now(), workers: jobRuntime.workers.count,
            modelWorkers: jobRuntime.workers.modelWorkers, jobs: jobMetrics,
            connections: connectionCount, drain: drain, models: models.router?.metrics)
        var routes = RouteTable()
        OperationsController(
            store: store,
            drain: drain,
            metrics: metrics,
            instanceID: configuration.instanceID,
            startedAt: clock.now(),
            storeDescription: configuration.store.description,
            jobs: jobRuntime,
            streams: configuration.streams,
            uploads: uploads,
            access: OpsAccess(token: configuration.opsToken)
        ).register(on: &routes)
        SessionController(
            store: store.sessions,
            authenticator: authenticator,
            policy: configuration.session,
            clock: clock,
            cookieSecure: configuration.cookieSecure,
            maxBodyBytes: configuration.maxBodyBytes,
            createdCounter: metrics.counter("keel_sessions_created_total"),
            createLimit: SessionCreateLimit(
                perMinute: configuration.quotas.sessionCreatesPerMinute, windows: store.rateWindows, clients: clients, clock: clock,
                refused: metrics.counter("keel_rate_limited_total", [("limit", "session_create")])
            )
        ).register(on: &routes)
        let jobsController = JobsController(
            queue: store.jobs,
            authenticator: authenticator,
            registry: jobTypes,
            settings: configuration.jobs,
            hub: hub,
            clock: clock,
            maxBodyBytes: configuration.maxBodyBytes,
            metrics: jobMetrics,
            submitter: submitter,
            maxActiveJobs: configuration.quotas.activeJobsPerSession
        )
        jobsController.register(on: &routes)
        JobEventsController(jobs: jobsController, events: store.events, streamer: streams.streamer)
            .register(on: &routes)
        UploadsController(
            store: store.uploads, blobs: uploads.blobs, authenticator: authenticator, settings: configuration.uploads, clock: clock,
            instanceID: configuration.instanceID, metrics: uploads.metrics, announcer: uploads.announcer, logger: logger, digests: submitter
        ).register(on: &routes)
        OpenAPIController().register(on: &routes)
        AdminController(store: store, access: AdminAccess(token: configuration.adminToken), figures: figures, router: models.router, clock: clock)
            .register(on: &routes)
        routes.append(modules.routes)
        routes.install(on: router)

        let connections = configuration.connections
        let guardSettings = ConnectionGuardSettings(
            headerTimeout: connections.headerTimeout.timeAmount, idleTimeout: connections.idleTimeout.timeAmount,
            bodyTimeout: connections.bodyTimeout.timeAmount, lingerTimeout: connections.lingerTimeout.timeAmount,
            maxHeaderFieldSize: 16_384, maxHeaderListSize: 65_536, instanceID: configuration.instanceID, requestIDs: RequestIDGenerator(),
            metrics: ConnectionMetrics(metrics), logger: logger
        )
        let limit = ConnectionLimit(
            maximum: connections.effectiveMaxConnections, count: connectionCount, openGauge: metrics.gauge("keel_connections_open"),
            reached: metrics.counter("keel_connection_limit_reached_total"), logger: logger
        )
        let acceptFailures = metrics.counter("keel_accept_errors_total")
        let shedConnections = metrics.counter("keel_connections_shed_total")
        let http = Application(
            router: router,
            server: KeelHTTP1Channel.builder(settings: guardSettings),
            configuration: .init(
                address: .hostname(configuration.host, port: configuration.port), serverName: nil, backlog: configuration.listenBacklog,
                availableConnectionsDelegate: limit),
            onServerRunning: { channel in
                try? await channel.eventLoop.submit {
                    try channel.pipeline.syncOperations.addHandler(AcceptErrorReporter(logger: logger, failures: acceptFailures, shed: shedConnections, count: connectionCount), position: .first)
                }.get()
            },
            logger: logger
        )
        return KeelApplication(
            configuration: configuration, store: store, metrics: metrics, drain: drain, logger: logger, hub: hub, workers: jobRuntime.workers,
            background: models.services + jobRuntime.services + modules.services + [
                InstanceReporter(figures: figures, store: store.overview, interval: configuration.instanceReportInterval, clock: clock, logger: logger)
            ],
            http: http, routes: routes.registered
        )
    }

    /// Serves until SIGTERM or SIGINT, then drains: readiness turns 503 at
    /// once, requests are still served for the drain delay, then the server
    /// stops accepting and in-flight requests get up to the drain timeout.
    public func runUntilShutdown() async throws {
        var configuration = ServiceGroupConfiguration(
            // Shut down in reverse order: the drain first, the change feed last.
            services: self.background.map { .init(service: $0, successTerminationBehavior: .ignore) } + [
                .init(service: self.http),
                .init(
                    service: DrainService(
                        state: self.drain,
                        delay: self.configuration.drainDelay,
                        logger: self.logger,
                        onBegin: { [workers, configuration] in
                            workers.beginDrain(releaseAfter: configuration.drainDelay + configuration.drainTimeout)
                        },
                        onDelayOver: { [hub] in hub.closeStreams() }
                    ),
                    successTerminationBehavior: .gracefullyShutdownGroup
                ),
            ],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: self.logger
        )
        configuration.maximumGracefulShutdownDuration = self.configuration.drainDelay + self.configuration.drainTimeout + JobRuntime.releaseMargin
        try await ServiceGroup(configuration: configuration).run()
    }
}

/// The job machinery of one process, shared by `keel serve` and `keel worker`.
struct JobRuntime: Sendable {
    let workers: WorkerPool
    let services: [any Service]
    let metrics: JobMetrics

    /// Time allowed after the drain timeout for releasing unfinished jobs' leases.
    static let releaseMargin: Duration = .seconds(5)

    init(
        configuration: KeelConfiguration, store: any KeelStore, registry: JobRegistry, hub: ChangeHub, clock: any KeelClock,
        metrics: JobMetrics, logger: Logger, workerCount: Int, uploads: UploadRuntime, leadingServices: [any Service] = [],
        extraServices: [any Service] = []
    ) {
        self.workers = WorkerPool(
            count: workerCount, modelWorkers: configuration.jobs.modelWorkers, instanceID: configuration.instanceID, registry: registry, queue: store.jobs, log: store.events, hub: hub,
            settings: configuration.jobs, clock: clock, metrics: metrics, logger: logger
        )
        // Services stop in reverse order: the leading ones (the models' HTTP
        // client) after the workers that use them.
        self.services = leadingServices + [
            ChangeFeedService(feed: store.changes, hub: hub, logger: logger),
            self.workers,
            JanitorService(
                store: store, owner: configuration.instanceID, settings: configuration.jobs, hub: hub, clock: clock, metrics: metrics, logger: logger,
                uploads: uploads
            ),
        ] + extraServices
        self.metrics = metrics
    }
}

/// `keel worker`: the change feed, the workers and the janitor, without HTTP.
public struct KeelWorkerProcess: Sendable {
    let runtime: JobRuntime
    /// On the dashboard too: a worker's busy workers and its models' figures (it runs the chat replies).
    let reporter: InstanceReporter
    let configuration: KeelConfiguration
    let logger: Logger
    let drain = DrainState()

    public init(
        configuration: KeelConfiguration, store: any KeelStore, logger: Logger, clock: any KeelClock = SystemClock(),
        metrics: KeelMetrics = KeelMetrics(), jobTypes: JobRegistry = .builtIn, uploadHooks: UploadHooks = UploadHooks(),
        modules: [any KeelModule] = KeelApplication.standardModules,
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) async throws {
        try ConfigurationLoader.validate(configuration)
        let models = try ModelRuntime(configuration: configuration, store: store, metrics: metrics, logger: logger, clock: clock, environment: environment)
        let hub = ChangeHub()
        let jobMetrics = JobMetrics(metrics)
        let signer = try await SessionSigner.resolve(configured: configuration.secrets, meta: store.meta)
        let blobs = try UploadRuntime.blobStore(configuration, store: store)
        let registered = try KeelModuleBuilder.registering(
            modules, configuration: configuration, store: store, clock: clock, logger: logger, metrics: metrics,
            jobs: JobSubmitter(queue: store.jobs, hub: hub, clock: clock, metrics: jobMetrics),
            sessions: SessionAccess(authenticator: SessionAuthenticator(store: store.sessions, signer: signer, policy: configuration.session, clock: clock)),
            apiKeys: APIKeyAccess(store: store, clock: clock, metrics: metrics, logger: logger),
            uploads: UploadContents(store: store.uploads, blobs: blobs), models: models.router,
            jobStreams: JobStreams(streamer: JobEventStream(events: store.events, hub: hub, settings: configuration.streams, metrics: jobMetrics)),
            jobTypes: jobTypes, uploadHooks: uploadHooks
        )
        let uploads = UploadRuntime(
            configuration: configuration, store: store, blobs: blobs, hooks: registered.uploadHooks, clock: clock, metrics: metrics, logger: logger)
        let jobTypes = JobRegistry.withKeelTypes(registered.jobTypes, demo: configuration.demoJobs, store: store, blobs: uploads.blobs)
        self.runtime = JobRuntime(
            configuration: configuration, store: store, registry: jobTypes, hub: hub, clock: clock, metrics: jobMetrics,
            logger: logger, workerCount: max(1, configuration.jobs.workers), uploads: uploads, leadingServices: models.services,
            extraServices: registered.services
        )
        self.reporter = InstanceReporter(
            figures: InstanceFigures(
                instanceID: configuration.instanceID, role: .worker, startedAt: clock.now(), workers: self.runtime.workers.count,
                modelWorkers: self.runtime.workers.modelWorkers, jobs: jobMetrics, connections: ConnectionCount(), drain: self.drain,
                models: models.router?.metrics),
            store: store.overview, interval: configuration.instanceReportInterval, clock: clock, logger: logger)
        self.configuration = configuration
        self.logger = logger
    }

    /// Runs until SIGTERM or SIGINT; then stops claiming, lets running jobs
    /// finish for up to the drain timeout and releases the rest.
    public func runUntilShutdown() async throws {
        let workers = self.runtime.workers
        let drainTimeout = self.configuration.drainTimeout
        var configuration = ServiceGroupConfiguration(
            services: (self.runtime.services + [self.reporter]).map { .init(service: $0, successTerminationBehavior: .ignore) } + [
                .init(
                    service: DrainService(
                        state: self.drain, delay: .zero, logger: self.logger,
                        onBegin: { workers.beginDrain(releaseAfter: drainTimeout) }
                    ),
                    successTerminationBehavior: .gracefullyShutdownGroup
                )
            ],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: self.logger
        )
        configuration.maximumGracefulShutdownDuration = drainTimeout + JobRuntime.releaseMargin
        try await ServiceGroup(configuration: configuration).run()
    }
}

/// The upload machinery of one process: where bytes go, metrics, completion hooks.
struct UploadRuntime: Sendable {
    let blobs: any BlobStore
    let metrics: UploadMetrics
    let announcer: UploadAnnouncer
    let settings: UploadSettings

    init(
        configuration: KeelConfiguration, store: any KeelStore, blobs: any BlobStore, hooks: UploadHooks, clock: any KeelClock, metrics: KeelMetrics,
        logger: Logger
    ) {
        self.blobs = blobs
        self.metrics = UploadMetrics(metrics)
        self.announcer = UploadAnnouncer(store: store.uploads, hooks: hooks, clock: clock, metrics: self.metrics, logger: logger)
        self.settings = configuration.uploads
    }

    /// `auto`: a directory beside the SQLite file, or the database itself on PostgreSQL.
    static func blobStore(_ configuration: KeelConfiguration, store: any KeelStore) throws -> any BlobStore {
        switch configuration.uploads.blobs {
        case .directory(let path):
            return try DirectoryBlobStore(root: path)
        case .database:
            guard let blobs = store.databaseBlobs else {
                throw KeelError.invalidConfiguration("This store cannot keep upload bytes in its database.", hint: "Use --upload-blobs auto or dir:PATH.")
            }
            return blobs
        case .automatic:
            if let blobs = store.databaseBlobs { return blobs }
            switch configuration.store {
            case .sqlite(let path):
                return try DirectoryBlobStore(root: URL(fileURLWithPath: path).deletingLastPathComponent().appendingPathComponent("uploads").path)
            case .postgres:
                return try DirectoryBlobStore(root: "./keel-data/uploads")
            }
        }
    }
}
