import AsyncHTTPClient
import Foundation
import KeelModels
import Testing

/// The OpenAI-compatible client against `fake_openai.py`, one fake per test.
@Suite("OpenAI-compatible provider")
struct OpenAICompatibleProviderTests {
    static let key = "sk-test-4f1e9a7c2b8d6053e1a9"
    static let tokens = (0..<6).map { "tok\($0) " }

    /// Runs `body` with a fresh fake and an HTTP client, and shuts both down.
    func withFake(
        apiKey: String? = nil, _ body: (FakeOpenAIUpstream, HTTPClient) async throws -> Void
    ) async throws {
        try await withFakeUpstream("fake_openai.py", apiKey: apiKey, body)
    }

    func provider(_ fake: FakeOpenAIUpstream, _ client: HTTPClient, key: String? = key, idle: Duration = .seconds(20))
        -> OpenAICompatibleProvider
    {
        OpenAICompatibleProvider(baseURL: fake.baseURL + "/", apiKey: key, httpClient: client, idleTimeout: idle)
    }

    @Test func okStreamsTextThenFinishThenUsage() async throws {
        try await withFake(apiKey: Self.key) { fake, client in
            let outcome = await collect(
                provider(fake, client), model: "ok", maxTokens: 50, temperature: 0.25, stop: ["\n\n"])
            #expect(outcome.error == nil)
            let expected: [ChatStreamEvent] =
                Self.tokens.map { .text($0) } + [.finished(reason: "stop"), .usage(ChatUsage(inputTokens: 16, outputTokens: 6))]
            #expect(outcome.events == expected)

            // The request on the wire.
            let sent = try #require(try await fake.requests(client).last)
            #expect(sent["authorization_ok"] as? Bool == true)
            let body = try #require(sent["body"] as? [String: Any])
            #expect(body["model"] as? String == "ok")
            #expect(body["stream"] as? Bool == true)
            #expect((body["stream_options"] as? [String: Any])?["include_usage"] as? Bool == true)
            #expect(body["max_tokens"] as? Int == 50)
            #expect(body["temperature"] as? Double == 0.25)
            #expect(body["stop"] as? [String] == ["\n\n"])
            let messages = try #require(body["messages"] as? [[String: String]])
            #expect(messages == [["role": "system", "content": "be brief"], ["role": "user", "content": "say some tokens"]])
        }
    }

    @Test func maxTokensEndsWithLength() async throws {
        try await withFake { fake, client in
            let outcome = await collect(provider(fake, client), model: "ok", maxTokens: 3)
            #expect(outcome.error == nil)
            #expect(outcome.text == "tok0 tok1 tok2 ")
            #expect(outcome.events.contains(.finished(reason: "length")))
            #expect(outcome.events.last == .usage(ChatUsage(inputTokens: 16, outputTokens: 3)))
        }
    }

    @Test func withoutUsageNoStreamOptions() async throws {
        try await withFake { fake, client in
            let request = ChatRequest(model: "ok", messages: [.user("hi")], includeUsage: false)
            var events: [ChatStreamEvent] = []
            for try await event in provider(fake, client, key: nil).stream(request) { events.append(event) }
            #expect(events == Self.tokens.map { .text($0) } + [.finished(reason: "stop")])
            let sent = try #require(try await fake.requests(client).last)
            #expect(sent["authorization_sent"] as? Bool == false)
            #expect((sent["body"] as? [String: Any])?["stream_options"] == nil)
        }
    }

    @Test(arguments: ["reasoning", "reasoning-field"])
    func reasoningComesBeforeText(model: String) async throws {
        try await withFake { fake, client in
            let outcome = await collect(provider(fake, client), model: model)
            #expect(outcome.error == nil)
            #expect(outcome.reasoning == "think0 think1 think2 think3 ")
            #expect(outcome.text == Self.tokens.joined())
            let firstText = try #require(outcome.events.firstIndex { if case .text = $0 { true } else { false } })
            let lastReasoning = try #require(outcome.events.lastIndex { if case .reasoning = $0 { true } else { false } })
            #expect(lastReasoning < firstText)
            #expect(outcome.events.last == .usage(ChatUsage(inputTokens: 16, outputTokens: 10)))
        }
    }

