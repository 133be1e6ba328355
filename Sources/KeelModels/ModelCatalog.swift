import Foundation
import KeelCore

/// The models file (`--models FILE`, DESIGN.md "Models, chains, fallback"):
/// providers, the models on them, and the chains that order models for
/// fallback. Secrets are never in it: a provider names the environment
/// variable that holds its key, read when the providers are built.
public struct ModelCatalog: Sendable, Equatable {
    public struct Provider: Sendable, Equatable {
        public enum Kind: String, Sendable, CaseIterable {
            case openai
            case anthropic
            case bedrock
        }

        public var name: String
        public var kind: Kind
        /// OpenAI-compatible: up to and including the version (`…/v1`);
        /// Anthropic: the API root (default `https://api.anthropic.com`).
        public var baseURL: String?
        /// Bedrock: the AWS region (signing and the default endpoint).
        public var region: String?
        /// Bedrock: an endpoint other than `bedrock-runtime.REGION.amazonaws.com`.
        public var endpoint: String?
        /// The environment variable holding the API key (for Bedrock, a
        /// Bedrock API key; without it, the standard AWS variables).
        public var apiKeyEnvironmentVariable: String?
        /// Extra headers sent with every request (not secrets).
        public var headers: [String: String]
        /// Where the file declares it, for errors found later (a key's
        /// variable unset).
        public var line: Int?

        public init(
            name: String, kind: Kind, baseURL: String? = nil, region: String? = nil, endpoint: String? = nil,
            apiKeyEnvironmentVariable: String? = nil, headers: [String: String] = [:]
        ) {
            self.name = name
            self.kind = kind
            self.baseURL = baseURL
            self.region = region
            self.endpoint = endpoint
            self.apiKeyEnvironmentVariable = apiKeyEnvironmentVariable
            self.headers = headers
        }
    }

    public struct Model: Sendable, Equatable {
        /// Keel's name for it (what chains and requests use).
        public var name: String
        public var provider: String
        /// The provider's own model id.
        public var model: String
        public var maxTokens: Int?
        public var contextWindow: Int?
        public var thinkingBudget: Int?

        public init(name: String, provider: String, model: String, maxTokens: Int? = nil, contextWindow: Int? = nil, thinkingBudget: Int? = nil) {
            self.name = name
            self.provider = provider
            self.model = model
            self.maxTokens = maxTokens
            self.contextWindow = contextWindow
            self.thinkingBudget = thinkingBudget
        }
    }

    public var providers: [String: Provider]
    public var models: [String: Model]
    /// Model names in the order the file lists them.
    public var modelOrder: [String]
    /// Chain name → model names, in fallback order. Always has `default`.
    public var chains: [String: [String]]
    /// Chain names in the order the file lists them.
    public var chainOrder: [String]

    public init(providers: [Provider], models: [Model], chains: [(String, [String])]) {
        self.providers = Dictionary(providers.map { ($0.name, $0) }, uniquingKeysWith: { $1 })
        self.models = Dictionary(models.map { ($0.name, $0) }, uniquingKeysWith: { $1 })
        self.modelOrder = models.map(\.name)
        self.chains = Dictionary(chains, uniquingKeysWith: { $1 })
        self.chainOrder = chains.map(\.0)
        if self.chains["default"] == nil, models.count == 1 {
            self.chains["default"] = [models[0].name]
            self.chainOrder.append("default")
        }
    }

    public static func == (lhs: ModelCatalog, rhs: ModelCatalog) -> Bool {
        lhs.providers == rhs.providers && lhs.models == rhs.models && lhs.modelOrder == rhs.modelOrder && lhs.chains == rhs.chains
            && lhs.chainOrder == rhs.chainOrder
    }

    /// The models a request naming `name` walks through: a chain's models in
    /// order, a single model, or the `default` chain when `name` is nil.
    public func route(_ name: String?) -> [String]? {
        let name = name ?? "default"
        if let chain = self.chains[name] { return chain }
        if self.models[name] != nil { return [name] }
        return nil
    }
}

/// A models file that cannot work, with where and how to fix it.
public struct ModelCatalogError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The file's path (or `KEEL_MODELS`).
    public var source: String
    public var line: Int?
    public var message: String
    public var fix: String

    public init(source: String, line: Int?, message: String, fix: String) {
        self.source = source
        self.line = line
        self.message = message
        self.fix = fix
    }

    public var description: String {
        let place = self.line.map { "\(self.source):\($0)" } ?? self.source
        return "\(place): \(self.message) Fix: \(self.fix)"
    }
}

