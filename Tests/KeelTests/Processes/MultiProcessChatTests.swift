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
        try await FakeOpenAIUpstream.running { fake in try await self.run(fake, driver: driver, stop: stop) }
    }

    func run(_ fake: FakeOpenAIUpstream, driver: Driver, stop: Stop) async throws {
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

    /// What the fake was asked, oldest first: each request's last user message.
    static func prompts(_ fake: FakeOpenAIUpstream) async throws -> [String] {
        let requests = try JSONValue.parse(Array(try await HTTP.send(.GET, fake.rootURL + "/_fake/requests").body.utf8)).arrayValue ?? []
        return requests.map { request in
            let messages = request.objectValue?["body"]?.objectValue?["messages"]?.arrayValue ?? []
            return messages.last?.objectValue?["content"]?.stringValue ?? ""
        }
    }

    @Test("an instance SIGKILLed mid-analysis: the retry resumes at the first unfinished section, and no stored section is redone", arguments: Driver.available)
    func killedMidAnalysis(driver: Driver) async throws {
        try await FakeOpenAIUpstream.running { fake in try await self.killedMidAnalysis(fake, driver: driver) }
    }

    func killedMidAnalysis(_ fake: FakeOpenAIUpstream, driver: Driver) async throws {
        let fixture = try await StoreFixture.make(driver)
        // Each section's answer takes about 2 s (8 tokens, 250 ms apart).
        let models = try TestEnvironment.directory("analysis-models").appendingPathComponent("models.json")
        try #"{"providers": {"fake": {"kind": "openai", "base_url": "\#(fake.baseURL)"}}, "models": {"slow": {"provider": "fake", "model": "slow-8-250"}}}"#
            .write(to: models, atomically: true, encoding: .utf8)
        let common = ["--models", models.path, "--janitor-interval", "300ms", "--job-retry-backoff", "100ms", "--job-lease-duration", "3s", "--workers", "1"]
        let victim = try await KeelProcess.serve(store: fixture.location, arguments: common)
        defer { victim.signal(SIGKILL) }
        let token = try #require(try await HTTP.send(.POST, victim.baseURL + "/api/session").json["token"]?.stringValue)
        let upload = try await HTTP.tusUpload(victim.baseURL, token: token, bytes: try DocumentFixtures.bytes("report.md"), filename: "report.md")
        let document = try #require(
            try await HTTP.send(.POST, victim.baseURL + "/api/documents", token: token, body: #"{"upload_id":"\#(upload)"}"#).json["id"]?.stringValue)
        try await waitFor("the document to be ready", timeout: .seconds(60)) {
            try await HTTP.send(.GET, victim.baseURL + "/api/documents/\(document)", token: token).json["status"]?.stringValue == "ready"
        }
        let sections = [1, 2, 3, 4, 5]
        let started = try await HTTP.send(.POST, victim.baseURL + "/api/documents/\(document)/analyses", token: token, body: #"{"sections": [1, 2, 3, 4, 5]}"#)
        #expect(started.status == 202, "\(started.body)")
        let id = try #require(started.json["analysis"]?.objectValue?["id"]?.stringValue)
        let job = try #require(started.json["job"]?.objectValue?["id"]?.stringValue)
        try await waitFor("two sections analysed", timeout: .seconds(60)) {
            (try await HTTP.send(.GET, victim.baseURL + "/api/analyses/\(id)", token: token).json["results"]?.arrayValue?.count ?? 0) >= 2
        }
        victim.signal(SIGKILL)
        #expect(await victim.waitForExit() != 0)
        // What the victim stored and asked, read after its death.
        let before = try #require(try await fixture.withStore { try await $0.analyses.analysis(id: id) })
        let askedBefore = try await Self.prompts(fake).count
        let stored = before.results.map(\.index)
        #expect(stored.count >= 2 && stored.count < sections.count && stored == Array(sections.prefix(stored.count)), "\(stored)")

        let survivor = try await KeelProcess.serve(store: fixture.location, arguments: common)
        defer { survivor.signal(SIGKILL) }
        var analysis: [String: JSONValue] = [:]
        try await waitFor("the retry to finish the analysis", timeout: .seconds(90)) {
            analysis = try await HTTP.send(.GET, survivor.baseURL + "/api/analyses/\(id)", token: token).json
            return analysis["status"]?.stringValue != "running"
        }
        #expect(analysis["status"]?.stringValue == "complete", "\(analysis)\n\(survivor.logTail())")
        let results = (analysis["results"]?.arrayValue ?? []).compactMap(\.objectValue)
        #expect(results.map { $0["index"] } == sections.map { .int(Int64($0)) }, "\(results)")
        // The sections stored before the kill are kept as they were.
        for (result, old) in zip(results, before.results) {
            #expect(result["content"]?.stringValue == old.content && result["title"]?.stringValue == old.title)
        }
        // The retry asked only for the sections not stored, starting with the first of them.
        let asked = Array(try await Self.prompts(fake).dropFirst(askedBefore))
        let unfinished = results.dropFirst(stored.count).compactMap { $0["title"]?.stringValue }
        #expect(asked.count == unfinished.count, "\(asked)")
        for (prompt, title) in zip(asked, unfinished) { #expect(prompt.contains(title), "\(title): \(prompt)") }
        let finished = try await HTTP.send(.GET, survivor.baseURL + "/api/jobs/\(job)", token: token).json
        #expect(finished["status"]?.stringValue == "succeeded" && finished["attempts"] == .int(2), "\(finished)")
        #expect(await survivor.stop() == 0)
    }

    @Test("the janitor removes the chats and analyses of sessions that have ended, and keeps a live session's", arguments: Driver.available)
    func endedSessionsAreSwept(driver: Driver) async throws {
        let fixture = try await StoreFixture.make(driver)
        let t0 = Date()
        try await fixture.withStore { store in
            try await store.chats.createChat(Chat(id: "chat_orphan", sessionID: "ended-session", title: "Old", createdAt: t0))
            try await store.chats.appendMessage(
                ChatMessageRecord(id: "msg_orphan", chatID: "chat_orphan", role: "user", content: "Hello?", createdAt: t0), sessionID: "ended-session")
            try await store.analyses.createAnalysis(
                Analysis(id: "analysis_orphan", sessionID: "ended-session", documentID: "doc", jobID: "job", instructions: "", sections: [0], createdAt: t0))
        }
        let server = try await KeelProcess.serve(store: fixture.location, arguments: ["--workers", "0"])
        defer { server.signal(SIGKILL) }
        let token = try #require(try await HTTP.send(.POST, server.baseURL + "/api/session").json["token"]?.stringValue)
        let kept = try #require(try await HTTP.send(.POST, server.baseURL + "/api/chats", token: token, body: "{}").json["id"]?.stringValue)
        try await waitFor("the sweep") {
            try await fixture.withStore { store in
                let chat = try await store.chats.chat(id: "chat_orphan", sessionID: "ended-session")
                let analysis = try await store.analyses.analysis(id: "analysis_orphan")
                return chat == nil && analysis == nil
            }
        }
        #expect(try await fixture.withStore { try await $0.chats.messages(chatID: "chat_orphan", sessionID: "ended-session") }.isEmpty)
        #expect(try await HTTP.send(.GET, server.baseURL + "/api/chats/\(kept)", token: token).status == 200)
        #expect(await server.stop() == 0)
    }
}
