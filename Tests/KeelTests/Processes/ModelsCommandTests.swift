import AsyncHTTPClient
import Foundation
import KeelCore
import KeelModels
import Testing

/// `--models` end to end: a bad file refused at start with its line and the
/// fix, `keel models check` and `keel doctor` against the three fake
/// upstreams, and the router continuing a cut stream across providers.
@Suite("Models file and commands", .serialized)
struct ModelsCommandTests {
    static let anthropicKey = "sk-ant-fake-7c1d9e3b5a"
    static let awsSecret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzzSECRET"

    /// The three fakes, running for `body`.
    static func withFakes(
        _ body: (_ openai: FakeOpenAIUpstream, _ anthropic: FakeOpenAIUpstream, _ bedrock: FakeOpenAIUpstream) async throws -> Void
    ) async throws {
        let openai: FakeOpenAIUpstream
        let anthropic: FakeOpenAIUpstream
        let bedrock: FakeOpenAIUpstream
        do {
            openai = try await FakeOpenAIUpstream.start()
            anthropic = try await FakeOpenAIUpstream.start(apiKey: Self.anthropicKey, script: "fake_anthropic.py")
            bedrock = try await FakeOpenAIUpstream.start(
                script: "fake_bedrock.py", arguments: ["--access-key", "AKIDFAKEKEEL", "--secret-key", Self.awsSecret])
        } catch {
            if ProcessInfo.processInfo.environment["CI"] == "true" { Issue.record("CI must run the fake upstreams: \(error)") }
            try Test.cancel("skipped: the fake upstreams cannot run: \(error)")
        }
        defer {
            openai.stop()
            anthropic.stop()
            bedrock.stop()
        }
        try await body(openai, anthropic, bedrock)
    }

    static func modelsFile(openai: FakeOpenAIUpstream, anthropic: FakeOpenAIUpstream, bedrock: FakeOpenAIUpstream, extra: String = "") throws -> String {
        let text = """
            {"providers": {"local":   {"kind": "openai", "base_url": "\(openai.baseURL)"},
                           "claude":  {"kind": "anthropic", "base_url": "\(anthropic.rootURL)", "api_key_env": "FAKE_ANTHROPIC_KEY"},
                           "bedrock": {"kind": "bedrock", "region": "eu-north-1", "endpoint": "\(bedrock.rootURL)"}},
             "models":    {"cut":    {"provider": "local", "model": "cut-after-3"},
                           "haiku":  {"provider": "claude", "model": "ok"},
                           "sonnet": {"provider": "bedrock", "model": "ok.anthropic.claude-sonnet-4-5-20250929-v1:0"}\(extra)},
             "chains":    {"default": ["cut", "haiku", "sonnet"]}}
            """
        let path = try TestEnvironment.directory("models").appendingPathComponent("models.json")
        try text.write(to: path, atomically: true, encoding: .utf8)
        return path.path
    }

    static var environment: [String: String] {
        ["FAKE_ANTHROPIC_KEY": Self.anthropicKey, "AWS_ACCESS_KEY_ID": "AKIDFAKEKEEL", "AWS_SECRET_ACCESS_KEY": Self.awsSecret]
    }

    @Test("keel serve refuses a models file that cannot work, naming the line and the fix, and never printing a secret")
    func refusedAtStart() async throws {
        let fixture = try await StoreFixture.make(.sqlite)
        let directory = try TestEnvironment.directory("bad-models")
        let bad = directory.appendingPathComponent("models.json")
        try """
            {"providers": {"local": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
             "models": {"small": {"provider": "local", "model": "smollm2"},
                        "big":   {"provider": "locl", "model": "llama"}},
             "chains": {"default": ["small", "big"]}}
            """.write(to: bad, atomically: true, encoding: .utf8)
        let store = "sqlite:" + fixture.directory.appendingPathComponent("keel.sqlite").path
        let refused = try await KeelProcess.run(["serve", "--port", "0", "--store", store, "--models", bad.path])
        #expect(refused.status == 2, "\(refused.output)")
        #expect(refused.output.contains("\(bad.path):3:") && refused.output.contains("names a provider \"locl\""), "\(refused.output)")
        #expect(refused.output.contains("hint: Use one of local"), "\(refused.output)")

        // A key variable that is not set: named; its would-be value never appears.
        let keyed = directory.appendingPathComponent("keyed.json")
        try """
            {"providers": {"claude": {"kind": "anthropic", "api_key_env": "KEEL_TEST_UNSET_KEY"}},
             "models": {"haiku": {"provider": "claude", "model": "claude-haiku-4-5"}}}
            """.write(to: keyed, atomically: true, encoding: .utf8)
        let unset = try await KeelProcess.run(["worker", "--store", store, "--models", keyed.path])
        #expect(unset.status == 2 && unset.output.contains("KEEL_TEST_UNSET_KEY, which is not set") && unset.output.contains(":1:"), "\(unset.output)")

        // The models file through the environment, as KEEL_MODELS.
        let viaEnvironment = try await KeelProcess.run(["doctor", "--store", store], environment: ["KEEL_MODELS": bad.path])
        #expect(viaEnvironment.status == 1 && viaEnvironment.output.contains("FAIL  models") && viaEnvironment.output.contains(":3:"), "\(viaEnvironment.output)")
    }