extension ModelCatalog {
    /// Parses and checks a models file. Every error names the line and the fix.
    public static func parse(_ bytes: [UInt8], source: String) throws(ModelCatalogError) -> ModelCatalog {
        let value: JSONValue
        let locations: JSONLocations
        do {
            (value, locations) = try JSONValue.parseLocated(bytes)
        } catch {
            throw ModelCatalogError(
                source: source, line: error.line, message: "not valid JSON: \(error.message) (column \(error.column)).",
                fix: "Correct the JSON syntax (a trailing comma or a missing quote is the usual cause).")
        }
        var reader = CatalogReader(source: source, locations: locations)
        return try reader.read(value)
    }
}

/// Reads the parsed file into a catalog, refusing anything that cannot work.
private struct CatalogReader {
    let source: String
    let locations: JSONLocations

    /// Field names that would hold a secret, refused in the file.
    static let secretFields: Set<String> = [
        "api_key", "apikey", "key", "secret", "token", "password", "access_key_id", "secret_access_key", "aws_access_key_id",
        "aws_secret_access_key", "session_token", "aws_session_token", "bearer_token", "authorization",
    ]

    func fail(_ path: [String], _ message: String, fix: String) -> ModelCatalogError {
        ModelCatalogError(source: self.source, line: self.locations.line(of: path), message: message, fix: fix)
    }

    func name(_ path: [String]) -> String { path.joined(separator: ".") }

    func object(_ value: JSONValue?, _ path: [String], what: String) throws(ModelCatalogError) -> [String: JSONValue] {
        guard case .object(let object) = value else {
            throw self.fail(path, "\(self.name(path)) must be an object (\(what)).", fix: "Write \(self.name(path)) as {…}.")
        }
        return object
    }

    func string(_ value: JSONValue?, _ path: [String]) throws(ModelCatalogError) -> String? {
        guard let value else { return nil }
        guard case .string(let text) = value, !text.trimmingCharacters(in: .whitespaces).isEmpty else {
            throw self.fail(path, "\(self.name(path)) must be a non-empty string.", fix: "Write it as \"…\".")
        }
        return text
    }

    func integer(_ value: JSONValue?, _ path: [String], in range: ClosedRange<Int>) throws(ModelCatalogError) -> Int? {
        guard let value else { return nil }
        guard case .int(let wide) = value, let number = Int(exactly: wide), range.contains(number) else {
            throw self.fail(
                path, "\(self.name(path)) must be a whole number from \(range.lowerBound) to \(range.upperBound).",
                fix: "Write a number such as \(min(max(4096, range.lowerBound), range.upperBound)).")
        }
        return number
    }

