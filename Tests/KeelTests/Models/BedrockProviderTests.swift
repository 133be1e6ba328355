import AsyncHTTPClient
import Foundation
import KeelModels
import NIOHTTP1
import Testing

/// The Bedrock ConverseStream client against `fake_bedrock.py`, one fake per
/// test. The fake verifies every SigV4 signature (a bad one is a 403), so
/// each successful stream also proves the signing, `:` model id included.
@Suite("Bedrock provider")
struct BedrockProviderTests {
    static let accessKey = "AKIAKEELBEDROCKTEST1"
    static let secretKey = "keel/Bedrock+Test/Secret0123456789abcdefgh"
    static let sessionToken = "IQoJb3JpZ2luX2VjKeelSessionToken//////////wEaCXVzLWVhc3QtMSJHMEUCIQ=="
    static let apiKey = "ABSKa2VlbC1iZWRyb2NrLWFwaS1rZXktN2QzZg=="
    static let region = "eu-north-1"
    static let modelTail = "anthropic.claude-sonnet-4-5-20250929-v1:0"
    static let tokens = (0..<6).map { "tok\($0) " }
    static let awsCredentials = BedrockCredentials.aws(AWSCredentials(accessKeyID: accessKey, secretAccessKey: secretKey))

    /// A model id whose first dot-separated part is the fake's mode, ending
    /// in a real Bedrock id with a `:`.
    static func model(_ mode: String) -> String { "\(mode).\(modelTail)" }

    /// Runs `body` with a fresh fake (SigV4 with the test keys, and the API
    /// key as a bearer token) and an HTTP client, and shuts both down.
    func withFake(
        sessionToken: String? = nil, _ body: (FakeOpenAIUpstream, HTTPClient) async throws -> Void
    ) async throws {
        try await withFakeUpstream(
            "fake_bedrock.py", apiKey: Self.apiKey,
            arguments: ["--access-key", Self.accessKey, "--secret-key", Self.secretKey]
                + (sessionToken.map { ["--session-token", $0] } ?? []),
            body)
    }

    func provider(
        _ fake: FakeOpenAIUpstream, _ client: HTTPClient, credentials: BedrockCredentials = awsCredentials,
        idle: Duration = .seconds(20)
    ) -> BedrockProvider {
        BedrockProvider(
            region: Self.region, endpoint: fake.rootURL + "/", credentials: credentials, httpClient: client,
            idleTimeout: idle)
    }

    static func isFinished(_ event: ChatStreamEvent) -> Bool {
        if case .finished = event { true } else { false }
    }

    // MARK: - Streams

    @Test("a ':' model id, signed with SigV4: text, then finished, then usage")
    func okStreamsTextThenFinishThenUsage() async throws {
        try await withFake { fake, client in
            let outcome = await collect(
                provider(fake, client), model: Self.model("ok"), maxTokens: 50, temperature: 0.25, stop: ["\n\n"])
            #expect(outcome.error == nil)
            let expected: [ChatStreamEvent] =
                Self.tokens.map { .text($0) } + [.finished(reason: "end_turn"), .usage(ChatUsage(inputTokens: 15, outputTokens: 6))]
            #expect(outcome.events == expected)

            // The request on the wire: the fake verified its signature.
            let sent = try #require(try await fake.requests(client).last)
            #expect(sent["auth"] as? String == "sigv4")
            #expect(sent["signature_ok"] as? Bool == true)
            #expect(sent["session_token_sent"] as? Bool == false)
            #expect(sent["model_id"] as? String == Self.model("ok"))
            #expect(sent["raw_path"] as? String == "/model/ok.anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse-stream")
            #expect(sent["canonical_uri"] as? String == "/model/ok.anthropic.claude-sonnet-4-5-20250929-v1%253A0/converse-stream")
            #expect(sent["region"] as? String == Self.region)
            #expect(sent["service"] as? String == "bedrock")
            #expect(sent["signed_headers"] as? String == "accept;content-type;host;x-amz-date")
            #expect(sent["content_type"] as? String == "application/json")
            #expect(sent["accept"] as? String == "application/vnd.amazon.eventstream")
            let body = try #require(sent["body"] as? [String: Any])
            #expect(Set(body.keys) == ["messages", "system", "inferenceConfig"])
            let messages = try #require(body["messages"] as? [[String: Any]])
            #expect(messages.count == 1)
            #expect(messages.first?["role"] as? String == "user")
            #expect(messages.first?["content"] as? [[String: String]] == [["text": "say some tokens"]])
            #expect(body["system"] as? [[String: String]] == [["text": "be brief"]])
            let config = try #require(body["inferenceConfig"] as? [String: Any])
            #expect(config["maxTokens"] as? Int == 50)
            #expect(config["temperature"] as? Double == 0.25)
            #expect(config["stopSequences"] as? [String] == ["\n\n"])
        }
    }

