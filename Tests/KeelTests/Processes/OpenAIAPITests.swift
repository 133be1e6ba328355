import Foundation
import KeelCore
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The OpenAI-compatible API driven by the official `openai` Python client,
/// unmodified (`Tests/Clients/openai_api_client.py`), against real `keel
/// serve` processes in front of the fake OpenAI upstream: chat completions
/// (streaming and not, a mid-stream fallback, errors before and after the
/// stream starts), and a background response that survives its producing
/// instance's SIGKILL, resumed on a third instance with `starting_after`.
@Suite("OpenAI-compatible API with the official client", .serialized)
struct OpenAIAPITests {
    static var script: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Clients/openai_api_client.py").path
    }

    /// `ok` (6 tokens), `cut-then-ok` (cut after 3, continued by `ok`),
    /// `inband` (an in-band error after 2), `slow` (40 tokens, 250 ms apart).
    static func modelsFile(_ fake: FakeOpenAIUpstream) throws -> String {
        let path = try TestEnvironment.directory("openai-models").appendingPathComponent("models.json")
        try """
            {"providers": {"fake": {"kind": "openai", "base_url": "\(fake.baseURL)"}},
             "models": {"ok": {"provider": "fake", "model": "ok"}, "cut": {"provider": "fake", "model": "cut-after-3"},
                        "inband": {"provider": "fake", "model": "inband-error-after-2"}, "slow": {"provider": "fake", "model": "slow-40-250"}},
             "chains": {"default": ["ok"], "cut-then-ok": ["cut", "ok"]}}
            """.write(to: path, atomically: true, encoding: .utf8)
        return path.path
    }

    static func withFake(_ body: (FakeOpenAIUpstream) async throws -> Void) async throws {
        try await FakeOpenAIUpstream.running(body)
    }

    /// A new key on `store`, from `keel keys create` (its last line).
    static func createKey(_ store: StoreLocation, name: String = "tests", extra: [String] = []) async throws -> String {
        let (status, output) = try await KeelProcess.run(["keys", "create", "--store", KeelProcess.argument(for: store), "--name", name] + extra)
        #expect(status == 0, "\(output)")
        let key = output.split(separator: "\n").last.map(String.init) ?? ""
        #expect(key.hasPrefix("sk-keel-"), "\(output)")
        return key
    }

    /// Runs the client script; exit 3 (no `openai`) skips locally and fails on CI.
    static func client(_ arguments: [String]) async throws -> String {
        let (status, output) = try await FakeOpenAIFidelityTests.run([Self.script] + arguments)
        if status == 3 || status == 127 || status == -1 {
            let why = "\(FakeOpenAIUpstream.python) cannot import openai (pip install openai, or set KEEL_TEST_PYTHON)"
            if ProcessInfo.processInfo.environment["CI"] == "true" { Issue.record("CI must have the openai client: \(why)\n\(output)") }
            try Test.cancel("skipped: \(why)")
        }
        #expect(status == 0, "openai_api_client.py \(arguments.first ?? "") failed:\n\(output)")
        return output
    }

    @Test("chat completions through the official client: streaming and not, usage, a mid-stream fallback, parameters, errors before and after the stream starts")
    func chatCompletions() async throws {
        try await Self.withFake { fake in
            let fixture = try await StoreFixture.make(.sqlite)
            let key = try await Self.createKey(fixture.location)
            let server = try await KeelProcess.serve(store: fixture.location, arguments: ["--models", try Self.modelsFile(fake)])
            defer { server.signal(SIGKILL) }
            let output = try await Self.client(["completions", server.baseURL, key, fake.rootURL])
            #expect(output.contains(" passed, 0 failed"), "\(output)")
            // The key never reaches the server's log.
            #expect(!server.logTail(lines: 10_000).contains(key))
            #expect(await server.stop() == 0)
        }
    }

    struct Streamed: Decodable {
        var text: String
        var last_sequence: Int?
        var sequences: [Int]
        var types: [String]
    }

    @Test("a background response created on one instance, streamed from a second, its producer SIGKILLed, resumed on a third with starting_after: whole and once", arguments: Driver.available)
    func backgroundResponseSurvivesItsInstance(driver: Driver) async throws {
        try await Self.withFake { fake in
            let fixture = try await StoreFixture.make(driver)
            let key = try await Self.createKey(fixture.location)
            let common = ["--models", try Self.modelsFile(fake), "--janitor-interval", "300ms", "--job-retry-backoff", "100ms", "--job-lease-duration", "3s"]
            let producer = try await KeelProcess.serve(store: fixture.location, arguments: common + ["--workers", "1"])
            defer { producer.signal(SIGKILL) }
            let reader = try await KeelProcess.serve(store: fixture.location, arguments: common + ["--workers", "0"])
            defer { reader.signal(SIGKILL) }

            let id = try await Self.client(["create", producer.baseURL, key, "slow"]).split(separator: "\n").last.map(String.init) ?? ""
            #expect(id.hasPrefix("resp_"))
            let first = try JSONDecoder().decode(
                Streamed.self, from: Data(try await Self.client(["stream", reader.baseURL, key, id, "--until-deltas", "5"]).utf8))
            let expected = (0..<40).map { "tok\($0) " }.joined()
            // Five deltas: five tokens or more (tokens that arrive while the last write is in flight share one event).
            #expect(expected.hasPrefix(first.text) && first.text.split(separator: " ").count >= 5, "\(first)")
            #expect(first.sequences == first.sequences.sorted() && Set(first.sequences).count == first.sequences.count)
            producer.signal(SIGKILL)
            #expect(await producer.waitForExit() != 0)

            let third = try await KeelProcess.serve(store: fixture.location, arguments: common + ["--workers", "1"])
            defer { third.signal(SIGKILL) }
            let last = try #require(first.last_sequence)
            let rest = try JSONDecoder().decode(
                Streamed.self, from: Data(try await Self.client(["stream", third.baseURL, key, id, "--starting-after", String(last)]).utf8))
            #expect(first.text + rest.text == expected, "\(first.text) + \(rest.text)")
            #expect(rest.sequences.allSatisfy { $0 > last } && rest.sequences == rest.sequences.sorted())
            #expect(rest.types.last == "response.completed", "\(rest.types)")
            #expect(!rest.types.contains("response.created"), "the retry does not start the response over: \(rest.types)")

            // The stored response, from any instance, is the whole answer.
            let stored = try await HTTP.send(.GET, reader.baseURL + "/v1/responses/\(id)", token: key).json
            #expect(stored["status"]?.stringValue == "completed", "\(stored)")
            let text = stored["output"]?.arrayValue?.first?.objectValue?["content"]?.arrayValue?.first?.objectValue?["text"]?.stringValue
            #expect(text == expected)
            // Another key does not see it.
            let other = try await Self.createKey(fixture.location, name: "other")
            #expect(try await HTTP.send(.GET, reader.baseURL + "/v1/responses/\(id)", token: other).status == 404)
            #expect(await third.stop() == 0)
        }
    }
}
