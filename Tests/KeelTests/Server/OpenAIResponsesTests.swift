import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import KeelCore
import KeelServer
import Testing

/// `/v1/responses` in process, through the fake OpenAI upstream: a response
/// waited for, cancelled, refused; errors in OpenAI's shape; a key's
/// requests-per-minute limit.
@Suite("OpenAI responses API")
struct OpenAIResponsesTests {
    static func modelsFile(_ fake: FakeOpenAIUpstream) throws -> String {
        let path = try TestEnvironment.directory("responses-models").appendingPathComponent("models.json")
        try #"{"providers": {"fake": {"kind": "openai", "base_url": "\#(fake.baseURL)"}}, "models": {"ok": {"provider": "fake", "model": "ok"}, "slow": {"provider": "fake", "model": "slow-40-250"}}, "chains": {"default": ["ok"]}}"#
            .write(to: path, atomically: true, encoding: .utf8)
        return path.path
    }

    /// A key made directly in the app's store.
    static func key(_ app: KeelApplication, name: String, rpm: Int? = nil) async throws -> String {
        let created = NewAPIKey(name: name, now: Date(), requestsPerMinute: rpm)
        try await app.store.apiKeys.createKey(created.record)
        return created.key
    }

    static func error(_ response: TestResponse) -> [String: JSONValue] {
        response.json["error"]?.objectValue ?? [:]
    }