    @Test func sessionTokenIsSentAndSigned() async throws {
        try await withFake(sessionToken: Self.sessionToken) { fake, client in
            let credentials = BedrockCredentials.aws(
                AWSCredentials(accessKeyID: Self.accessKey, secretAccessKey: Self.secretKey, sessionToken: Self.sessionToken))
            let outcome = await collect(provider(fake, client, credentials: credentials), model: Self.model("ok"))
            #expect(outcome.error == nil)
            #expect(outcome.text == Self.tokens.joined())
            let sent = try #require(try await fake.requests(client).last)
            #expect(sent["signature_ok"] as? Bool == true)
            #expect(sent["signed_headers"] as? String == "accept;content-type;host;x-amz-date;x-amz-security-token")
            // Without the token the fake refuses the key pair.
            let refused = try #require(await collect(provider(fake, client), model: Self.model("ok")).providerError)
            #expect(refused.kind == .unauthorized(status: 403))
        }
    }

    @Test func apiKeyIsABearerToken() async throws {
        try await withFake { fake, client in
            let outcome = await collect(provider(fake, client, credentials: .apiKey(Self.apiKey)), model: Self.model("ok"))
            #expect(outcome.error == nil)
            #expect(outcome.text == Self.tokens.joined())
            let sent = try #require(try await fake.requests(client).last)
            #expect(sent["auth"] as? String == "bearer")
            #expect(sent["bearer_ok"] as? Bool == true)
        }
    }

    @Test func inferenceProfileARNTravelsInOneSegment() async throws {
        try await withFake { fake, client in
            let arn = "ok.arn:aws:bedrock:eu-north-1:123456789012:inference-profile/eu.\(Self.modelTail)"
            let outcome = await collect(provider(fake, client), model: arn)
            #expect(outcome.error == nil)
            let sent = try #require(try await fake.requests(client).last)
            #expect(sent["model_id"] as? String == arn)
            #expect(sent["signature_ok"] as? Bool == true)
            #expect((sent["raw_path"] as? String)?.contains("inference-profile%2Feu.anthropic") == true)
        }
    }

    @Test func messagesInOrderAndNoInferenceConfigWhenNothingIsSet() async throws {
        try await withFake { fake, client in
            let request = ChatRequest(
                model: Self.model("ok"),
                messages: [.system("rule one"), .user("hi"), .system("rule two"), .assistant("hello"), .user("more")])
            for try await _ in provider(fake, client).stream(request) {}
            let body = try #require(try await fake.requests(client).last?["body"] as? [String: Any])
            #expect(body["system"] as? [[String: String]] == [["text": "rule one"], ["text": "rule two"]])
            #expect(body["inferenceConfig"] == nil)
            #expect(body["additionalModelRequestFields"] == nil)
            let messages = try #require(body["messages"] as? [[String: Any]])
            #expect(messages.map { $0["role"] as? String } == ["user", "assistant", "user"])
            #expect(messages.map { ($0["content"] as? [[String: String]])?.first?["text"] } == ["hi", "hello", "more"])
        }
    }

