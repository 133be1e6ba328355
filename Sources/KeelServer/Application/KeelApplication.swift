import Foundation
import Hummingbird
import KeelCore
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
    /// The Hummingbird application; `.test(.router)` drives it in process.
    public let http: KeelHTTPApplication

    /// Builds the application on a migrated, running store.
    public static func build(
        configuration: KeelConfiguration,
        store: any KeelStore,
        logger: Logger,
        clock: any KeelClock = SystemClock(),
        metrics: KeelMetrics = KeelMetrics()
    ) async throws -> KeelApplication {
        try ConfigurationLoader.validate(configuration)
        let signer = try await SessionSigner.resolve(configured: configuration.secrets, meta: store.meta)
        let drain = DrainState()

        // Middleware must be added before the routes it wraps. Outermost first.
        let router = Router(context: KeelRequestContext.self)
        router.add(middleware: RequestIdentityMiddleware(instanceID: configuration.instanceID))
        router.add(middleware: RequestMetricsMiddleware(metrics: metrics))
        router.add(middleware: CORSAllowlistMiddleware(policy: configuration.cors))
        router.add(middleware: ErrorMiddleware())

        let authenticator = SessionAuthenticator(store: store.sessions, signer: signer, policy: configuration.session, clock: clock)
        var routes = RouteTable()
        OperationsController(
            store: store,
            drain: drain,
            metrics: metrics,
            instanceID: configuration.instanceID,
            startedAt: clock.now(),
            storeDescription: configuration.store.description
        ).register(on: &routes)
        SessionController(
            store: store.sessions,
            authenticator: authenticator,
            policy: configuration.session,
            clock: clock,
            cookieSecure: configuration.cookieSecure,
            maxBodyBytes: configuration.maxBodyBytes,
            createdCounter: metrics.counter("keel_sessions_created_total")
        ).register(on: &routes)
        routes.install(on: router)

        let http = Application(
            router: router,
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: nil),
            logger: logger
        )
        return KeelApplication(configuration: configuration, store: store, metrics: metrics, drain: drain, logger: logger, http: http)
    }

    /// Serves until SIGTERM or SIGINT, then drains: readiness turns 503 at
    /// once, requests are still served for the drain delay, then the server
    /// stops accepting and in-flight requests get up to the drain timeout.
    public func runUntilShutdown() async throws {
        var configuration = ServiceGroupConfiguration(
            services: [
                .init(service: self.http),
                .init(
                    service: DrainService(state: self.drain, delay: self.configuration.drainDelay, logger: self.logger),
                    successTerminationBehavior: .gracefullyShutdownGroup
                ),
            ],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: self.logger
        )
        configuration.maximumGracefulShutdownDuration = self.configuration.drainDelay + self.configuration.drainTimeout
        try await ServiceGroup(configuration: configuration).run()
    }
}
