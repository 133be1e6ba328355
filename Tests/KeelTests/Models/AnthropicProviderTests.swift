import AsyncHTTPClient
import Foundation
import KeelModels
import Testing

/// The Anthropic Messages client against `fake_anthropic.py`, one fake per test.
@Suite("Anthropic provider")
struct AnthropicProviderTests {
    static let key = "sk-ant-test-4f1e9a7c2b8d6053e1a9"
    static let tokens = (0..<6).map { "tok\($0) " }

    /// Runs `body` with a fresh fake and an HTTP client, and shuts both down.
    func withFake(
        apiKey: String? = nil, _ body: (FakeOpenAIUpstream, HTTPClient) async throws -> Void
    ) async throws {
        try await withFakeUpstream("fake_anthropic.py", apiKey: apiKey, body)
    }

    func provider(
        _ fake: FakeOpenAIUpstream, _ client: HTTPClient, key: String? = key,
        authentication: AnthropicProvider.Authentication = .apiKeyHeader, idle: Duration = .seconds(20)
    ) -> AnthropicProvider {
        AnthropicProvider(
            baseURL: fake.rootURL + "/", apiKey: key, authentication: authentication, httpClient: client,
            idleTimeout: idle)
    }

    @Test func okStreamsTextThenFinishThenUsage() async throws {
        try await withFake(apiKey: Self.key) { fake, client in
            let outcome = await collect(
                provider(fake, client), model: "ok", maxTokens: 50, temperature: 0.25, stop: ["\n\n"])
            #expect(outcome.error == nil)
            let expected: [ChatStreamEvent] =
                Self.tokens.map { .text($0) } + [.finished(reason: "end_turn"), .usage(ChatUsage(inputTokens: 15, outputTokens: 6))]
            #expect(outcome.events == expected)

            // The request on the wire.
            let sent = try #require(try await fake.requests(client).last)
            #expect(sent["authorization_ok"] as? Bool == true)
            #expect(sent["x_api_key_sent"] as? Bool == true)
            #expect(sent["bearer_sent"] as? Bool == false)
            #expect(sent["anthropic_version"] as? String == "2023-06-01")
            let body = try #require(sent["body"] as? [String: Any])
            #expect(body["model"] as? String == "ok")
            #expect(body["stream"] as? Bool == true)
            #expect(body["max_tokens"] as? Int == 50)
            #expect(body["temperature"] as? Double == 0.25)
            #expect(body["stop_sequences"] as? [String] == ["\n\n"])
            #expect(body["system"] as? String == "be brief")
            #expect(body["thinking"] == nil)
            let messages = try #require(body["messages"] as? [[String: String]])
            #expect(messages == [["role": "user", "content": "say some tokens"]])
        }
    }

    @Test func bearerAuthenticationAndDefaultMaxTokens() async throws {
        try await withFake(apiKey: Self.key) { fake, client in
            let outcome = await collect(provider(fake, client, authentication: .bearer), model: "ok")
            #expect(outcome.error == nil)
            #expect(outcome.text == Self.tokens.joined())
            let sent = try #require(try await fake.requests(client).last)
            #expect(sent["authorization_ok"] as? Bool == true)
            #expect(sent["bearer_sent"] as? Bool == true)
            #expect(sent["x_api_key_sent"] as? Bool == false)
            #expect((sent["body"] as? [String: Any])?["max_tokens"] as? Int == 1024)
        }
    }