    @Test("a response waited for, a background one cancelled, bad requests refused in OpenAI's shape, another key sees nothing")
    func responses() async throws {
        try await ChatAPITests.withFake { fake in
            let file = try Self.modelsFile(fake)
            // A 3 s lease: workers heartbeat each second, so a cancel reaches the running answer within one.
            try await withTestApp(configure: { $0.models.file = file; $0.jobs.leaseDuration = .seconds(3) }, runJobs: true) { app, client in
                let key = try await Self.key(app, name: "one")
                let whole = try await client.send(.post, "/v1/responses", token: key, body: #"{"model": "ok", "input": "hi", "metadata": {"ticket": "42"}}"#)
                #expect(whole.status == .ok, "\(whole.text)")
                #expect(whole.json["status"]?.stringValue == "completed" && whole.json["metadata"]?.objectValue?["ticket"]?.stringValue == "42")
                let text = whole.json["output"]?.arrayValue?.first?.objectValue?["content"]?.arrayValue?.first?.objectValue?["text"]?.stringValue
                #expect(text == "tok0 tok1 tok2 tok3 tok4 tok5 ")
                #expect(whole.json["usage"]?.objectValue?["output_tokens"] == .int(6))

                let started = try await client.send(.post, "/v1/responses", token: key, body: #"{"model": "slow", "input": "count", "background": true}"#)
                let id = try #require(started.json["id"]?.stringValue)
                #expect(started.json["status"]?.stringValue == "queued" || started.json["status"]?.stringValue == "in_progress")
                try await waitFor("the answer under way") {
                    let current = try await client.send(.get, "/v1/responses/\(id)", token: key).json
                    return current["output"]?.arrayValue?.first?.objectValue?["content"]?.arrayValue?.isEmpty == false
                }
                let cancelled = try await client.send(.post, "/v1/responses/\(id)/cancel", token: key)
                #expect(cancelled.status == .ok && cancelled.json["status"]?.stringValue == "cancelled", "\(cancelled.text)")
                // Its stream ends with response.incomplete, status cancelled.
                let streamed = try await client.send(.get, "/v1/responses/\(id)?stream=true", token: key)
                var parser = SSEParser()
                let events = parser.feed(streamed.text)
                #expect(events.last?.type == "response.incomplete", "\(events.map(\.type))")
                #expect(events.last?.json?.objectValue?["response"]?.objectValue?["status"]?.stringValue == "cancelled")
                let numbers = events.compactMap { $0.json?.objectValue?["sequence_number"] }
                #expect(numbers.count == events.count && !events.contains { $0.type == "reset" || $0.type == "progress" || $0.type == "done" })

                let notBackground = try await client.send(.post, "/v1/responses/\(whole.json["id"]?.stringValue ?? "")/cancel", token: key)
                #expect(notBackground.status == .badRequest && Self.error(notBackground)["code"]?.stringValue == "not_background")

                for (body, param, code) in [
                    (#"{"model": "ok"}"#, "input", nil),
                    (#"{"model": "nope", "input": "hi"}"#, "model", "model_not_found"),
                    (#"{"model": "ok", "input": "hi", "tools": [{"type": "web_search"}]}"#, "tools", "unsupported_parameter"),
                    (#"{"model": "ok", "input": [{"type": "function_call_output", "call_id": "1", "output": "x"}]}"#, "input[0]", "unsupported_content"),
                    (#"{"model": "ok", "input": "hi", "temperature": 3}"#, "temperature", nil),
                ] as [(String, String, String?)] {
                    let refused = try await client.send(.post, "/v1/responses", token: key, body: body)
                    #expect(refused.status.code >= 400 && refused.status.code < 500, "\(body): \(refused.text)")
                    #expect(Self.error(refused)["param"]?.stringValue == param, "\(body): \(refused.text)")
                    if let code { #expect(Self.error(refused)["code"]?.stringValue == code, "\(body): \(refused.text)") }
                    #expect(Self.error(refused)["type"]?.stringValue != nil && Self.error(refused)["message"]?.stringValue != nil)
                }
                let garbled = try await client.send(.post, "/v1/responses", token: key, body: "{not json")
                #expect(garbled.status == .badRequest && Self.error(garbled)["code"]?.stringValue == "invalid_json", "\(garbled.text)")
                #expect(try await client.send(.get, "/v1/responses/resp_nothing", token: key).status == .notFound)
                #expect(try await client.send(.get, "/v1/responses/\(id)?starting_after=3", token: key).status == .badRequest)

                let other = try await Self.key(app, name: "two")
                let foreign = try await client.send(.get, "/v1/responses/\(id)", token: other)
                #expect(foreign.status == .notFound && Self.error(foreign)["type"]?.stringValue == "invalid_request_error")
                let anonymous = try await client.send(.get, "/v1/responses/\(id)")
                #expect(anonymous.status == .unauthorized && Self.error(anonymous)["code"]?.stringValue == "missing_api_key")
                // A session token is not an API key.
                let session = try await client.createSession()
                #expect(try await client.send(.get, "/v1/models", token: session).status == .unauthorized)
                // Only /v1/responses starts a response job.
                let direct = try await client.send(.post, "/api/jobs", token: session, body: #"{"type": "openai.response", "input": {}}"#)
                #expect(direct.status == .badRequest, "\(direct.text)")
            }
        }
    }

    @Test("a key's requests-per-minute limit answers 429 in OpenAI's shape with Retry-After")
    func rateLimit() async throws {
        // Windows are whole minutes since 1970: a clock thirty seconds into one
        // keeps the three requests in the same window (on the wall clock they
        // could straddle a minute boundary, and the third would pass).
        try await withTestApp(clock: ManualClock(Date(timeIntervalSince1970: 1_800_000_030))) { app, client in
            let key = try await Self.key(app, name: "limited", rpm: 2)
            #expect(try await client.send(.get, "/v1/models", token: key).status == .ok)
            #expect(try await client.send(.get, "/v1/models", token: key).status == .ok)
            let refused = try await client.send(.get, "/v1/models", token: key)
            #expect(refused.status == .tooManyRequests)
            #expect(Self.error(refused)["code"]?.stringValue == "rate_limit_exceeded")
            let seconds = Int(refused.headers[.retryAfter] ?? "") ?? 0
            #expect(seconds == 30, "\(refused.headers)")
            #expect(try await client.send(.get, "/v1/models").status == .unauthorized)
        }
    }
}
