import AsyncHTTPClient
import Foundation
import KeelModels
import Testing

// What the provider client suites (OpenAI-compatible, Anthropic, Bedrock)
// share: a fake of `Tests/Clients/models` per test, and a stream read into
// an outcome.

/// A stream read to its end: the events, then the error that ended it, if any.
struct ProviderOutcome {
    var events: [ChatStreamEvent] = []
    var error: (any Error)?

    var text: String {
        self.events.map { if case .text(let text) = $0 { text } else { "" } }.joined()
    }
    var reasoning: String {
        self.events.map { if case .reasoning(let text) = $0 { text } else { "" } }.joined()
    }
    var providerError: ProviderError? { self.error as? ProviderError }
}

/// Runs `body` with a fresh `script` fake (see ``FakeOpenAIUpstream/start(apiKey:script:arguments:)``)
/// and an HTTP client, and shuts both down. A fake that cannot run skips the
/// test, and is an issue on CI.
func withFakeUpstream(
    _ script: String, apiKey: String? = nil, arguments: [String] = [],
    _ body: (FakeOpenAIUpstream, HTTPClient) async throws -> Void
) async throws {
    let fake: FakeOpenAIUpstream
    do {
        fake = try await FakeOpenAIUpstream.start(apiKey: apiKey, script: script, arguments: arguments)
    } catch {
        if ProcessInfo.processInfo.environment["CI"] == "true" {
            Issue.record("CI must run the fake upstream: \(error)")
        }
        try Test.cancel("skipped: \(FakeOpenAIUpstream.python) cannot run \(script): \(error)")
    }
    let client = HTTPClient(eventLoopGroupProvider: .singleton)
    do {
        try await body(fake, client)
    } catch {
        try await client.shutdown()
        fake.stop()
        throw error
    }
    try await client.shutdown()
    fake.stop()
}

/// Streams `model` from `provider` (a system and a user message) to its end.
func collect(
    _ provider: some ChatProvider, model: String, maxTokens: Int? = nil, temperature: Double? = nil,
    stop: [String] = [], includeUsage: Bool = true, thinkingBudget: Int? = nil, stream: Bool = true
) async -> ProviderOutcome {
    let request = ChatRequest(
        model: model, messages: [.system("be brief"), .user("say some tokens")], maxTokens: maxTokens,
        temperature: temperature, stop: stop, includeUsage: includeUsage, thinkingBudget: thinkingBudget, stream: stream)
    var outcome = ProviderOutcome()
    do {
        for try await event in provider.stream(request) { outcome.events.append(event) }
    } catch {
        outcome.error = error
    }
    return outcome
}