    @Test func systemMessagesBecomeTheSystemField() async throws {
        try await withFake { fake, client in
            let request = ChatRequest(
                model: "ok",
                messages: [.system("rule one"), .user("hi"), .system("rule two"), .assistant("hello"), .user("more")])
            for try await _ in provider(fake, client).stream(request) {}
            let body = try #require(try await fake.requests(client).last?["body"] as? [String: Any])
            #expect(body["system"] as? String == "rule one\n\nrule two")
            let messages = try #require(body["messages"] as? [[String: String]])
            #expect(
                messages == [
                    ["role": "user", "content": "hi"], ["role": "assistant", "content": "hello"],
                    ["role": "user", "content": "more"],
                ])
        }
    }

    @Test func maxTokensEndsWithMaxTokens() async throws {
        try await withFake { fake, client in
            let outcome = await collect(provider(fake, client), model: "ok", maxTokens: 3)
            #expect(outcome.error == nil)
            #expect(outcome.text == "tok0 tok1 tok2 ")
            #expect(outcome.events.contains(.finished(reason: "max_tokens")))
            #expect(outcome.events.last == .usage(ChatUsage(inputTokens: 15, outputTokens: 3)))
        }
    }

    @Test func withoutUsageNoUsageEvent() async throws {
        try await withFake { fake, client in
            let request = ChatRequest(model: "ok", messages: [.user("hi")], includeUsage: false)
            var events: [ChatStreamEvent] = []
            for try await event in provider(fake, client).stream(request) { events.append(event) }
            #expect(events == Self.tokens.map { .text($0) } + [.finished(reason: "end_turn")])
            let body = try #require(try await fake.requests(client).last?["body"] as? [String: Any])
            #expect(body["system"] == nil)
        }
    }

    @Test func thinkingComesBeforeTextAndSignatureIsSkipped() async throws {
        try await withFake { fake, client in
            let outcome = await collect(provider(fake, client), model: "thinking", thinkingBudget: 2048)
            #expect(outcome.error == nil)
            #expect(outcome.reasoning == "think0 think1 think2 think3 ")
            #expect(outcome.text == Self.tokens.joined())
            let firstText = try #require(outcome.events.firstIndex { if case .text = $0 { true } else { false } })
            let lastReasoning = try #require(outcome.events.lastIndex { if case .reasoning = $0 { true } else { false } })
            #expect(lastReasoning < firstText)
            #expect(outcome.events.last == .usage(ChatUsage(inputTokens: 15, outputTokens: 10)))
            let body = try #require(try await fake.requests(client).last?["body"] as? [String: Any])
            let thinking = try #require(body["thinking"] as? [String: Any])
            #expect(thinking["type"] as? String == "enabled")
            #expect(thinking["budget_tokens"] as? Int == 2048)
            // max_tokens must exceed the budget when the request sets none.
            #expect(body["max_tokens"] as? Int == 2048 + 1024)
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
            #expect(error.message.contains("rate limit"))
            #expect(outcome.events.isEmpty)
        }
    }

    @Test func statusFailuresAreClassified() async throws {
        try await withFake { fake, client in
            let cases: [(String, ProviderError.Kind, Bool)] = [
                ("server-error", .serverError(status: 500), true),
                ("overloaded", .overloaded, true),
                ("spend-limit", .spendLimit, false),
                ("credit-balance", .spendLimit, false),
                ("bad-request", .badRequest(status: 400), false),
                ("forbidden", .unauthorized(status: 403), false),
            ]
            for (model, kind, retryable) in cases {
                let error = try #require(await collect(provider(fake, client), model: model).providerError, "\(model)")
                #expect(error.kind == kind, "\(model)")
                #expect(error.retryable == retryable, "\(model)")
            }
            let spend = try #require(await collect(provider(fake, client), model: "spend-limit").providerError)
            #expect(spend.status == 429)
            #expect(spend.coolsLong)
            #expect(spend.message.contains("credit balance"))
        }
    }

    @Test func unauthorizedNeverShowsTheKey() async throws {
        try await withFake(apiKey: "sk-ant-the-right-key") { fake, client in
            // The fake echoes the whole wrong key in its 401 body.
            for authentication in [AnthropicProvider.Authentication.apiKeyHeader, .bearer] {
                let outcome = await collect(provider(fake, client, authentication: authentication), model: "ok")
                let error = try #require(outcome.providerError)
                #expect(error.kind == .unauthorized(status: 401))
                #expect(!error.retryable)
                #expect(error.coolsLong)
                #expect(error.message.contains("invalid x-api-key"))
                #expect(!error.message.contains(Self.key))
                #expect(!String(describing: error).contains(Self.key))
            }
        }
    }

    @Test func inBandOverloadedAfterTokens() async throws {
        try await withFake { fake, client in
            let outcome = await collect(provider(fake, client), model: "overloaded-after-2")
            #expect(outcome.text == "tok0 tok1 ")
            let error = try #require(outcome.providerError)
            #expect(error.kind == .overloaded)
            #expect(error.status == nil)
            #expect(error.retryable)
            #expect(!outcome.events.contains { if case .finished = $0 { true } else { false } })
        }
    }

    @Test func inBandOtherErrorAfterTokens() async throws {
        try await withFake { fake, client in
            let outcome = await collect(provider(fake, client), model: "inband-error-after-1")
            #expect(outcome.text == "tok0 ")
            let error = try #require(outcome.providerError)
            #expect(error.kind == .inBand(code: "api_error"))
            #expect(error.retryable)
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

    @Test func malformedEvent() async throws {
        try await withFake { fake, client in
            let outcome = await collect(provider(fake, client), model: "malformed")
            #expect(outcome.text == "tok0 tok1 ")
            #expect(outcome.providerError?.kind == .malformed)
        }
    }

    @Test func theKeyIsInNoErrorDescription() async throws {
        try await withFake { fake, client in
            for model in [
                "rate-limit", "spend-limit", "server-error", "overloaded", "bad-request", "forbidden", "cut-after-1",
                "overloaded-after-1", "malformed",
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
