import AsyncHTTPClient
import Foundation
import NIOCore

/// Builds the client of every model in a catalog, reading each provider's
/// secret from the environment variable the file names (never from the file).
public enum ModelProviders {
    /// An HTTP client for model providers: a short connect timeout, no
    /// overall timeout (the router's limits apply), no redirects, and up to
    /// `maxConnections` HTTP/1.1 connections per host (AsyncHTTPClient's
    /// default of 8 let only 8 answers stream at once from a host such as a
    /// local vLLM or a gateway; the rest waited for a connection).
    public static func httpClient(connectTimeout: Duration, maxConnections: Int = 512) -> HTTPClient {
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = maxConnections
        configuration.timeout = HTTPClient.Configuration.Timeout(connect: .nanoseconds(Int64(connectTimeout.components.seconds) * 1_000_000_000 + connectTimeout.components.attoseconds / 1_000_000_000))
        configuration.redirectConfiguration = .disallow
        configuration.decompression = .disabled
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }

    /// The client for each model, by model name. Refuses a provider whose
    /// key variable is unset, or that needs a key and names none.
    public static func make(
        _ catalog: ModelCatalog, environment: [String: String], httpClient: HTTPClient, idleTimeout: Duration, source: String
    ) throws(ModelCatalogError) -> [String: any ChatProvider] {
        var byProvider: [String: any ChatProvider] = [:]
        for name in catalog.providers.keys.sorted() {
            let provider = catalog.providers[name]!
            let secret = try self.credentials(provider, environment: environment, source: source)
            byProvider[name] = self.client(provider, secret, httpClient: httpClient, idleTimeout: idleTimeout)
        }
        var byModel: [String: any ChatProvider] = [:]
        for (name, model) in catalog.models { byModel[name] = byProvider[model.provider] }
        return byModel
    }

    /// Checks that every provider's secret is in the environment, without
    /// building any client (`keel doctor`).
    public static func checkCredentials(_ catalog: ModelCatalog, environment: [String: String], source: String) throws(ModelCatalogError) {
        for name in catalog.providers.keys.sorted() {
            _ = try self.credentials(catalog.providers[name]!, environment: environment, source: source)
        }
    }

    /// What a provider proves itself with.
    enum Credentials {
        case apiKey(String?)
        case bedrock(BedrockCredentials)
    }

    static func credentials(_ provider: ModelCatalog.Provider, environment: [String: String], source: String) throws(ModelCatalogError) -> Credentials {
        switch provider.kind {
        case .openai:
            let official = (provider.baseURL ?? "").lowercased().contains("api.openai.com")
            return .apiKey(try self.key(provider, environment: environment, source: source, defaultVariable: official ? "OPENAI_API_KEY" : nil, required: official))
        case .anthropic:
            let official = (provider.baseURL ?? "https://api.anthropic.com").lowercased().contains("api.anthropic.com")
            return .apiKey(
                try self.key(provider, environment: environment, source: source, defaultVariable: official ? "ANTHROPIC_API_KEY" : nil, required: official))
        case .bedrock:
            // A Bedrock API key from the variable `api_key_env` names, else the
            // standard AWS variables (AWS_BEARER_TOKEN_BEDROCK, or
            // AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN).
            if provider.apiKeyEnvironmentVariable != nil {
                let key = try self.key(provider, environment: environment, source: source, defaultVariable: nil, required: true)
                return .bedrock(.apiKey(key ?? ""))
            }
            if let standard = BedrockCredentials.fromEnvironment(environment) { return .bedrock(standard) }
            throw ModelCatalogError(
                source: source, line: provider.line, message: "Bedrock provider \"\(provider.name)\" has no AWS credentials in the environment.",
                fix: "Export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary credentials), or a Bedrock API key in AWS_BEARER_TOKEN_BEDROCK.")
        }
    }

    static func key(
        _ provider: ModelCatalog.Provider, environment: [String: String], source: String, defaultVariable: String?, required: Bool
    ) throws(ModelCatalogError) -> String? {
        let variable = provider.apiKeyEnvironmentVariable ?? defaultVariable
        if let variable, let value = environment[variable], !value.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
            return value.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        if let named = provider.apiKeyEnvironmentVariable {
            throw ModelCatalogError(
                source: source, line: provider.line, message: "provider \"\(provider.name)\" reads its key from \(named), which is not set.",
                fix: "Export \(named) before starting Keel, or remove \"api_key_env\" for a server that needs no key.")
        }
        if required {
            throw ModelCatalogError(
                source: source, line: provider.line, message: "provider \"\(provider.name)\" needs an API key and none is set.",
                fix: "Export \(defaultVariable ?? "the key") and add \"api_key_env\": \"\(defaultVariable ?? "YOUR_KEY_VARIABLE")\" to the provider.")
        }
        return nil
    }

    static func client(_ provider: ModelCatalog.Provider, _ credentials: Credentials, httpClient: HTTPClient, idleTimeout: Duration) -> any ChatProvider {
        let headers = provider.headers.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
        switch (provider.kind, credentials) {
        case (.anthropic, .apiKey(let key)):
            return AnthropicProvider(
                baseURL: provider.baseURL ?? "https://api.anthropic.com", apiKey: key, httpClient: httpClient, headers: headers, idleTimeout: idleTimeout)
        case (_, .bedrock(let credentials)):
            return BedrockProvider(
                region: provider.region ?? "us-east-1", endpoint: provider.endpoint, credentials: credentials, httpClient: httpClient, idleTimeout: idleTimeout)
        case (_, .apiKey(let key)):
            return OpenAICompatibleProvider(
                baseURL: provider.baseURL ?? "https://api.openai.com/v1", apiKey: key, httpClient: httpClient, headers: headers, idleTimeout: idleTimeout)
        }
    }
}
