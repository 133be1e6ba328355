import KeelCore
import KeelModels
import Testing

/// The models file: what it accepts, and every refusal naming its line and the fix.
@Suite("Models file")
struct ModelCatalogTests {
    static let example = """
        {"providers": {"bedrock": {"kind": "bedrock", "region": "eu-north-1"},
                       "claude":  {"kind": "anthropic", "api_key_env": "ANTHROPIC_API_KEY"},
                       "local":   {"kind": "openai", "base_url": "http://127.0.0.1:11434/v1"}},
         "models":    {"sonnet": {"provider": "bedrock", "model": "anthropic.claude-sonnet-4-5-20250929-v1:0",
                                  "max_tokens": 4096, "thinking_budget": 2048},
                       "haiku":  {"provider": "claude", "model": "claude-haiku-4-5"},
                       "small":  {"provider": "local", "model": "smollm2"}},
         "chains":    {"default": ["sonnet", "haiku", "small"], "cheap": ["small"]}}
        """

    static func parse(_ text: String) throws(ModelCatalogError) -> ModelCatalog {
        try ModelCatalog.parse(Array(text.utf8), source: "models.json")
    }

    /// The error `text` gets, which must name `line` and contain `words`.
    static func refusal(_ text: String, line: Int?, _ words: String, sourceLocation: SourceLocation = #_sourceLocation) {
        do {
            _ = try self.parse(text)
            Issue.record("accepted: \(text)", sourceLocation: sourceLocation)
        } catch {
            #expect(error.line == line, "\(error)", sourceLocation: sourceLocation)
            #expect(error.description.contains(words), "\(error)", sourceLocation: sourceLocation)
            #expect(!error.fix.isEmpty, sourceLocation: sourceLocation)
        }
    }

    @Test("DESIGN.md's example parses: providers, models with their limits, chains in order")
    func example() throws {
        let catalog = try Self.parse(Self.example)
        #expect(catalog.providers["bedrock"] == ModelCatalog.Provider(name: "bedrock", kind: .bedrock, region: "eu-north-1").lined(1))
        #expect(catalog.providers["claude"]?.apiKeyEnvironmentVariable == "ANTHROPIC_API_KEY")
        #expect(catalog.models["sonnet"]?.model == "anthropic.claude-sonnet-4-5-20250929-v1:0")
        #expect(catalog.models["sonnet"]?.maxTokens == 4096 && catalog.models["sonnet"]?.thinkingBudget == 2048)
        #expect(catalog.modelOrder == ["sonnet", "haiku", "small"] && catalog.chainOrder == ["default", "cheap"])
        #expect(catalog.route(nil) == ["sonnet", "haiku", "small"] && catalog.route("cheap") == ["small"] && catalog.route("haiku") == ["haiku"])
        #expect(catalog.route("nope") == nil)
    }