    @Test("stream: false asks for one chat.completion and reads it into a stream's events, in a stream's order")
    func wholeAnswer() async throws {
        try await withFake(apiKey: Self.key) { fake, client in
            let outcome = await collect(provider(fake, client), model: "reasoning", maxTokens: 50, stream: false)
            #expect(outcome.error == nil)
            let expected: [ChatStreamEvent] = [
                .reasoning("think0 think1 think2 think3 "), .text(Self.tokens.joined()), .finished(reason: "stop"),
                .usage(ChatUsage(inputTokens: 16, outputTokens: 10)),
            ]
            #expect(outcome.events == expected)
            let sent = try #require(try await fake.requests(client).last)
            let body = try #require(sent["body"] as? [String: Any])
            #expect(body["stream"] as? Bool == false)
            #expect(body["stream_options"] == nil, "OpenAI refuses stream_options without a stream")
            #expect(body["max_tokens"] as? Int == 50)

            let short = await collect(provider(fake, client), model: "ok", maxTokens: 3, stream: false)
            #expect(short.text == "tok0 tok1 tok2 " && short.events.contains(.finished(reason: "length")))
            // A failure is classified as a stream's would be.
            let limited = try #require(await collect(provider(fake, client), model: "rate-limit", stream: false).providerError)
            #expect(limited.kind == .rateLimited(retryAfter: .seconds(2)))
            let refused = try #require(await collect(provider(fake, client, key: "sk-wrong"), model: "ok", stream: false).providerError)
            #expect(refused.status == 401 && !refused.message.contains("sk-wrong"))
        }
    }

    @Test func rateLimitHonoursRetryAfter() async throws {
        try await withFake { fake, client in
            let outcome = await collect(provider(fake, client), model: "rate-limit")
            let error = try #require(outcome.providerError)
            #expect(error.kind == .rateLimited(retryAfter: .seconds(2)))
            #expect(error.retryAfter == .seconds(2))
            #expect(error.status == 429)
            #expect(error.retryable)
            #expect(error.message.contains("Rate limit reached"))
            #expect(outcome.events.isEmpty)

            let ms = try #require(await collect(provider(fake, client), model: "rate-limit-ms").providerError)
            #expect(ms.kind == .rateLimited(retryAfter: .milliseconds(1500)))
        }
    }

    @Test func statusFailuresAreClassified() async throws {
        try await withFake { fake, client in
            let cases: [(String, ProviderError.Kind, Bool)] = [
                ("server-error", .serverError(status: 500), true),
                ("overloaded", .overloaded, true),
                ("quota", .spendLimit, false),
                ("bad-request", .badRequest(status: 400), false),
            ]
            for (model, kind, retryable) in cases {
                let error = try #require(await collect(provider(fake, client), model: model).providerError, "\(model)")
                #expect(error.kind == kind, "\(model)")
                #expect(error.retryable == retryable, "\(model)")
            }
        }
    }

    @Test func unauthorizedNeverShowsTheKey() async throws {
        try await withFake(apiKey: "sk-the-right-key") { fake, client in
            // The fake echoes the whole wrong key in its 401 body.
            let outcome = await collect(provider(fake, client, key: Self.key), model: "ok")
            let error = try #require(outcome.providerError)
            #expect(error.kind == .unauthorized(status: 401))
            #expect(!error.retryable)
            #expect(error.coolsLong)
            #expect(error.message.contains("Incorrect API key provided"))
            #expect(!error.message.contains(Self.key))
            #expect(!String(describing: error).contains(Self.key))
            #expect(!error.localizedDescription.contains(Self.key))
        }
    }

