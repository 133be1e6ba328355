import AsyncHTTPClient
import Foundation
import KeelCore
import KeelModels
import Testing

/// End to end with a real model: SmolLM2-135M-Instruct, run on the CPU by
/// `Tests/Clients/models/smollm2_server.py` behind OpenAI's chat completions
/// API, streamed through ``OpenAICompatibleProvider``. The assertions are
/// about the protocol (text, a finish reason, usage), never the words.
///
/// `scripts/test` installs the model and sets `KEEL_TEST_MODEL_PYTHON` and
/// `KEEL_TEST_MODEL_FILE`; without them the tests are skipped locally and
/// fail on CI (`CI=true`). The model is slow on a loaded machine (tens of
/// seconds for an answer while other tests run): the limits are generous,
/// and the suite runs one request at a time.
@Suite("A real small model through the OpenAI-compatible provider", .serialized)
struct RealModelTests {
    static let model = "smollm2-135m-instruct"
    static let messages: [ChatMessage] = [.system("You are a helpful assistant."), .user("Name three colours.")]
    /// The longest wait for the model's next bytes (the first token included).
    static let idle: Duration = .seconds(120)

    /// Skips the test, or fails it on CI.
    static func unavailable(_ why: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> Never {
        if ProcessInfo.processInfo.environment["CI"] == "true" {
            Issue.record("CI must run the real model: \(why)", sourceLocation: sourceLocation)
        }
        try Test.cancel("skipped: \(why)", sourceLocation: sourceLocation)
    }

    /// Runs `body` with a fresh model server and an HTTP client, and shuts both down.
    func withModel(_ body: (OpenAICompatibleProvider) async throws -> Void) async throws {
        guard FakeOpenAIUpstream.model != nil else {
            try Self.unavailable("no model: KEEL_TEST_MODEL_PYTHON and KEEL_TEST_MODEL_FILE are not set (scripts/test sets them)")
        }
        let log = try TestEnvironment.directory("smollm2").appendingPathComponent("stderr.log")
        let server: FakeOpenAIUpstream
        do {
            server = try await FakeOpenAIUpstream.startModel(log: log)
        } catch {
            try Self.unavailable("smollm2_server.py did not start: \(error)")
        }
        let client = HTTPClient(eventLoopGroupProvider: .singleton)
        let provider = OpenAICompatibleProvider(
            baseURL: server.baseURL, apiKey: nil, httpClient: client, idleTimeout: Self.idle)
        do {
            try await body(provider)
        } catch {
            try await client.shutdown()
            server.stop()
            throw error
        }
        try await client.shutdown()
        server.stop()
    }

    func collect(_ provider: OpenAICompatibleProvider, maxTokens: Int, stop: [String] = []) async throws
        -> [ChatStreamEvent]
    {
        let request = ChatRequest(
            model: Self.model, messages: Self.messages, maxTokens: maxTokens, temperature: 0, stop: stop)
        var events: [ChatStreamEvent] = []
        for try await event in provider.stream(request) { events.append(event) }
        return events
    }

    static func text(_ events: [ChatStreamEvent]) -> String {
        events.map { if case .text(let text) = $0 { text } else { "" } }.joined()
    }

    static func finishReasons(_ events: [ChatStreamEvent]) -> [String] {
        events.compactMap { if case .finished(let reason) = $0 { reason } else { nil } }
    }

    static func usages(_ events: [ChatStreamEvent]) -> [ChatUsage] {
        events.compactMap { if case .usage(let usage) = $0 { usage } else { nil } }
    }

    @Test(.timeLimit(.minutes(5)))
    func streamsTextThenFinishThenUsage() async throws {
        try await withModel { provider in
            let started = ContinuousClock.now
            let events = try await collect(provider, maxTokens: 24)
            let elapsed = ContinuousClock.now - started

            let texts = events.filter { if case .text = $0 { true } else { false } }
            #expect(!texts.isEmpty, "no text: \(events)")
            #expect(!Self.text(events).trimmingCharacters(in: .whitespacesAndNewlines).isEmpty)
            let reasons = Self.finishReasons(events)
            #expect(reasons.count == 1 && ["stop", "length"].contains(reasons.first ?? ""), "\(events)")
            let usage = try #require(Self.usages(events).first, "no usage: \(events)")
            #expect(Self.usages(events).count == 1)
            #expect(usage.inputTokens > 0)
            #expect((1...24).contains(usage.outputTokens), "\(usage)")
            #expect((reasons.first == "length") == (usage.outputTokens == 24), "\(reasons) \(usage)")
            // Text first, then the finish reason, usage last; no more text
            // chunks than tokens.
            #expect(events.last == .usage(usage))
            let finishIndex = try #require(events.firstIndex { if case .finished = $0 { true } else { false } })
            #expect(texts.count == finishIndex, "text after the finish reason: \(events)")
            #expect(texts.count <= usage.outputTokens)
            print("RealModelTests: \(usage.outputTokens) tokens in \(elapsed): \(Self.text(events).debugDescription)")
        }
    }

    @Test(.timeLimit(.minutes(5)))
    func maxTokensAndStopAreHonoured() async throws {
        try await withModel { provider in
            let short = try await collect(provider, maxTokens: 3)
            let usage = try #require(Self.usages(short).first, "no usage: \(short)")
            #expect((1...3).contains(usage.outputTokens), "\(usage)")
            #expect(Self.finishReasons(short) == [usage.outputTokens == 3 ? "length" : "stop"], "\(short)")

            // Cut before the first space (a 135M model writes one within 40 tokens).
            let stopped = try await collect(provider, maxTokens: 40, stop: [" "])
            #expect(!Self.text(stopped).contains(" "), "\(stopped)")
            #expect(Self.finishReasons(stopped) == ["stop"], "\(stopped)")
            #expect(Self.usages(stopped).count == 1)
        }
    }

    /// The official `openai` Python client reads the same server
    /// (`Tests/Clients/models/check_smollm2_server.py`, run under
    /// `KEEL_TEST_PYTHON`; it starts the server itself).
    @Test(.timeLimit(.minutes(10)))
    func officialClientReadsTheModelServer() async throws {
        guard FakeOpenAIUpstream.model != nil else {
            try Self.unavailable("no model: KEEL_TEST_MODEL_PYTHON and KEEL_TEST_MODEL_FILE are not set (scripts/test sets them)")
        }
        let script = FakeOpenAIUpstream.scriptsDirectory.appendingPathComponent("check_smollm2_server.py").path
        let (status, output) = try await FakeOpenAIFidelityTests.run([script])
        if status == 3 || status == 127 || status == -1 {
            try Self.unavailable(
                "\(FakeOpenAIUpstream.python) cannot import openai (pip install openai, or set KEEL_TEST_PYTHON)\n\(output)")
        }
        if status == 4 {
            try Self.unavailable("check_smollm2_server.py found no model or could not start it:\n\(output)")
        }
        #expect(status == 0, "check_smollm2_server.py failed:\n\(output)")
        #expect(output.contains(" passed, 0 failed"))
    }

    @Test("through the router: a stream cut on a fake continues on the real model, and keel models check times it", .timeLimit(.minutes(5)))
    func routerContinuesOnTheRealModel() async throws {
        guard FakeOpenAIUpstream.model != nil else {
            try Self.unavailable("no model: KEEL_TEST_MODEL_PYTHON and KEEL_TEST_MODEL_FILE are not set (scripts/test sets them)")
        }
        let log = try TestEnvironment.directory("smollm2").appendingPathComponent("stderr.log")
        let server: FakeOpenAIUpstream
        do {
            server = try await FakeOpenAIUpstream.startModel(log: log)
        } catch {
            try Self.unavailable("smollm2_server.py did not start: \(error)")
        }
        defer { server.stop() }
        let fake = try await FakeOpenAIUpstream.start()
        defer { fake.stop() }
        let file = try TestEnvironment.directory("real-models").appendingPathComponent("models.json")
        try """
            {"providers": {"fake": {"kind": "openai", "base_url": "\(fake.baseURL)"},
                           "local": {"kind": "openai", "base_url": "\(server.baseURL)"}},
             "models": {"cut": {"provider": "fake", "model": "cut-after-3"},
                        "small": {"provider": "local", "model": "\(Self.model)", "max_tokens": 24}},
             "chains": {"default": ["cut", "small"]}}
            """.write(to: file, atomically: true, encoding: .utf8)

        let checked = try await KeelProcess.run(["models", "check", "--models", file.path, "--model", "small", "--timeout", "120s"])
        #expect(checked.status == 0 && checked.output.contains("PASS  small (local: \(Self.model)): first token"), "\(checked.output)")

        var settings = ModelSettings()
        settings.file = file.path
        settings.idleTimeout = Self.idle
        settings.firstTokenTimeout = Self.idle
        let service = try #require(try ModelService.load(settings, environment: [:]))
        let fixture = try await StoreFixture.make(.sqlite)
        try await fixture.withStore { store in
            let router = service.router(healthStore: store.modelHealth, metrics: nil, logger: TestEnvironment.logger)
            let answer = try await router.complete(RoutedRequest(messages: Self.messages, temperature: 0))
            #expect(answer.text.hasPrefix("tok0 tok1 tok2 ") && answer.text.count > "tok0 tok1 tok2 ".count, "\(answer.text)")
            #expect(answer.summary.fallbacks.map(\.reason) == ["stream_cut"] && answer.summary.answeredBy == "small")
            let usage = try #require(answer.summary.usage["small"])
            #expect(usage.inputTokens > 0 && usage.outputTokens > 0)
        }
        await service.shutdown()
    }
}
