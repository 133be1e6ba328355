import Foundation
import KeelCore
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A chat reply across real processes: the instance answering dies (SIGKILL)
/// or stalls (SIGSTOP) mid-answer; another instance's worker continues the
/// same answer from the event log. The client's text is neither lost nor
/// repeated, and the message is stored once, by the attempt that owns it.
@Suite("Chat across processes", .serialized)
struct MultiProcessChatTests {
    /// 40 tokens, 250 ms apart: about 10 s of answer, so a loaded machine
    /// still kills the instance mid-answer.
    static let answer = (0..<40).map { "tok\($0) " }.joined()

    static func modelsFile(_ fake: FakeOpenAIUpstream) throws -> String {
        let path = try TestEnvironment.directory("chat-models").appendingPathComponent("models.json")
        try #"{"providers": {"fake": {"kind": "openai", "base_url": "\#(fake.baseURL)"}}, "models": {"slow": {"provider": "fake", "model": "slow-40-250"}}}"#
            .write(to: path, atomically: true, encoding: .utf8)
        return path.path
    }

    /// The text a client that honours `reset` shows: the tokens after the last reset.
    static func shownText(_ events: [SSEEvent]) -> String {
        var text = ""
        for event in events {
            switch event.type {
            case "reset": text = ""
            case "token": text += event.json?.objectValue?["text"]?.stringValue ?? ""
            default: break
            }
        }
        return text
    }

    static func tokenEvents(_ server: KeelProcess, job: String, token: String) async throws -> Int {
        let page = try await HTTP.send(.GET, server.baseURL + "/api/jobs/\(job)/events?format=json&limit=1000", token: token).json
        return (page["events"]?.arrayValue ?? []).filter { $0.objectValue?["type"]?.stringValue == "token" }.count
    }

    enum Stop { case kill, pause }

    func run(driver: Driver, stop: Stop) async throws {
        let fake: FakeOpenAIUpstream
        do {
            fake = try await FakeOpenAIUpstream.start()
        } catch {
            if ProcessInfo.processInfo.environment["CI"] == "true" { Issue.record("CI must run the fake upstream: \(error)") }
            try Test.cancel("skipped: the fake upstream cannot run: \(error)")
        }
        defer { fake.stop() }
        let fixture = try await StoreFixture.make(driver)
        let models = try Self.modelsFile(fake)
        let common = ["--models", models, "--janitor-interval", "300ms", "--job-retry-backoff", "100ms", "--job-lease-duration", "3s"]
        let victim = try await KeelProcess.serve(store: fixture.location, arguments: common + ["--workers", "1"])
        defer {
            victim.signal(SIGCONT)
            victim.signal(SIGKILL)
        }
        let token = try #require(try await HTTP.send(.POST, victim.baseURL + "/api/session").json["token"]?.stringValue)
        let chat = try #require(try await HTTP.send(.POST, victim.baseURL + "/api/chats", token: token, body: "{}").json["id"]?.stringValue)
        let sent = try await HTTP.send(.POST, victim.baseURL + "/api/chats/\(chat)/messages", token: token, body: #"{"content": "count to twenty"}"#)
        #expect(sent.status == 202, "\(sent.body)")
        let job = try #require(sent.json["job"]?.objectValue?["id"]?.stringValue)
        try await waitFor("the answer to be under way") { try await Self.tokenEvents(victim, job: job, token: token) >= 5 }
        victim.signal(stop == .kill ? SIGKILL : SIGSTOP)

        let survivor = try await KeelProcess.serve(store: fixture.location, arguments: common + ["--workers", "1"])
        defer { survivor.signal(SIGKILL) }
        var status = ""
        try await waitFor("the reply to finish on the survivor", timeout: .seconds(90)) {
            status = try await HTTP.send(.GET, survivor.baseURL + "/api/jobs/\(job)", token: token).json["status"]?.stringValue ?? ""
            return status == "succeeded" || status == "failed"
        }
        #expect(status == "succeeded", "\(survivor.logTail())")
        if stop == .pause {
            // The stalled worker wakes up: its lease is gone, so nothing it
            // still tries to write reaches the log or the message.
            victim.signal(SIGCONT)
            try await Task.sleep(for: .seconds(2))
        }

        // A client reading the whole stream from any instance, honouring reset.
        let stream = try await SSE.read(survivor.baseURL + "/api/jobs/\(job)/events", token: token)
        #expect(stream.problems().isEmpty, "\(stream.problems())")
        #expect(stream.events.contains { $0.type == "reset" })
        #expect(Self.shownText(stream.events) == Self.answer, "\(Self.shownText(stream.events))")
        #expect(stream.events.filter { $0.type == "done" }.count == 1)

        // Stored once, as the stream shows it.
        let messages = try #require(
            try await HTTP.send(.GET, survivor.baseURL + "/api/chats/\(chat)", token: token).json["messages"]?.arrayValue).compactMap(\.objectValue)
        #expect(messages.map { $0["role"]?.stringValue } == ["user", "assistant"])
        #expect(messages.last?["content"]?.stringValue == Self.answer && messages.last?["status"]?.stringValue == "complete")
        let finished = try await HTTP.send(.GET, survivor.baseURL + "/api/jobs/\(job)", token: token).json
        #expect(finished["attempts"] == .int(2), "\(finished)")

        // The survivor's model request continued the partial answer.
        let requests = try JSONValue.parse(Array(try await HTTP.send(.GET, fake.rootURL + "/_fake/requests").body.utf8)).arrayValue ?? []
        let continued = requests.last?.objectValue?["body"]?.objectValue?["messages"]?.arrayValue?.compactMap(\.objectValue) ?? []
        let partial = continued.dropLast().last
        #expect(partial?["role"]?.stringValue == "assistant" && Self.answer.hasPrefix(partial?["content"]?.stringValue ?? "-"), "\(continued)")
        #expect((partial?["content"]?.stringValue?.count ?? 0) >= "tok0 tok1 tok2 tok3 tok4 ".count)
        #expect(await survivor.stop() == 0)
    }

    @Test("an instance SIGKILLed mid-answer: another instance continues the same answer, stored once", arguments: Driver.available)
    func killedMidAnswer(driver: Driver) async throws {
        try await self.run(driver: driver, stop: .kill)
    }

    @Test("a worker stalled mid-answer (SIGSTOP) loses its lease: the retry finishes the answer, and the stalled worker, woken, writes nothing")
    func stalledWorkerIsFenced() async throws {
        try await self.run(driver: .sqlite, stop: .pause)
    }
}
