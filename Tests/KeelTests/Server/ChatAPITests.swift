import Foundation
import HTTPTypes
import HummingbirdTesting
import KeelCore
@testable import KeelServer
import NIOCore
import Testing

/// `/api/chats` and analyses in process, on SQLite, with workers running the
/// replies: without models (retrieval only) and through the fake OpenAI
/// upstream behind a models file.
@Suite("Chat API", .serialized)
struct ChatAPITests {
    static let modules: [any KeelModule] = [DocumentsModule(), ChatModule()]

    /// A models file whose default chain is the fake's `model`s, in order.
    static func modelsFile(_ fake: FakeOpenAIUpstream, chain: [String]) throws -> String {
        let models = chain.enumerated().map { #""m\#($0.offset)": {"provider": "fake", "model": "\#($0.element)"}"# }.joined(separator: ", ")
        let names = chain.indices.map { #""m\#($0)""# }.joined(separator: ", ")
        let text = #"{"providers": {"fake": {"kind": "openai", "base_url": "\#(fake.baseURL)"}}, "models": {\#(models)}, "chains": {"default": [\#(names)]}}"#
        let path = try TestEnvironment.directory("chat-models").appendingPathComponent("models.json")
        try text.write(to: path, atomically: true, encoding: .utf8)
        return path.path
    }

    static func withFake(_ body: (FakeOpenAIUpstream) async throws -> Void) async throws {
        try await FakeOpenAIUpstream.running(body)
    }

    /// Uploads the fixture report and waits until it is a ready document.
    static func readyReport(_ client: any TestClientProtocol, token: String) async throws -> String {
        let upload = try await client.upload(try DocumentFixtures.bytes("report.md"), filename: "report.md", token: token)
        let created = try await client.send(.post, "/api/documents", token: token, body: #"{"upload_id":"\#(upload)"}"#)
        let id = try #require(created.json["id"]?.stringValue)
        #expect(try await client.waitForDocument(id, token: token)["status"]?.stringValue == "ready")
        return id
    }

    static func events(_ client: any TestClientProtocol, job: String, token: String) async throws -> [SSEEvent] {
        try await waitFor("the reply to finish", timeout: .seconds(60)) {
            let status = try await client.send(.get, "/api/jobs/\(job)", token: token).json["status"]?.stringValue
            return status == "succeeded" || status == "failed" || status == "cancelled"
        }
        var parser = SSEParser()
        return parser.feed(try await client.send(.get, "/api/jobs/\(job)/events", token: token).text)
    }

    static func text(_ events: [SSEEvent]) -> String {
        events.filter { $0.type == "token" }.compactMap { $0.json?.objectValue?["text"]?.stringValue }.joined()
    }

    @Test("without models, a reply lists the best passages with their sources, labelled as not a model's answer")
    func retrievalOnly() async throws {
        try await withTestApp(runJobs: true, modules: Self.modules) { _, client in
            let token = try await client.createSession()
            let document = try await Self.readyReport(client, token: token)
            let created = try await client.send(.post, "/api/chats", token: token, body: "{}")
            #expect(created.status == .created, "\(created.text)")
            let chat = try #require(created.json["id"]?.stringValue)
            let sent = try await client.send(.post, "/api/chats/\(chat)/messages", token: token, body: #"{"content": "What happened to latency in Frankfurt?"}"#)
            #expect(sent.status == .accepted, "\(sent.text)")
            let job = try #require(sent.json["job"]?.objectValue?["id"]?.stringValue)
            #expect(sent.json["message"]?.objectValue?["role"]?.stringValue == "user")

            let events = try await Self.events(client, job: job, token: token)
            let kinds = events.map(\.type)
            #expect(kinds.first == "progress" && kinds.contains("sources") && kinds.contains("model") && kinds.last == "done", "\(kinds)")
            let stages = events.filter { $0.type == "progress" }.compactMap { $0.json?.objectValue?["stage"]?.stringValue }
            #expect(stages == ["loading_documents", "generating_response"])
            let sources = try #require(events.first { $0.type == "sources" }?.json?.objectValue?["sources"]?.arrayValue)
            #expect(sources.first?.objectValue?["document_id"]?.stringValue == document)
            #expect(sources.first?.objectValue?["section_title"]?.stringValue == "Latency", "\(sources)")
            #expect(events.first { $0.type == "model" }?.json?.objectValue?["name"]?.stringValue == "retrieval-only")
            let streamed = Self.text(events)
            #expect(streamed.contains("not a model's answer") && streamed.contains("Frankfurt"))

            let read = try await client.send(.get, "/api/chats/\(chat)", token: token)
            let messages = try #require(read.json["messages"]?.arrayValue).compactMap(\.objectValue)
            #expect(messages.map { $0["role"]?.stringValue } == ["user", "assistant"])
            #expect(messages[1]["content"]?.stringValue == streamed && messages[1]["status"]?.stringValue == "complete")
            #expect(messages[1]["models"]?.arrayValue == [.string("retrieval-only")] && messages[1]["sources"]?.arrayValue?.isEmpty == false)
            #expect(read.json["title"]?.stringValue == "What happened to latency in Frankfurt?")

            // Analysis needs a model.
            let analysis = try await client.send(.post, "/api/documents/\(document)/analyses", token: token, body: "{}")
            #expect(analysis.status == .serviceUnavailable && analysis.errorCode == "no_models_configured", "\(analysis.text)")
        }
    }

    @Test("with a model, a request accepting text/event-stream gets the reply's stream at once; the stored answer equals the streamed text")
    func streamedReply() async throws {
        try await Self.withFake { fake in
            let file = try Self.modelsFile(fake, chain: ["cut-after-3", "ok"])
            try await withTestApp(configure: { $0.models.file = file }, runJobs: true, modules: Self.modules) { _, client in
                let token = try await client.createSession()
                _ = try await Self.readyReport(client, token: token)
                let chat = try #require(try await client.send(.post, "/api/chats", token: token, body: #"{"title": "ops"}"#).json["id"]?.stringValue)
                let streamed = try await client.send(
                    .post, "/api/chats/\(chat)/messages", token: token, headers: [.accept: "text/event-stream"],
                    body: #"{"content": "Summarise the findings"}"#)
                #expect(streamed.status == .ok && streamed.headers[.contentType]?.hasPrefix("text/event-stream") == true)
                #expect(streamed.headers[HTTPField.Name("Keel-Job-Id")!] != nil)
                var parser = SSEParser()
                let events = parser.feed(streamed.text)
                let text = Self.text(events)
                // The second model continues the cut answer: no token lost, none repeated.
                #expect(text == (0..<6).map { "tok\($0) " }.joined(), "\(text)")
                let fallback = try #require(events.first { $0.type == "fallback" }?.json?.objectValue)
                #expect(fallback["reason"]?.stringValue == "stream_cut" && fallback["after_first_token"] == .bool(true))
                #expect(events.filter { $0.type == "model" }.compactMap { $0.json?.objectValue?["name"]?.stringValue } == ["m0", "m1"])
                #expect(events.contains { $0.type == "usage" })
                let done = try #require(events.last?.json?.objectValue)
                #expect(done["result"]?.objectValue?["content"]?.stringValue == text)

                let messages = try #require(try await client.send(.get, "/api/chats/\(chat)", token: token).json["messages"]?.arrayValue).compactMap(\.objectValue)
                let reply = try #require(messages.last)
                #expect(reply["content"]?.stringValue == text && reply["models"]?.arrayValue == [.string("m0"), .string("m1")])
                #expect(reply["fallbacks"]?.arrayValue?.count == 1 && reply["sources"]?.arrayValue?.isEmpty == false)
                #expect(reply["usage"]?.arrayValue?.isEmpty == false)
                // The fake was given the sources and the question.
                let sent = try JSONValue.parse(Array(try await HTTPRequests.fakeRequests(fake).utf8)).arrayValue ?? []
                let prompt = sent.first?.objectValue?["body"]?.objectValue?["messages"]?.arrayValue ?? []
                #expect(prompt.first?.objectValue?["content"]?.stringValue?.contains("[1]") == true)
                #expect(prompt.last?.objectValue?["content"]?.stringValue == "Summarise the findings")

                // A second question carries the first exchange as history.
                let second = try await client.send(.post, "/api/chats/\(chat)/messages", token: token, body: #"{"content": "And the costs?", "auto_documents": false}"#)
                let job = try #require(second.json["job"]?.objectValue?["id"]?.stringValue)
                _ = try await Self.events(client, job: job, token: token)
                let again = try JSONValue.parse(Array(try await HTTPRequests.fakeRequests(fake).utf8)).arrayValue ?? []
                // The last request continued a cut answer; the one before it asked the question.
                let history = again.dropLast().last?.objectValue?["body"]?.objectValue?["messages"]?.arrayValue?.compactMap { $0.objectValue?["content"]?.stringValue } ?? []
                #expect(history.contains("Summarise the findings") && history.contains(text) && history.last == "And the costs?", "\(history)")
            }
        }
    }

    /// The cluster harness caught this: an instance SIGKILLed after storing
    /// a question but before answering, and nginx (`proxy_next_upstream
    /// error non_idempotent`) sent the POST to another instance, which
    /// stored it again: the chat held the question twice, the first never
    /// answered.
    @Test("with an Idempotency-Key a repeated message is a replay: one question, one reply; a question whose request died before submitting its reply gets it from the repeat")
    func idempotentMessages() async throws {
        try await Self.withFake { fake in
            let file = try Self.modelsFile(fake, chain: ["ok"])
            try await withTestApp(configure: { $0.models.file = file }, runJobs: true, modules: Self.modules) { app, client in
                let token = try await client.createSession()
                let session = try #require(try await client.send(.get, "/api/session", token: token).json["id"]?.stringValue)
                let chat = try #require(try await client.send(.post, "/api/chats", token: token, body: "{}").json["id"]?.stringValue)
                let path = "/api/chats/\(chat)/messages"
                let first = try await client.send(.post, path, token: token, headers: [.idempotencyKey: "k1"], body: #"{"content": "Count"}"#)
                #expect(first.status == .accepted && first.headers[.idempotentReplayed] == nil, "\(first.text)")
                let message = try #require(first.json["message"]?.objectValue?["id"]?.stringValue)
                let job = try #require(first.json["job"]?.objectValue?["id"]?.stringValue)
                let events = try await Self.events(client, job: job, token: token)

                // The same request again: the same question and reply, nothing stored.
                let again = try await client.send(.post, path, token: token, headers: [.idempotencyKey: "k1"], body: #"{"content": "Count"}"#)
                #expect(again.status == .accepted && again.headers[.idempotentReplayed] == "true", "\(again.text)")
                #expect(again.json["message"]?.objectValue?["id"]?.stringValue == message && again.json["job"]?.objectValue?["id"]?.stringValue == job)
                let streamed = try await client.send(
                    .post, path, token: token, headers: [.idempotencyKey: "k1", .accept: "text/event-stream"], body: #"{"content": "Count"}"#)
                #expect(streamed.status == .ok && streamed.headers[.idempotentReplayed] == "true")
                #expect(streamed.headers[.keelJobID] == job && streamed.headers[.keelMessageID] == message)
                var parser = SSEParser()
                #expect(Self.text(parser.feed(streamed.text)) == Self.text(events) && !Self.text(events).isEmpty)
                // The key names that question only.
                let other = try await client.send(.post, path, token: token, headers: [.idempotencyKey: "k1"], body: #"{"content": "Something else"}"#)
                #expect(other.status == .conflict && other.errorCode == "idempotency_key_reused", "\(other.text)")
                let malformed = try await client.send(.post, path, token: token, headers: [.idempotencyKey: "no spaces"], body: #"{"content": "Count"}"#)
                #expect(malformed.status == .badRequest && malformed.errorCode == "bad_request")

                // A request that stored its question and died before submitting the reply: its repeat submits it.
                let orphanJob = Identifiers.random(byteCount: 16)
                let orphan = ChatMessageRecord(
                    id: ChatsController.messageID(sessionID: session, chatID: chat, idempotencyKey: "k2"), chatID: chat, role: "user", content: "Count again",
                    metadata: ["reply_job_id": .string(orphanJob)], createdAt: Date())
                try await app.store.chats.appendMessage(orphan, sessionID: session)
                let healed = try await client.send(.post, path, token: token, headers: [.idempotencyKey: "k2"], body: #"{"content": "Count again"}"#)
                #expect(healed.status == .accepted && healed.headers[.idempotentReplayed] == "true", "\(healed.text)")
                #expect(healed.json["message"]?.objectValue?["id"]?.stringValue == orphan.id && healed.json["job"]?.objectValue?["id"]?.stringValue == orphanJob)
                _ = try await Self.events(client, job: orphanJob, token: token)

                // Four first requests with one key at once (a client retrying
                // on a timeout while the first is still in flight): one
                // question, one reply, and every request names them.
                let raced = try await withThrowingTaskGroup(of: TestResponse.self) { group in
                    for _ in 0..<4 {
                        group.addTask {
                            try await client.send(.post, path, token: token, headers: [.idempotencyKey: "k3"], body: #"{"content": "Count thrice"}"#)
                        }
                    }
                    var responses: [TestResponse] = []
                    for try await response in group { responses.append(response) }
                    return responses
                }
                #expect(raced.allSatisfy { $0.status == .accepted }, "\(raced.map(\.text))")
                #expect(Set(raced.compactMap { $0.json["message"]?.objectValue?["id"]?.stringValue }).count == 1)
                let racedJobs = Set(raced.compactMap { $0.json["job"]?.objectValue?["id"]?.stringValue })
                #expect(racedJobs.count == 1 && raced.filter { $0.headers[.idempotentReplayed] == nil }.count == 1)
                _ = try await Self.events(client, job: try #require(racedJobs.first), token: token)

                // Each question once, each answered once, by its own reply.
                let messages = try #require(try await client.send(.get, "/api/chats/\(chat)", token: token).json["messages"]?.arrayValue).compactMap(\.objectValue)
                #expect(messages.map { $0["role"]?.stringValue ?? "" } == ["user", "assistant", "user", "assistant", "user", "assistant"], "\(messages)")
                #expect(messages.map { $0["id"]?.stringValue ?? "" }[0] == message && messages.map { $0["id"]?.stringValue ?? "" }[2] == orphan.id)
                #expect(messages[1]["job_id"]?.stringValue == job && messages[3]["job_id"]?.stringValue == orphanJob)
                #expect(messages[3]["content"]?.stringValue?.isEmpty == false && messages[3]["status"]?.stringValue == "complete")
            }
        }
    }

    @Test("a retried reply continues from the latest attempt that streamed text, also when the attempt before it was killed before its replay")
    func answerSoFar() {
        var sequence: Int64 = 0
        func log(_ events: [(String, String)]) -> [JobEvent] {
            events.map { type, text in
                sequence += 1
                let data = type == "token" ? JSONValue.object(["text": .string(text)]).serialized() : "{}"
                return JobEvent(jobID: "j", sequence: sequence, type: type, dataJSON: data, createdAt: Date())
            }
        }
        let first = log([("progress", ""), ("sources", ""), ("token", "tok0 "), ("token", "tok1 ")])
        let second = log([("reset", ""), ("sources", ""), ("token", "tok0 tok1 "), ("token", "tok2 ")])
        #expect(ChatReplyJob.answerSoFar([]) == "")
        #expect(ChatReplyJob.answerSoFar(first) == "tok0 tok1 ")
        #expect(ChatReplyJob.answerSoFar(first + log([("reset", "")])) == "tok0 tok1 ")
        #expect(ChatReplyJob.answerSoFar(first + second + log([("reset", "")])) == "tok0 tok1 tok2 ")
        // The third attempt died after its claim's reset (and its sources), before replaying the answer: the fourth
        // continues the second's text rather than starting over (it used to read only the attempt just before).
        #expect(ChatReplyJob.answerSoFar(first + second + log([("reset", ""), ("sources", ""), ("reset", "")])) == "tok0 tok1 tok2 ")
        #expect(ChatReplyJob.answerSoFar(first + second + log([("reset", ""), ("reset", ""), ("reset", "")])) == "tok0 tok1 tok2 ")
        // Nothing streamed yet by any attempt.
        #expect(ChatReplyJob.answerSoFar(log([("progress", ""), ("sources", ""), ("reset", ""), ("sources", ""), ("reset", "")])) == "")
    }

    /// Sends one question to each of `count` new chats; returns the reply jobs.
    static func askMany(_ client: any TestClientProtocol, token: String, count: Int) async throws -> [String] {
        var jobs: [String] = []
        for index in 0..<count {
            let chat = try #require(try await client.send(.post, "/api/chats", token: token, body: "{}").json["id"]?.stringValue)
            let sent = try await client.send(.post, "/api/chats/\(chat)/messages", token: token, body: #"{"content": "Question \#(index)"}"#)
            jobs.append(try #require(sent.json["job"]?.objectValue?["id"]?.stringValue, "\(sent.text)"))
        }
        return jobs
    }

    static func statuses(_ client: any TestClientProtocol, _ jobs: [String], token: String) async throws -> [String] {
        var statuses: [String] = []
        for job in jobs { statuses.append(try await client.send(.get, "/api/jobs/\(job)", token: token).json["status"]?.stringValue ?? "?") }
        return statuses
    }

    /// Whether every job's log already holds a token.
    static func allStreaming(_ client: any TestClientProtocol, _ jobs: [String], token: String) async throws -> Bool {
        for job in jobs {
            let page = try await client.send(.get, "/api/jobs/\(job)/events?format=json", token: token)
            guard (page.json["events"]?.arrayValue ?? []).contains(where: { $0.objectValue?["type"]?.stringValue == "token" }) else { return false }
        }
        return true
    }

    @Test("replies run in the model lane: with --workers 1, twelve answers stream from one upstream at once (more than AsyncHTTPClient's 8 connections per host) and a document is ingested meanwhile; with --model-workers 0 they take turns on the one worker")
    func modelLane() async throws {
        try await Self.withFake { fake in
            // 200 tokens 50 ms apart: each answer takes 10 s, time enough to see them all at once on a loaded machine.
            let file = try Self.modelsFile(fake, chain: ["slow-200-50"])
            try await withTestApp(
                configure: { $0.models.file = file; $0.jobs.workers = 1; $0.jobs.modelWorkers = 16 }, runJobs: true, modules: Self.modules
            ) { app, client in
                #expect(app.workers.count == 1 && app.workers.modelWorkers == 16)
                #expect(app.workers.modelTypes == ["chat.reply", "document.analyze"] && !app.workers.generalTypes.contains("chat.reply"))
                let token = try await client.createSession()
                let jobs = try await Self.askMany(client, token: token, count: 12)
                try await waitFor("twelve replies running at once") {
                    try await Self.statuses(client, jobs, token: token) == Array(repeating: "running", count: 12)
                }
                // Each already has text from the model: twelve upstream streams are open together.
                try await waitFor("twelve answers streaming at once") { try await Self.allStreaming(client, jobs, token: token) }
                #expect(try await Self.statuses(client, jobs, token: token) == Array(repeating: "running", count: 12))
                // The one general worker is free: an upload becomes a document while the answers stream.
                _ = try await Self.readyReport(client, token: token)
                #expect(try await Self.statuses(client, jobs, token: token).contains("running"), "the answers ended before the document was ready")
                try await waitFor("every reply to finish", timeout: .seconds(60)) {
                    try await Self.statuses(client, jobs, token: token) == Array(repeating: "succeeded", count: 12)
                }
            }
        }
        try await Self.withFake { fake in
            let file = try Self.modelsFile(fake, chain: ["slow-8-50"])
            try await withTestApp(
                configure: { $0.models.file = file; $0.jobs.workers = 1; $0.jobs.modelWorkers = 0 }, runJobs: true, modules: Self.modules
            ) { app, client in
                #expect(app.workers.modelWorkers == 0 && app.workers.generalTypes.contains("chat.reply"))
                let token = try await client.createSession()
                let jobs = try await Self.askMany(client, token: token, count: 3)
                try await waitFor("every reply to finish", timeout: .seconds(60)) {
                    try await Self.statuses(client, jobs, token: token) == Array(repeating: "succeeded", count: 3)
                }
                // One after another: each reply started once the one before had finished (times from the server's clock).
                var runs: [(started: String, finished: String)] = []
                for job in jobs {
                    let record = try await client.send(.get, "/api/jobs/\(job)", token: token).json
                    runs.append((try #require(record["started_at"]?.stringValue), try #require(record["finished_at"]?.stringValue)))
                }
                runs.sort { $0.started < $1.started }
                for (earlier, later) in zip(runs, runs.dropFirst()) {
                    #expect(later.started >= earlier.finished, "\(runs)")
                }
            }
        }
    }

    @Test("stopping a reply keeps the partial answer, marked stopped, with the model that wrote it")
    func stop() async throws {
        try await Self.withFake { fake in
            let file = try Self.modelsFile(fake, chain: ["stall-after-3"])
            try await withTestApp(configure: { $0.models.file = file }, runJobs: true, modules: Self.modules) { _, client in
                let token = try await client.createSession()
                let chat = try #require(try await client.send(.post, "/api/chats", token: token, body: "{}").json["id"]?.stringValue)
                let sent = try await client.send(.post, "/api/chats/\(chat)/messages", token: token, body: #"{"content": "Go on"}"#)
                let job = try #require(sent.json["job"]?.objectValue?["id"]?.stringValue)
                // Tokens that arrive together may share one event: wait for the text.
                try await waitFor("three tokens") {
                    let page = try await client.send(.get, "/api/jobs/\(job)/events?format=json", token: token)
                    let pieces = (page.json["events"]?.arrayValue ?? []).compactMap(\.objectValue).filter { $0["type"]?.stringValue == "token" }
                    return pieces.compactMap { $0["data"]?.objectValue?["text"]?.stringValue }.joined() == "tok0 tok1 tok2 "
                }
                #expect(try await client.send(.post, "/api/jobs/\(job)/cancel", token: token).status == .accepted)
                var reply: [String: JSONValue] = [:]
                try await waitFor("the stopped message") {
                    let messages = try await client.send(.get, "/api/chats/\(chat)", token: token).json["messages"]?.arrayValue ?? []
                    reply = messages.last?.objectValue ?? [:]
                    return reply["role"]?.stringValue == "assistant"
                }
                #expect(reply["status"]?.stringValue == "stopped" && reply["content"]?.stringValue == "tok0 tok1 tok2 ", "\(reply)")
                // The model that wrote the partial answer is named, as for a finished one.
                #expect(reply["models"] == .array([.string("m0")]), "\(reply)")
            }
        }
    }

    @Test("a question names its reply's job; deleting the chat mid-answer cancels the reply, which stores nothing")
    func deleteCancelsReply() async throws {
        try await Self.withFake { fake in
            let file = try Self.modelsFile(fake, chain: ["stall-after-3"])
            try await withTestApp(configure: { $0.models.file = file }, runJobs: true, modules: Self.modules) { _, client in
                let token = try await client.createSession()
                let chat = try #require(try await client.send(.post, "/api/chats", token: token, body: "{}").json["id"]?.stringValue)
                let sent = try await client.send(.post, "/api/chats/\(chat)/messages", token: token, body: #"{"content": "Go on"}"#)
                let job = try #require(sent.json["job"]?.objectValue?["id"]?.stringValue)
                #expect(sent.json["message"]?.objectValue?["reply_job_id"]?.stringValue == job, "\(sent.text)")
                let stored = try await client.send(.get, "/api/chats/\(chat)", token: token).json["messages"]?.arrayValue?.first?.objectValue
                #expect(stored?["reply_job_id"]?.stringValue == job)
                try await waitFor("the answer under way") {
                    let page = try await client.send(.get, "/api/jobs/\(job)/events?format=json", token: token)
                    return (page.json["events"]?.arrayValue ?? []).contains { $0.objectValue?["type"]?.stringValue == "token" }
                }
                #expect(try await client.send(.delete, "/api/chats/\(chat)", token: token).status == .noContent)
                var status = ""
                try await waitFor("the reply to be cancelled") {
                    status = try await client.send(.get, "/api/jobs/\(job)", token: token).json["status"]?.stringValue ?? ""
                    return status != "running" && status != "queued"
                }
                #expect(status == "cancelled")
                #expect(try await client.send(.get, "/api/chats/\(chat)", token: token).status == .notFound)
                #expect(try await client.send(.get, "/api/chats", token: token).json["chats"]?.arrayValue?.isEmpty == true)
            }
        }
    }

    @Test("an analysis stores each section's result; bad input is refused and another session sees nothing")
    func analysisAndInput() async throws {
        try await Self.withFake { fake in
            let file = try Self.modelsFile(fake, chain: ["ok"])
            try await withTestApp(configure: { $0.models.file = file }, runJobs: true, modules: Self.modules) { _, client in
                let token = try await client.createSession()
                let document = try await Self.readyReport(client, token: token)
                let started = try await client.send(.post, "/api/documents/\(document)/analyses", token: token, body: #"{"sections": [1, 2]}"#)
                #expect(started.status == .accepted, "\(started.text)")
                let id = try #require(started.json["analysis"]?.objectValue?["id"]?.stringValue)
                var analysis: [String: JSONValue] = [:]
                try await waitFor("the analysis") {
                    analysis = try await client.send(.get, "/api/analyses/\(id)", token: token).json
                    return analysis["status"]?.stringValue != "running"
                }
                #expect(analysis["status"]?.stringValue == "complete", "\(analysis)")
                let results = try #require(analysis["results"]?.arrayValue).compactMap(\.objectValue)
                #expect(results.map { $0["index"] } == [.int(1), .int(2)] && results.allSatisfy { $0["content"]?.stringValue?.isEmpty == false })

                let chat = try #require(try await client.send(.post, "/api/chats", token: token, body: "{}").json["id"]?.stringValue)
                for (body, status, code) in [
                    (#"{"content": ""}"#, HTTPResponse.Status.badRequest, "invalid_input"),
                    (#"{"content": "hi", "colour": "red"}"#, .badRequest, "invalid_input"),
                    (#"{"content": "hi", "chain": "nope"}"#, .badRequest, "invalid_input"),
                    (#"{"content": "hi", "documents": ["missing"]}"#, .notFound, "not_found"),
                    (#"["hi"]"#, .badRequest, "invalid_input"),
                ] {
                    let refused = try await client.send(.post, "/api/chats/\(chat)/messages", token: token, body: body)
                    #expect(refused.status == status && refused.errorCode == code, "\(body): \(refused.text)")
                }
                #expect(try await client.send(.get, "/api/chats/\(chat)", token: token).json["messages"]?.arrayValue?.isEmpty == true)
                #expect(try await client.send(.post, "/api/documents/\(document)/analyses", token: token, body: #"{"sections": [99]}"#).status == .badRequest)

                let other = try await client.createSession()
                #expect(try await client.send(.get, "/api/chats/\(chat)", token: other).status == .notFound)
                #expect(try await client.send(.get, "/api/analyses/\(id)", token: other).status == .notFound)
                #expect(try await client.send(.post, "/api/chats/\(chat)/messages", token: other, body: #"{"content": "hi"}"#).status == .notFound)
                #expect(try await client.send(.get, "/api/chats", token: other).json["chats"]?.arrayValue?.isEmpty == true)
                #expect(try await client.send(.delete, "/api/chats/\(chat)", token: other).status == .notFound)
                #expect(try await client.send(.delete, "/api/chats/\(chat)", token: token).status == .noContent)
                #expect(try await client.send(.get, "/api/chats/\(chat)", token: token).status == .notFound)
                // A deleted document takes its analyses with it.
                #expect(try await client.send(.delete, "/api/documents/\(document)", token: token).status == .noContent)
                #expect(try await client.send(.get, "/api/analyses/\(id)", token: token).status == .notFound)
            }
        }
    }
}

enum HTTPRequests {
    /// What a fake upstream was sent (`GET /_fake/requests`).
    static func fakeRequests(_ fake: FakeOpenAIUpstream) async throws -> String {
        try await HTTP.send(.GET, fake.rootURL + "/_fake/requests").body
    }
}