    @Test func maxTokensEndsWithMaxTokens() async throws {
        try await withFake { fake, client in
            let outcome = await collect(provider(fake, client), model: Self.model("ok"), maxTokens: 3)
            #expect(outcome.error == nil)
            #expect(outcome.text == "tok0 tok1 tok2 ")
            #expect(outcome.events.contains(.finished(reason: "max_tokens")))
            #expect(outcome.events.last == .usage(ChatUsage(inputTokens: 15, outputTokens: 3)))
        }
    }

    @Test func withoutUsageTheStreamEndsAtMessageStop() async throws {
        try await withFake { fake, client in
            let outcome = await collect(provider(fake, client), model: Self.model("ok"), includeUsage: false)
            #expect(outcome.error == nil)
            #expect(outcome.events == Self.tokens.map { .text($0) } + [.finished(reason: "end_turn")])
        }
    }

    @Test func reasoningComesBeforeTextAndTheSignatureIsSkipped() async throws {
        try await withFake { fake, client in
            let outcome = await collect(provider(fake, client), model: Self.model("reasoning"), thinkingBudget: 2048)
            #expect(outcome.error == nil)
            #expect(outcome.reasoning == "think0 think1 think2 think3 ")
            #expect(outcome.text == Self.tokens.joined())
            let firstText = try #require(outcome.events.firstIndex { if case .text = $0 { true } else { false } })
            let lastReasoning = try #require(outcome.events.lastIndex { if case .reasoning = $0 { true } else { false } })
            #expect(lastReasoning < firstText)
            #expect(outcome.events.last == .usage(ChatUsage(inputTokens: 15, outputTokens: 10)))
            let body = try #require(try await fake.requests(client).last?["body"] as? [String: Any])
            let additional = try #require(body["additionalModelRequestFields"] as? [String: Any])
            let thinking = try #require(additional["thinking"] as? [String: Any])
            #expect(thinking["type"] as? String == "enabled")
            #expect(thinking["budget_tokens"] as? Int == 2048)
            // maxTokens must exceed the budget when the request sets none.
            #expect((body["inferenceConfig"] as? [String: Any])?["maxTokens"] as? Int == 2048 + 1024)
        }
    }

    @Test func messageStopWithoutMetadataEndsNormally() async throws {
        try await withFake { fake, client in
            let outcome = await collect(provider(fake, client), model: Self.model("no-metadata"))
            #expect(outcome.error == nil)
            #expect(outcome.events == Self.tokens.map { .text($0) } + [.finished(reason: "end_turn")])
        }
    }

    // MARK: - Broken streams

    @Test func anEndWithoutMessageStopIsTruncated() async throws {
        try await withFake { fake, client in
            let outcome = await collect(provider(fake, client), model: Self.model("no-stop"))
            #expect(outcome.text == Self.tokens.joined())
            #expect(outcome.providerError?.kind == .truncated)
            #expect(!outcome.events.contains(where: Self.isFinished))
        }
    }

    @Test func cutAfterTokensIsTruncated() async throws {
        try await withFake { fake, client in
            let outcome = await collect(provider(fake, client), model: Self.model("cut-after-3"))
            #expect(outcome.text == "tok0 tok1 tok2 ")
            let error = try #require(outcome.providerError)
            #expect(error.kind == .truncated)
            #expect(error.retryable)
            #expect(!outcome.events.contains(where: Self.isFinished))
        }
    }

    @Test func anEndInsideAFrameIsTruncated() async throws {
        try await withFake { fake, client in
            let outcome = await collect(provider(fake, client), model: Self.model("partial-frame-after-2"))
            #expect(outcome.text == "tok0 tok1 ")
            #expect(outcome.providerError?.kind == .truncated)
        }
    }