    @Test func cutAfterTokensIsTruncated() async throws {
        try await withFake { fake, client in
            let outcome = await collect(provider(fake, client), model: "cut-after-3")
            #expect(outcome.text == "tok0 tok1 tok2 ")
            let error = try #require(outcome.providerError)
            #expect(error.kind == .truncated)
            #expect(error.retryable)
            #expect(!outcome.events.contains { if case .finished = $0 { true } else { false } })
        }
    }

    @Test func inBandErrorAfterTokens() async throws {
        try await withFake { fake, client in
            let outcome = await collect(provider(fake, client), model: "inband-error-after-2")
            #expect(outcome.text == "tok0 tok1 ")
            let error = try #require(outcome.providerError)
            #expect(error.kind == .inBand(code: "invalid_model_output"))
            #expect(error.message.contains("invalid content"))
            #expect(error.retryable)
        }
    }

    @Test func stallHitsTheIdleTimeout() async throws {
        try await withFake { fake, client in
            let started = ContinuousClock.now
            // Idle limit well above a loaded machine's gaps between the first
            // chunks (800 ms was not, in CI), well below the fake's 30 s stall.
            let outcome = await collect(provider(fake, client, idle: .seconds(5)), model: "stall-after-2")
            let elapsed = ContinuousClock.now - started
            #expect(outcome.text == "tok0 tok1 ")
            let error = try #require(outcome.providerError)
            #expect(error.kind == .timeout)
            #expect(error.retryable)
            #expect(elapsed < .seconds(25), "the stalled request was not cancelled: \(elapsed)")
        }
    }

    @Test func malformedChunk() async throws {
        try await withFake { fake, client in
            let outcome = await collect(provider(fake, client), model: "malformed")
            #expect(outcome.text == "tok0 tok1 ")
            #expect(outcome.providerError?.kind == .malformed)
        }
    }

    @Test func connectionRefusedIsConnect() async throws {
        let fake: FakeOpenAIUpstream
        do {
            fake = try await FakeOpenAIUpstream.start()
        } catch {
            try Test.cancel("skipped: no Python for the fake: \(error)")
        }
        fake.stop()  // its port is now closed
        // AsyncHTTPClient retries a refused connection until its connect
        // timeout (10 s by default): Keel's client must set a short one.
        let client = HTTPClient(
            eventLoopGroupProvider: .singleton,
            configuration: HTTPClient.Configuration(timeout: .init(connect: .seconds(1))))
        let outcome = await collect(provider(fake, client), model: "ok")
        try await client.shutdown()
        let error = try #require(outcome.providerError)
        #expect(error.kind == .connect)
        #expect(error.retryable)
        #expect(!error.message.contains(Self.key))
    }

    @Test func theKeyIsInNoErrorDescription() async throws {
        try await withFake { fake, client in
            for model in [
                "rate-limit", "quota", "server-error", "overloaded", "bad-request", "cut-after-1",
                "inband-error-after-1", "malformed",
            ] {
                let outcome = await collect(provider(fake, client), model: model)
                let error = try #require(outcome.error, "\(model)")
                #expect(!String(describing: error).contains(Self.key), "\(model)")
                #expect(!String(reflecting: error).contains(Self.key), "\(model)")
            }
        }
    }

    @Test func cancellingTheConsumerEndsTheRequest() async throws {
        try await withFake { fake, client in
            let provider = provider(fake, client, idle: .seconds(60))
            let started = ContinuousClock.now
            let task = Task {
                var count = 0
                for try await _ in provider.stream(ChatRequest(model: "stall-after-1", messages: [.user("x")])) {
                    count += 1
                }
                return count
            }
            try await Task.sleep(for: .milliseconds(500))
            task.cancel()
            _ = await task.result
            #expect(ContinuousClock.now - started < .seconds(20))
        }
    }
}