    @Test("one model needs no chain: it is the default")
    func singleModel() throws {
        let catalog = try Self.parse(#"{"providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:1/v1"}}, "models": {"m": {"provider": "p", "model": "x"}}}"#)
        #expect(catalog.route(nil) == ["m"])
    }

    @Test("a bad file is refused with its line and the fix")
    func refusals() {
        Self.refusal("{\"providers\": {\n  \"p\": {\"kind\": \"openai\",}\n}}", line: 2, "not valid JSON")
        Self.refusal(
            "{\"providers\": {\"p\": {\"kind\": \"openai\", \"base_url\": \"http://h/v1\"}},\n \"models\": {\n  \"m\": {\"provider\": \"q\", \"model\": \"x\"}}}",
            line: 3, "names a provider \"q\"")
        Self.refusal(
            "{\"providers\": {\"p\": {\"kind\": \"openai\", \"base_url\": \"http://h/v1\"}},\n \"models\": {\"m\": {\"provider\": \"p\", \"model\": \"x\"},\n \"n\": {\"provider\": \"p\", \"model\": \"y\"}},\n \"chains\": {\"default\": [\"m\",\n \"o\"]}}",
            line: 5, "names a model \"o\"")
        Self.refusal(
            "{\"providers\": {\n\"p\": {\"kind\": \"openai\", \"base_url\": \"http://h/v1\",\n \"api_key\": \"sk-live-123\"}}, \"models\": {}}", line: 3,
            "would put a secret in the file")
        Self.refusal(
            "{\"providers\": {\"p\": {\"kind\": \"openai\", \"base_url\": \"http://h/v1\"}},\n \"models\": {\"m\": {\"provider\": \"p\",\n \"modle\": \"x\"}}}",
            line: 3, "did you mean \"model\"")
        Self.refusal("{\"providers\": {\"p\": {\"kind\": \"gemini\"}}, \"models\": {}}", line: 1, "unknown kind \"gemini\"")
        Self.refusal("{\"providers\": {\"p\": {\n\"kind\": \"openai\"}}, \"models\": {}}", line: 1, "has no base_url")
        Self.refusal("{\"providers\": {\"p\": {\"kind\": \"bedrock\"}}, \"models\": {}}", line: 1, "has no region")
        Self.refusal(
            "{\"providers\": {\"p\": {\"kind\": \"openai\", \"base_url\": \"http://h/v1\"}},\n \"models\": {\"m\": {\"provider\": \"p\", \"model\": \"x\"},\n \"n\": {\"provider\": \"p\", \"model\": \"y\"}}}",
            line: 2, "no \"default\" chain")
        Self.refusal(
            "{\"providers\": {\"p\": {\"kind\": \"anthropic\"}},\n \"models\": {\"m\": {\"provider\": \"p\", \"model\": \"x\",\n \"max_tokens\": 2048, \"thinking_budget\": 4096}}}",
            line: 3, "must be less than max_tokens")
        Self.refusal(
            "{\"providers\": {\"p\": {\"kind\": \"openai\", \"base_url\": \"http://h/v1\"},\n \"p\": {\"kind\": \"openai\", \"base_url\": \"http://i/v1\"}}, \"models\": {}}",
            line: 2, "appears twice")
        Self.refusal(
            "{\"providers\": {\"p\": {\"kind\": \"openai\",\n \"base_url\": \"https://user:hunter2@h/v1\"}}, \"models\": {}}", line: 2,
            "password in the URL")
        Self.refusal(
            "{\"providers\": {\"p\": {\"kind\": \"openai\", \"base_url\": \"http://h/v1\",\n \"headers\": {\"X-Api-Key\": \"abc\"}}}, \"models\": {}}", line: 2,
            "looks like a credential")
        Self.refusal(
            "{\"providers\": {\"p\": {\"kind\": \"openai\", \"base_url\": \"http://h/v1\"}}, \"models\": {\"m\": {\"provider\": \"p\", \"model\": \"x\"}},\n \"chains\": {\"default\": [\"m\", \"m\"]}}",
            line: 2, "lists \"m\" twice")
        Self.refusal(
            "{\"providers\": {\"p\": {\"kind\": \"openai\", \"base_url\": \"http://h/v1\"}}, \"models\": {\"m\": {\"provider\": \"p\", \"model\": \"x\",\n \"max_tokens\": -4}}}",
            line: 2, "max_tokens must be a whole number")
        Self.refusal("[1, 2]", line: nil, "must be an object")
    }

    @Test("a secret is never in an error: a key variable unset is named, not its value; a set one is read")
    func environmentSecrets() throws {
        let catalog = try Self.parse(Self.example)
        let missing = #expect(throws: ModelCatalogError.self) {
            try ModelProviders.checkCredentials(catalog, environment: [:], source: "models.json")
        }
        #expect(missing?.description.contains("AWS_ACCESS_KEY_ID") == true && missing?.line == 1)
        let keyless = #expect(throws: ModelCatalogError.self) {
            try ModelProviders.checkCredentials(catalog, environment: ["AWS_BEARER_TOKEN_BEDROCK": "abc"], source: "models.json")
        }
        #expect(keyless?.description.contains("ANTHROPIC_API_KEY, which is not set") == true && keyless?.line == 2)
        try ModelProviders.checkCredentials(
            catalog, environment: ["AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "s3cr3t-value", "ANTHROPIC_API_KEY": "sk-ant-zzz"],
            source: "models.json")
    }
}

extension ModelCatalog.Provider {
    func lined(_ line: Int) -> Self {
        var copy = self
        copy.line = line
        return copy
    }
}