    @Test func aBadMessageChecksumIsMalformed() async throws {
        try await withFake { fake, client in
            let outcome = await collect(provider(fake, client), model: Self.model("bad-crc"))
            #expect(outcome.text == "tok0 tok1 ")
            let error = try #require(outcome.providerError)
            #expect(error.kind == .malformed)
            #expect(error.retryable)
            #expect(error.message.contains("CRC32"))
        }
    }

    @Test func stallHitsTheIdleTimeout() async throws {
        try await withFake { fake, client in
            let started = ContinuousClock.now
            // Idle limit well above a loaded machine's gaps between the first
            // chunks, well below the fake's 30 s stall.
            let outcome = await collect(provider(fake, client, idle: .seconds(5)), model: Self.model("stall-after-2"))
            let elapsed = ContinuousClock.now - started
            #expect(outcome.text == "tok0 tok1 ")
            let error = try #require(outcome.providerError)
            #expect(error.kind == .timeout)
            #expect(error.retryable)
            #expect(elapsed < .seconds(25), "the stalled request was not cancelled: \(elapsed)")
        }
    }

    @Test func cancellingTheConsumerEndsTheRequest() async throws {
        try await withFake { fake, client in
            let provider = provider(fake, client, idle: .seconds(60))
            let started = ContinuousClock.now
            let task = Task {
                var count = 0
                for try await _ in provider.stream(ChatRequest(model: Self.model("stall-after-1"), messages: [.user("x")])) {
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

    // MARK: - Errors

    @Test func throttlingHonoursRetryAfter() async throws {
        try await withFake { fake, client in
            let outcome = await collect(provider(fake, client), model: Self.model("throttle"))
            let error = try #require(outcome.providerError)
            #expect(error.kind == .rateLimited(retryAfter: .seconds(2)))
            #expect(error.retryAfter == .seconds(2))
            #expect(error.status == 429)
            #expect(error.retryable)
            #expect(error.message.contains("Too many requests"))
            #expect(error.message.contains("ThrottlingException"))
            #expect(!error.message.contains("internal.amazon.com"))
            #expect(outcome.events.isEmpty)
        }
    }

    @Test func httpFailuresAreClassified() async throws {
        try await withFake { fake, client in
            let cases: [(String, ProviderError.Kind, Int, Bool)] = [
                ("model-not-ready", .overloaded, 429, true),
                ("unavailable", .serverError(status: 503), 503, true),
                ("internal", .serverError(status: 500), 500, true),
                ("model-error", .serverError(status: 424), 424, true),
                ("model-timeout", .timeout, 408, true),
                ("validation", .badRequest(status: 400), 400, false),
                ("not-found", .badRequest(status: 404), 404, false),
                ("access-denied", .unauthorized(status: 403), 403, false),
            ]
            for (mode, kind, status, retryable) in cases {
                let error = try #require(await collect(provider(fake, client), model: Self.model(mode)).providerError, "\(mode)")
                #expect(error.kind == kind, "\(mode)")
                #expect(error.status == status, "\(mode)")
                #expect(error.retryable == retryable, "\(mode)")
            }
            // A model id Bedrock does not know.
            let unknown = try #require(await collect(provider(fake, client), model: Self.modelTail).providerError)
            #expect(unknown.kind == .badRequest(status: 400))
            #expect(unknown.message.contains("model identifier is invalid"))
            #expect(unknown.message.contains("ValidationException"))
        }
    }

    @Test func exceptionsInsideTheStreamAreClassified() async throws {
        try await withFake { fake, client in
            let cases: [(String, ProviderError.Kind, String, Bool)] = [
                ("inband-throttle-after-2", .rateLimited(retryAfter: nil), "tok0 tok1 ", true),
                ("inband-unavailable-after-1", .serverError(status: 503), "tok0 ", true),
                ("inband-internal-after-1", .serverError(status: 500), "tok0 ", true),
                ("inband-validation-after-0", .badRequest(status: 400), "", false),
                ("model-stream-error-after-3", .inBand(code: "modelStreamErrorException"), "tok0 tok1 tok2 ", true),
                ("error-frame-after-1", .inBand(code: "InternalFailure"), "tok0 ", true),
            ]
            for (mode, kind, text, retryable) in cases {
                let outcome = await collect(provider(fake, client), model: Self.model(mode))
                #expect(outcome.text == text, "\(mode)")
                let error = try #require(outcome.providerError, "\(mode)")
                #expect(error.kind == kind, "\(mode)")
                #expect(error.status == nil, "\(mode)")
                #expect(error.retryable == retryable, "\(mode)")
                #expect(!outcome.events.contains(where: Self.isFinished), "\(mode)")
            }
            let streamError = try #require(
                await collect(provider(fake, client), model: Self.model("model-stream-error-after-1")).providerError)
            #expect(streamError.message.contains("The model stream failed. (original status 500): Internal error while streaming"))
        }
    }

    @Test func badCredentialsAreUnauthorized() async throws {
        try await withFake { fake, client in
            let wrongSecret = BedrockCredentials.aws(AWSCredentials(accessKeyID: Self.accessKey, secretAccessKey: "wrong/secret"))
            let signature = try #require(
                await collect(provider(fake, client, credentials: wrongSecret), model: Self.model("ok")).providerError)
            #expect(signature.kind == .unauthorized(status: 403))
            #expect(signature.coolsLong)
            #expect(signature.message.contains("InvalidSignatureException"))
            let unknown = BedrockCredentials.aws(AWSCredentials(accessKeyID: "AKIAUNKNOWN", secretAccessKey: Self.secretKey))
            let key = try #require(
                await collect(provider(fake, client, credentials: unknown), model: Self.model("ok")).providerError)
            #expect(key.kind == .unauthorized(status: 403))
            #expect(key.message.contains("UnrecognizedClientException"))
        }
    }

    // MARK: - Secrets

    @Test func aWrongAPIKeyIsNeverShown() async throws {
        try await withFake { fake, client in
            // The fake echoes the whole key that was sent in its 403 body.
            let wrong = "ABSK-wrong-key-0f9e8d7c6b5a"
            let error = try #require(
                await collect(provider(fake, client, credentials: .apiKey(wrong)), model: Self.model("ok")).providerError)
            #expect(error.kind == .unauthorized(status: 403))
            #expect(error.message.contains("Invalid API key: [redacted]"))
            #expect(!String(describing: error).contains(wrong))
            #expect(!String(reflecting: error).contains(wrong))
        }
    }