    /// Refuses keys outside `allowed`, suggesting the nearest one, and keys
    /// that would hold a secret.
    func onlyKnownKeys(_ object: [String: JSONValue], _ path: [String], allowed: [String]) throws(ModelCatalogError) {
        for key in self.locations.children(of: path).map({ $0.last! }) + object.keys.sorted() where !allowed.contains(key) {
            if Self.secretFields.contains(key.lowercased()) {
                throw self.fail(
                    path + [key], "\(self.name(path + [key])) would put a secret in the file; Keel reads secrets only from environment variables.",
                    fix: "Remove it, export the secret (for example ANTHROPIC_API_KEY=…) and name the variable with \"api_key_env\".")
            }
            let nearest = allowed.min { editDistance(key, $0) < editDistance(key, $1) }
            let suggestion = nearest.flatMap { editDistance(key, $0) <= 2 ? " (did you mean \"\($0)\"?)" : nil } ?? ""
            throw self.fail(
                path + [key], "\(self.name(path)) has an unknown field \"\(key)\"\(suggestion).",
                fix: "Use only \(allowed.map { "\"\($0)\"" }.joined(separator: ", ")).")
        }
    }

    /// Names in the file's order.
    func ordered(_ object: [String: JSONValue], _ path: [String]) -> [String] {
        let inOrder = self.locations.children(of: path).map { $0.last! }
        return inOrder.filter { object[$0] != nil } + object.keys.filter { !inOrder.contains($0) }.sorted()
    }

    mutating func read(_ value: JSONValue) throws(ModelCatalogError) -> ModelCatalog {
        if let duplicate = self.locations.duplicateKeys.first {
            throw self.fail(duplicate, "\(self.name(duplicate)) appears twice; the second would silently replace the first.", fix: "Keep one of them or rename one.")
        }
        let root = try self.object(value, [], what: "with \"providers\", \"models\" and \"chains\"")
        try self.onlyKnownKeys(root, [], allowed: ["providers", "models", "chains"])

        let providerObjects = try self.object(root["providers"], ["providers"], what: "provider name → {\"kind\", …}")
        guard !providerObjects.isEmpty else {
            throw self.fail(["providers"], "no providers.", fix: #"Add one, for example "local": {"kind": "openai", "base_url": "http://127.0.0.1:11434/v1"}."#)
        }
        var providers: [ModelCatalog.Provider] = []
        for name in self.ordered(providerObjects, ["providers"]) {
            providers.append(try self.provider(name, providerObjects[name]!))
        }

        let modelObjects = try self.object(root["models"], ["models"], what: "model name → {\"provider\", \"model\", …}")
        guard !modelObjects.isEmpty else {
            throw self.fail(["models"], "no models.", fix: #"Add one, for example "small": {"provider": "local", "model": "smollm2"}."#)
        }
        var models: [ModelCatalog.Model] = []
        for name in self.ordered(modelObjects, ["models"]) {
            models.append(try self.model(name, modelObjects[name]!, providers: providers))
        }

        var chains: [(String, [String])] = []
        if let chainsValue = root["chains"] {
            let chainObjects = try self.object(chainsValue, ["chains"], what: "chain name → [model names]")
            for name in self.ordered(chainObjects, ["chains"]) {
                chains.append((name, try self.chain(name, chainObjects[name]!, models: models)))
            }
        }
        if !chains.contains(where: { $0.0 == "default" }), models.count > 1 {
            throw self.fail(
                root["chains"] == nil ? ["models"] : ["chains"], "there is no \"default\" chain, used by every request that names no model.",
                fix: "Add \"chains\": {\"default\": [\(models.prefix(2).map { "\"\($0.name)\"" }.joined(separator: ", "))]} with the models in fallback order.")
        }
        return ModelCatalog(providers: providers, models: models, chains: chains)
    }

    func provider(_ name: String, _ value: JSONValue) throws(ModelCatalogError) -> ModelCatalog.Provider {
        let path = ["providers", name]
        let object = try self.object(value, path, what: "with \"kind\"")
        let kinds = ModelCatalog.Provider.Kind.allCases.map(\.rawValue)
        guard let kindName = try self.string(object["kind"], path + ["kind"]) else {
            throw self.fail(path, "provider \"\(name)\" has no \"kind\".", fix: "Add \"kind\": one of \(kinds.joined(separator: ", ")).")
        }
        guard let kind = ModelCatalog.Provider.Kind(rawValue: kindName) else {
            throw self.fail(path + ["kind"], "provider \"\(name)\" has an unknown kind \"\(kindName)\".", fix: "Use one of \(kinds.joined(separator: ", ")).")
        }
        let allowed: [String] =
            switch kind {
            case .openai: ["kind", "base_url", "api_key_env", "headers"]
            case .anthropic: ["kind", "base_url", "api_key_env", "headers"]
            case .bedrock: ["kind", "region", "endpoint", "api_key_env"]
            }
        try self.onlyKnownKeys(object, path, allowed: allowed)
        var provider = ModelCatalog.Provider(name: name, kind: kind)
        provider.line = self.locations.line(of: path)
        provider.baseURL = try self.url(object["base_url"], path + ["base_url"])
        provider.endpoint = try self.url(object["endpoint"], path + ["endpoint"])
        provider.region = try self.string(object["region"], path + ["region"])
        if let variable = try self.string(object["api_key_env"], path + ["api_key_env"]) {
            guard variable.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") }), !(variable.first?.isNumber ?? true) else {
                throw self.fail(
                    path + ["api_key_env"], "api_key_env must name an environment variable, not hold the key.",
                    fix: "Write the variable's name, for example \"ANTHROPIC_API_KEY\", and export the key in it.")
            }
            provider.apiKeyEnvironmentVariable = variable
        }
        if let headersValue = object["headers"] {
            let headers = try self.object(headersValue, path + ["headers"], what: "header name → value")
            for (header, headerValue) in headers {
                guard case .string(let text) = headerValue else {
                    throw self.fail(path + ["headers", header], "header \(header) must be a string.", fix: "Write its value as \"…\".")
                }
                let lower = header.lowercased()
                if ["key", "token", "secret", "auth", "password"].contains(where: lower.contains) {
                    throw self.fail(
                        path + ["headers", header], "header \(header) looks like a credential; Keel reads secrets only from environment variables.",
                        fix: "Remove it and name the key's variable with \"api_key_env\".")
                }
                provider.headers[header] = text
            }
        }
        switch kind {
        case .openai where provider.baseURL == nil:
            throw self.fail(
                path, "OpenAI-compatible provider \"\(name)\" has no base_url.",
                fix: "Add \"base_url\", up to and including the version: \"https://api.openai.com/v1\" or \"http://127.0.0.1:11434/v1\".")
        case .bedrock where provider.region == nil:
            throw self.fail(path, "Bedrock provider \"\(name)\" has no region.", fix: "Add \"region\", for example \"eu-north-1\".")
        default: break
        }
        return provider
    }

    func url(_ value: JSONValue?, _ path: [String]) throws(ModelCatalogError) -> String? {
        guard let text = try self.string(value, path) else { return nil }
        let lower = text.lowercased()
        guard lower.hasPrefix("http://") || lower.hasPrefix("https://"), text.count > 8, !text.contains(" ") else {
            throw self.fail(path, "\(self.name(path)) is not an http(s) URL: \"\(text)\".", fix: "Write it as \"https://host[:port]/path\".")
        }
        if let at = text.firstIndex(of: "@"), let scheme = text.range(of: "://"), at > scheme.upperBound,
            text[scheme.upperBound..<at].contains(":")
        {
            throw self.fail(
                path, "\(self.name(path)) carries a password in the URL; Keel reads secrets only from environment variables.",
                fix: "Remove user:password@ from the URL and name the key's variable with \"api_key_env\".")
        }
        return text
    }

    func model(_ name: String, _ value: JSONValue, providers: [ModelCatalog.Provider]) throws(ModelCatalogError) -> ModelCatalog.Model {
        let path = ["models", name]
        let object = try self.object(value, path, what: "with \"provider\" and \"model\"")
        try self.onlyKnownKeys(object, path, allowed: ["provider", "model", "max_tokens", "context_window", "thinking_budget"])
        let names = providers.map(\.name)
        guard let provider = try self.string(object["provider"], path + ["provider"]) else {
            throw self.fail(path, "model \"\(name)\" has no \"provider\".", fix: "Add \"provider\": one of \(names.joined(separator: ", ")).")
        }
        guard names.contains(provider) else {
            throw self.fail(
                path + ["provider"], "model \"\(name)\" names a provider \"\(provider)\" that \"providers\" does not declare.",
                fix: "Use one of \(names.joined(separator: ", ")), or declare \"\(provider)\" under \"providers\".")
        }
        guard let id = try self.string(object["model"], path + ["model"]) else {
            throw self.fail(path, "model \"\(name)\" has no \"model\" (the provider's model id).", fix: "Add \"model\", for example \"gpt-4o-mini\".")
        }
        var model = ModelCatalog.Model(name: name, provider: provider, model: id)
        model.maxTokens = try self.integer(object["max_tokens"], path + ["max_tokens"], in: 1...1_000_000)
        model.contextWindow = try self.integer(object["context_window"], path + ["context_window"], in: 1...100_000_000)
        model.thinkingBudget = try self.integer(object["thinking_budget"], path + ["thinking_budget"], in: 1024...1_000_000)
        if let budget = model.thinkingBudget, let maxTokens = model.maxTokens, budget >= maxTokens {
            throw self.fail(
                path + ["thinking_budget"], "model \"\(name)\": thinking_budget (\(budget)) must be less than max_tokens (\(maxTokens)); thinking counts against it.",
                fix: "Raise max_tokens or lower thinking_budget.")
        }
        return model
    }

    func chain(_ name: String, _ value: JSONValue, models: [ModelCatalog.Model]) throws(ModelCatalogError) -> [String] {
        let path = ["chains", name]
        let names = models.map(\.name)
        guard case .array(let items) = value, !items.isEmpty else {
            throw self.fail(path, "chain \"\(name)\" must be a non-empty list of model names.", fix: "Write it as [\"\(names[0])\", …].")
        }
        if names.contains(name) {
            throw self.fail(path, "chain \"\(name)\" has the name of a model, so a request naming it would be ambiguous.", fix: "Rename the chain or the model.")
        }
        var chain: [String] = []
        for (index, item) in items.enumerated() {
            let itemPath = path + [String(index)]
            guard case .string(let model) = item else {
                throw self.fail(itemPath, "chain \"\(name)\" item \(index + 1) is not a model name.", fix: "Write model names as strings.")
            }
            guard names.contains(model) else {
                throw self.fail(
                    itemPath, "chain \"\(name)\" names a model \"\(model)\" that \"models\" does not declare.",
                    fix: "Use one of \(names.joined(separator: ", ")), or declare \"\(model)\" under \"models\".")
            }
            guard !chain.contains(model) else {
                throw self.fail(itemPath, "chain \"\(name)\" lists \"\(model)\" twice.", fix: "List each model once; the router already retries within a chain.")
            }
            chain.append(model)
        }
        return chain
    }
}

/// Levenshtein distance, for "did you mean" suggestions on short field names.
func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a)
    let b = Array(b)
    guard !a.isEmpty else { return b.count }
    guard !b.isEmpty else { return a.count }
    var previous = Array(0...b.count)
    for i in 1...a.count {
        var current = [i] + Array(repeating: 0, count: b.count)
        for j in 1...b.count {
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
        }
        previous = current
    }
    return previous[b.count]
}