    @Test("keel models check asks every model of the three providers and prints latency or the error; keel doctor checks the file")
    func modelsCheck() async throws {
        try await Self.withFakes { openai, anthropic, bedrock in
            let file = try Self.modelsFile(
                openai: openai, anthropic: anthropic, bedrock: bedrock, extra: #", "broken": {"provider": "local", "model": "server-error"}"#)
            let checked = try await KeelProcess.run(["models", "check", "--models", file, "--timeout", "30s"], environment: Self.environment)
            #expect(checked.status == 1, "\(checked.output)")
            for line in ["PASS  haiku (claude: ok): first token", "PASS  sonnet (bedrock: ok.anthropic.claude-sonnet-4-5-20250929-v1:0): first token", "FAIL  broken (local: server-error): server_error", "failed: 2 of 4 model(s)"] {
                #expect(checked.output.contains(line), "missing \(line) in\n\(checked.output)")
            }
            // cut-after-3 ends without its terminator: a failure, not a short success.
            #expect(checked.output.contains("FAIL  cut (local: cut-after-3): stream_cut"), "\(checked.output)")
            #expect(!checked.output.contains(Self.anthropicKey) && !checked.output.contains(Self.awsSecret))

            let only = try await KeelProcess.run(["models", "check", "--models", file, "--model", "haiku"], environment: Self.environment)
            #expect(only.status == 0 && only.output.contains("ok: 1 model(s) answered"), "\(only.output)")

            let fixture = try await StoreFixture.make(.sqlite)
            let store = "sqlite:" + fixture.directory.appendingPathComponent("keel.sqlite").path
            let doctor = try await KeelProcess.run(["doctor", "--store", store, "--models", file], environment: Self.environment)
            #expect(doctor.output.contains("PASS  models") && doctor.output.contains("4 model(s) on 3 provider(s)"), "\(doctor.output)")
            let missing = try await KeelProcess.run(["doctor", "--store", store, "--models", file], environment: ["AWS_ACCESS_KEY_ID": "AKIDFAKEKEEL"])
            #expect(missing.status == 1 && missing.output.contains("FAIL  models"), "\(missing.output)")
        }
    }

    @Test("a stream cut on one provider continues on another: the text goes on once, and the next model is given the partial answer")
    func continuationAcrossProviders() async throws {
        try await Self.withFakes { openai, anthropic, bedrock in
            let file = try Self.modelsFile(openai: openai, anthropic: anthropic, bedrock: bedrock)
            var settings = ModelSettings()
            settings.file = file
            let service = try #require(try ModelService.load(settings, environment: Self.environment))
            let fixture = try await StoreFixture.make(.sqlite)
            try await fixture.withStore { store in
                let router = service.router(healthStore: store.modelHealth, metrics: nil, logger: TestEnvironment.logger)
                var text = ""
                var fallbacks: [ModelFallback] = []
                var summary: RoutingSummary?
                for try await event in router.stream(RoutedRequest(messages: [.system("be brief"), .user("count")])) {
                    switch event {
                    case .text(let piece): text += piece
                    case .fallback(let fallback): fallbacks.append(fallback)
                    case .finished(let done): summary = done
                    default: break
                    }
                }
                #expect(text == "tok0 tok1 tok2 " + (0..<6).map { "tok\($0) " }.joined(), "\(text)")
                #expect(fallbacks.map(\.reason) == ["stream_cut"] && fallbacks.first?.afterFirstToken == true)
                #expect(summary?.models == ["cut", "haiku"] && summary?.answeredBy == "haiku")
                #expect(summary?.usage["haiku"] != nil)
                // What the second model was sent: the partial answer, then the instruction.
                let sent = try JSONValue.parse(Array(try await HTTP.send(.GET, anthropic.rootURL + "/_fake/requests").body.utf8)).arrayValue ?? []
                let messages = sent.last?.objectValue?["body"]?.objectValue?["messages"]?.arrayValue ?? []
                let contents = messages.compactMap { $0.objectValue?["content"] }.map { content -> String in
                    if let text = content.stringValue { return text }
                    return content.arrayValue?.compactMap { $0.objectValue?["text"]?.stringValue }.joined() ?? ""
                }
                #expect(contents.suffix(2) == ["tok0 tok1 tok2 ", ContinuationPrompt.instruction], "\(messages)")
            }
            await service.shutdown()
        }
    }
}