    @Test func theSecretKeyAndSessionTokenAreRedacted() async throws {
        try await withFake(sessionToken: Self.sessionToken) { fake, client in
            let credentials = BedrockCredentials.aws(
                AWSCredentials(accessKeyID: Self.accessKey, secretAccessKey: Self.secretKey, sessionToken: Self.sessionToken))
            // The fake echoes the Authorization and token headers and the secret.
            let error = try #require(
                await collect(provider(fake, client, credentials: credentials), model: Self.model("echo-credentials")).providerError)
            #expect(error.kind == .badRequest(status: 400))
            #expect(error.message.contains("secret=[redacted]"))
            #expect(error.message.contains("token=[redacted]"))
            for secret in [Self.secretKey, Self.sessionToken] {
                #expect(!String(describing: error).contains(secret))
                #expect(!String(reflecting: error).contains(secret))
            }
        }
    }

    @Test func noSecretInAnyErrorDescription() async throws {
        try await withFake { fake, client in
            // Each client's own secret (the fake's echo-credentials also
            // repeats the fake's secret key, which an API-key client never had).
            for (credentials, secret) in [(Self.awsCredentials, Self.secretKey), (.apiKey(Self.apiKey), Self.apiKey)] {
                for mode in [
                    "throttle", "unavailable", "validation", "access-denied", "echo-credentials", "cut-after-1",
                    "inband-throttle-after-1", "model-stream-error-after-1", "bad-crc", "no-stop",
                ] {
                    let error = try #require(
                        await collect(provider(fake, client, credentials: credentials), model: Self.model(mode)).error, "\(mode)")
                    #expect(!String(describing: error).contains(secret), "\(mode)")
                    #expect(!String(reflecting: error).contains(secret), "\(mode)")
                }
            }
        }
    }

    // MARK: - Classification and signing without the fake

    @Test func errorNamesAreClassified() {
        let quota = BedrockProvider.classify(
            status: 400, type: "ServiceQuotaExceededException", message: "Too many tokens per day", retryAfter: nil)
        #expect(quota.kind == .spendLimit)
        #expect(!quota.retryable)
        let expired = BedrockProvider.classify(status: 403, type: "ExpiredTokenException", message: "expired", retryAfter: nil)
        #expect(expired.kind == .unauthorized(status: 403))
        let unnamed = BedrockProvider.classify(status: 502, type: nil, message: "Bad Gateway", retryAfter: nil)
        #expect(unnamed.kind == .serverError(status: 502))
        let throttled = BedrockProvider.classify(status: 429, type: "ThrottlingException", message: "slow", retryAfter: .seconds(3))
        #expect(throttled.kind == .rateLimited(retryAfter: .seconds(3)))
        #expect(throttled.retryAfter == .seconds(3))
    }

    @Test("the provider's own ConverseStream request signs as botocore signs it")
    func signatureEqualsBotocores() async throws {
        try await BotocoreReference.requireBotocore()
        let client = HTTPClient.shared  // never used to send: the requests are only built
        for sessionToken in [nil, "IQoJb3JpZ2luX2VjEXAMPLETOKEN//////////wEaCXVzLWVhc3QtMSJHMEUCIQ=="] {
            let provider = BedrockProvider(
                region: Self.region,
                credentials: .aws(
                    AWSCredentials(
                        accessKeyID: SigV4SignerTests.credentials.accessKeyID,
                        secretAccessKey: SigV4SignerTests.credentials.secretAccessKey, sessionToken: sessionToken)),
                httpClient: client)
            let request = ChatRequest(
                model: Self.modelTail, messages: [.system("be brief"), .user("Say hi in Japanese: こんにちは")], maxTokens: 64,
                temperature: 0.5, stop: ["</answer>"], thinkingBudget: 1024)
            let http = try provider.makeHTTPRequest(request, date: SigV4SignerTests.date)
            let body = try provider.requestBody(request)
            #expect(http.url == "https://bedrock-runtime.eu-north-1.amazonaws.com/model/anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse-stream")
            #expect(http.headers.first(name: "Host") == "bedrock-runtime.eu-north-1.amazonaws.com")
            let signerAdded: Set<String> = ["authorization", "x-amz-date", "x-amz-security-token"]
            let given = http.headers.filter { !signerAdded.contains($0.name.lowercased()) }.map { [$0.name, $0.value] }
            let input: [String: Any] = [
                "name": "keel_provider", "method": "POST", "url": http.url, "headers": given,
                "body_base64": Data(body).base64EncodedString(), "region": Self.region,
                "session_token": sessionToken.map { $0 as Any } ?? NSNull(),
            ]
            let json = String(decoding: try JSONSerialization.data(withJSONObject: input), as: UTF8.self)
            let vector = try await BotocoreReference.json("sigv4_vectors.py", ["--sign", json])
            let added = try #require(vector["added"] as? [String: String])
            #expect(http.headers.first(name: "Authorization") == added["Authorization"])
            #expect(http.headers.first(name: "X-Amz-Date") == added["X-Amz-Date"])
            #expect(http.headers.first(name: "X-Amz-Security-Token") == added["X-Amz-Security-Token"])
            #expect((vector["canonical_request"] as? String)?.contains("/model/anthropic.claude-sonnet-4-5-20250929-v1%253A0/converse-stream\n") == true)
        }
    }
}
