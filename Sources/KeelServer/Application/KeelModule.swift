import Hummingbird
import KeelCore
import KeelModels
import Logging
import ServiceLifecycle

/// A feature of a Keel application (documents, chat, the OpenAI API, the
/// web pages) as one value: its routes, job types, upload hooks and
/// background services, registered in one place. Give modules to
/// ``KeelApplication/build(configuration:store:logger:clock:metrics:jobTypes:uploadHooks:modules:)``
/// (and the same ones to ``KeelWorkerProcess``, whose workers run their jobs).
///
/// ```swift
/// struct Greetings: KeelModule {
///     func register(in app: inout KeelModuleBuilder) {
///         let sessions = app.sessions
///         app.route("/api/greetings", .get) { request, _ in
///             let session = try await sessions.session(for: request)
///             return .json(#"{"hello":"\(session.id.prefix(4))"}"#)
///         }
///         app.jobType(GreetJob())
///     }
/// }
/// ```
public protocol KeelModule: Sendable {
    /// Adds the module's pieces. Called once per application (or worker
    /// process), before anything runs.
    func register(in app: inout KeelModuleBuilder) throws
}

/// What a module builds on, and where it registers what it adds.
public struct KeelModuleBuilder: Sendable {
    public let configuration: KeelConfiguration
    /// Every store role; a module's own role is a protocol its driver's store
    /// conforms to (KeelServer sees only protocols).
    public let store: any KeelStore
    public let clock: any KeelClock
    public let logger: Logger
    public let metrics: KeelMetrics
    /// Starts jobs of any registered type, for routes and upload hooks.
    public let jobs: JobSubmitter
    /// The caller's session, for routes (401 without one).
    public let sessions: SessionAccess
    /// The OpenAI-compatible API's keys: a request's key (read from the
    /// store every time, its per-minute limit shared by every instance) and
    /// its usage.
    public let apiKeys: APIKeyAccess
    /// Finished uploads' records and bytes, wherever they are kept.
    public let uploads: UploadContents
    /// The models of `--models` behind one router (chains, fallback, shared
    /// cooldowns); nil when no models file is configured.
    public let models: ModelRouter?
    /// Answers a request with a job's event stream (a route that starts a
    /// job and streams it at once).
    public let jobStreams: JobStreams

    var routes = RouteTable()
    var jobTypes: JobRegistry
    var uploadHooks: UploadHooks
    var services: [any Service] = []

    /// A route, with Keel's middleware around it (request id, metrics,
    /// CORS, JSON errors); its path also answers HEAD (for GET), plain
    /// OPTIONS, and 405 with `Allow` for other methods. Path parameters are
    /// written `:name` and read with `context.parameters`.
    public mutating func route(
        _ path: String, _ method: HTTPRequest.Method, _ handler: @escaping @Sendable (Request, KeelRequestContext) async throws -> Response
    ) {
        self.routes.add(path, method, handler)
    }

    /// A job type its workers run.
    public mutating func jobType(_ handler: any JobHandler) {
        self.jobTypes.register(handler)
    }

    /// Runs when an upload completes, at least once (the janitor retries a
    /// hook that failed or whose instance died).
    public mutating func onUploadCompletion(_ hook: @escaping UploadHooks.Hook) {
        self.uploadHooks.onCompletion(hook)
    }

    /// A background service run next to the server (and in `keel worker`),
    /// started before it and stopped after it.
    public mutating func service(_ service: any Service) {
        self.services.append(service)
    }
}

/// The caller's session, for a module's routes.
public struct SessionAccess: Sendable {
    let authenticator: SessionAuthenticator

    /// The request's session; throws `session_required`, `session_invalid`
    /// or `session_expired` (401), or `store_unavailable` (503).
    public func session(for request: Request) async throws -> Session {
        try await self.authenticator.authenticate(request).session
    }
}

extension KeelModuleBuilder {
    /// Runs every module's registration on a builder for this application.
    static func registering(
        _ modules: [any KeelModule], configuration: KeelConfiguration, store: any KeelStore, clock: any KeelClock, logger: Logger,
        metrics: KeelMetrics, jobs: JobSubmitter, sessions: SessionAccess, apiKeys: APIKeyAccess, uploads: UploadContents, models: ModelRouter?, jobStreams: JobStreams, jobTypes: JobRegistry,
        uploadHooks: UploadHooks
    ) throws -> KeelModuleBuilder {
        var builder = KeelModuleBuilder(
            configuration: configuration, store: store, clock: clock, logger: logger, metrics: metrics, jobs: jobs, sessions: sessions,
            apiKeys: apiKeys, uploads: uploads, models: models, jobStreams: jobStreams, jobTypes: jobTypes, uploadHooks: uploadHooks
        )
        for module in modules { try module.register(in: &builder) }
        return builder
    }
}
