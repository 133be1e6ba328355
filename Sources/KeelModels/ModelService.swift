import AsyncHTTPClient
import Foundation
import KeelCore
import Logging
import Metrics

/// The configured models of one process: the catalog read from the models
/// file, a client per model (sharing one HTTP client), and the router over
/// them. `keel serve` and `keel worker` load it at start, refusing a file
/// that cannot work; `keel models check` and `keel doctor` use it too.
public final class ModelService: Sendable {
    public let catalog: ModelCatalog
    /// Where the catalog came from (the file's path), for messages.
    public let source: String
    /// The client of each model, by model name.
    public let providers: [String: any ChatProvider]
    public let settings: ModelSettings
    private let httpClient: HTTPClient

    private init(catalog: ModelCatalog, source: String, providers: [String: any ChatProvider], settings: ModelSettings, httpClient: HTTPClient) {
        self.catalog = catalog
        self.source = source
        self.providers = providers
        self.settings = settings
        self.httpClient = httpClient
    }

    /// Reads and checks the models file `settings` names (nil without one).
    public static func readCatalog(_ settings: ModelSettings) throws(ModelCatalogError) -> ModelCatalog? {
        guard let path = settings.file else { return nil }
        let bytes: [UInt8]
        do {
            bytes = Array(try Data(contentsOf: URL(fileURLWithPath: path)))
        } catch {
            throw ModelCatalogError(
                source: path, line: nil, message: "the models file cannot be read (\(error.localizedDescription)).",
                fix: "Check --models (KEEL_MODELS): the path, and that Keel may read it.")
        }
        return try ModelCatalog.parse(bytes, source: path)
    }

    /// Reads and checks the models file and that every provider's secret is
    /// in `environment`, without building clients (`keel doctor`).
    public static func validate(_ settings: ModelSettings, environment: [String: String]) throws(ModelCatalogError) -> ModelCatalog? {
        guard let catalog = try self.readCatalog(settings) else { return nil }
        try ModelProviders.checkCredentials(catalog, environment: environment, source: settings.file ?? "models")
        return catalog
    }

    /// Loads the models file and builds every model's client; nil when no
    /// file is configured. Throws ``KeelError`` `invalid_configuration`
    /// naming the file's line and the fix.
    public static func load(_ settings: ModelSettings, environment: [String: String]) throws -> ModelService? {
        do throws(ModelCatalogError) {
            guard let catalog = try self.readCatalog(settings) else { return nil }
            let client = ModelProviders.httpClient(connectTimeout: settings.connectTimeout, maxConnections: settings.maxConnections)
            do throws(ModelCatalogError) {
                let providers = try ModelProviders.make(
                    catalog, environment: environment, httpClient: client, idleTimeout: settings.idleTimeout, source: settings.file ?? "models")
                return ModelService(catalog: catalog, source: settings.file ?? "models", providers: providers, settings: settings, httpClient: client)
            } catch {
                try? client.syncShutdown()
                throw error
            }
        } catch {
            let place = error.line.map { "\(error.source):\($0)" } ?? error.source
            throw KeelError.invalidConfiguration("The models file is refused: \(place): \(error.message)", hint: error.fix)
        }
    }

    /// The router limits the settings describe.
    public var limits: RouterLimits {
        var limits = RouterLimits()
        limits.totalTimeout = self.settings.totalTimeout
        limits.firstTokenTimeout = self.settings.firstTokenTimeout
        limits.idleTimeout = self.settings.idleTimeout
        limits.cooldown = self.settings.cooldown
        limits.authCooldown = self.settings.authCooldown
        limits.failuresBeforeCooldown = self.settings.failuresBeforeCooldown
        limits.chainRetries = self.settings.chainRetries
        limits.maxRetryWait = self.settings.retryMaxWait
        return limits
    }

    /// A router over these models, sharing health through `healthStore`.
    public func router(healthStore: any ModelHealthStore, metrics: (any MetricsFactory)?, logger: Logger, clock: any KeelClock = SystemClock()) -> ModelRouter {
        ModelRouter(
            catalog: self.catalog, providers: self.providers, healthStore: healthStore, limits: self.limits,
            metrics: metrics.map { RouterMetrics(factory: $0) }, logger: logger, clock: clock)
    }

    /// Closes the HTTP client (after every request has ended).
    public func shutdown() async {
        try? await self.httpClient.shutdown()
    }

    // MARK: - keel models check

    /// One model's answer to a tiny request.
    public struct Check: Sendable {
        public var model: String
        public var provider: String
        public var providerModel: String
        public var timeToFirstToken: Duration?
        public var total: Duration
        public var text: String
        public var usage: ChatUsage?
        /// Why it failed (redacted of secrets); nil when it answered.
        public var error: String?
    }

    /// Sends `model` a tiny streamed request, straight to its provider (no
    /// chain, no cooldowns), and times it.
    public func check(_ model: String, timeout: Duration) async -> Check {
        let entry = self.catalog.models[model]!
        var check = Check(
            model: model, provider: entry.provider, providerModel: entry.model, timeToFirstToken: nil, total: .zero, text: "", usage: nil, error: nil)
        guard let provider = self.providers[model] else {
            check.error = "no client"
            return check
        }
        let request = ChatRequest(
            model: entry.model, messages: [.user("Reply with the single word: ok")], maxTokens: entry.thinkingBudget.map { $0 + 16 } ?? 16,
            temperature: 0, includeUsage: true, thinkingBudget: entry.thinkingBudget)
        let started = ContinuousClock.now
        do {
            let outcome = try await Self.withTimeout(timeout) {
                var text = ""
                var first: Duration?
                var usage: ChatUsage?
                for try await event in provider.stream(request) {
                    switch event {
                    case .text(let piece):
                        if first == nil { first = ContinuousClock.now - started }
                        text += piece
                    case .reasoning:
                        if first == nil { first = ContinuousClock.now - started }
                    case .usage(let reported): usage = reported
                    case .finished: break
                    }
                }
                return (text, first, usage)
            }
            check.text = outcome.0
            check.timeToFirstToken = outcome.1
            check.usage = outcome.2
        } catch let error as ProviderError {
            check.error = "\(error.reasonCode): \(error.message)"
        } catch {
            check.error = "\(error)"
        }
        check.total = ContinuousClock.now - started
        return check
    }

    struct Timeout: Error, CustomStringConvertible {
        var limit: Duration
        var description: String { "timeout: no complete answer within \(limit)" }
    }

    static func withTimeout<T: Sendable>(_ limit: Duration, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
        try await withThrowingTaskGroup(of: T.self) { group in
            group.addTask { try await body() }
            group.addTask {
                try await Task.sleep(for: limit)
                throw Timeout(limit: limit)
            }
            let value = try await group.next()!
            group.cancelAll()
            return value
        }
    }
}
