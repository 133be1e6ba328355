import ArgumentParser
import AsyncHTTPClient
import Foundation
import KeelCore
import KeelModels
import NIOCore
import NIOHTTP1

// MARK: 3. Chats under fire

/// Chats through the balancer while the script SIGKILLs instances: each chat
/// (a session of its own) sends its messages one after another with `Accept:
/// text/event-stream` and an `Idempotency-Key` (a balancer resends a POST
/// whose instance died mid-request) and reads the answer as a browser would, resuming a
/// broken stream with `Last-Event-ID` on whatever instance the balancer
/// picks and honouring `reset`. The instances answer with a fake model whose
/// answer is known (`tok0 tok1 … tokN-1`, paced so that kills land
/// mid-answer). Every answer must complete, read exactly the model's answer,
/// be stored once (one assistant message per user message, `complete`, its
/// job's) with the text the stream showed, and its job must have succeeded.
struct ClusterChat: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chat",
        abstract: "Chats streamed through the balancer while instances are killed: every answer completes, is stored once, and reads as streamed.")
    @OptionGroup var options: ClusterOptions
    @Option(help: "Concurrent chats, each in a session of its own.") var chats = 12
    @Option(help: "Messages each chat sends, each after the previous answer ended.") var turns = 2
    @Option(help: "Tokens of the fake model's answer (tok0 tok1 …): every answer must read exactly that.") var answerTokens = 20

    func run() async throws {
        try await self.options.run { client, tally, http in
            let expected = (0..<self.answerTokens).map { "tok\($0) " }.joined()
            let (chats, turns) = (self.chats, self.turns)
            let started = ContinuousClock.now
            await withTaskGroup(of: Void.self) { group in
                for index in 0..<chats {
                    group.addTask { await Self.converse(http, index: index, turns: turns, expected: expected) }
                }
            }
            let counts = tally.counts
            let (answers, interrupted, resets, resumes) = (counts["answers"] ?? 0, counts["interrupted"] ?? 0, counts["resets"] ?? 0, counts["resumes"] ?? 0)
            let replayed = counts["replayed"] ?? 0
            if answers != chats * turns { print("chat: \(answers) of \(chats * turns) answers checked out") }
            let seconds = (ContinuousClock.now - started).timeInterval
            print(
                "chat: \(chats) chats of \(turns) messages, \(answers) answers complete and stored once as streamed; \(interrupted) continued by a later attempt, "
                    + "\(resets) resets and \(resumes) stream resumes seen by clients, \(replayed) messages answered as a replay of their Idempotency-Key "
                    + "(resent by the balancer or the client after an instance died mid-request), \(String(format: "%.1f", seconds)) s")
            // Kills that never cut an answer proved nothing about answers.
            if interrupted == 0 { tally.fail("no answer was interrupted by a kill: every chat.reply job succeeded on its first attempt") }
            try await finish(
                phase: "chat", tally: tally,
                extra: ["jobs": "\(chats * turns)", "answers": "\(answers)", "interrupted": "\(interrupted)", "resets": "\(resets)", "resumes": "\(resumes)", "replayed": "\(replayed)"],
                client: client)
        }
    }

    /// One chat: its messages in turn, then the stored conversation checked against what was streamed.
    static func converse(_ http: Balanced, index: Int, turns: Int, expected: String) async {
        let tally = http.tally
        do {
            let token = try await http.session()
            let created = try await http.send(.POST, "/api/chats", token: token, json: "{}")
            guard created.status == 201, let chat = created.json["id"]?.stringValue else {
                tally.fail("chat \(index): create answered \(created.status) \(created.text.prefix(200))")
                return
            }
            var answers: [Answer] = []
            for turn in 1...turns {
                let question = "chat \(index), question \(turn): count for me"
                guard let answer = try await Self.ask(http, token: token, chat: chat, question: question, label: "chat \(index) (\(chat)) turn \(turn)")
                else { return }
                if answer.text != expected {
                    tally.fail("\(answer.label): the stream's text is not the model's answer: \(Self.brief(answer.text))")
                }
                answers.append(answer)
            }
            // Stored once, as streamed: user, assistant, user, assistant…
            let read = try await http.send(.GET, "/api/chats/\(chat)", token: token)
            let messages = read.json["messages"]?.arrayValue?.compactMap(\.objectValue) ?? []
            let roles = messages.map { $0["role"]?.stringValue ?? "?" }
            guard read.status == 200, roles == Array(repeating: ["user", "assistant"], count: turns).flatMap({ $0 }) else {
                let jobs = messages.map { "\($0["role"]?.stringValue ?? "?"):\($0["job_id"]?.stringValue ?? $0["id"]?.stringValue ?? "?")" }
                tally.fail("chat \(index) (\(chat)): GET answered \(read.status) with messages \(jobs), expected each of \(turns) questions once, each answered once")
                return
            }
            for (offset, answer) in answers.enumerated() {
                let (question, reply) = (messages[2 * offset], messages[2 * offset + 1])
                var good = true
                func check(_ holds: Bool, _ what: @autoclosure () -> String) {
                    if !holds {
                        good = false
                        tally.fail("\(answer.label): \(what())")
                    }
                }
                check(question["id"]?.stringValue == answer.messageID, "the stored question is \(question["id"] ?? .null), the POST named \(answer.messageID)")
                check(question["content"]?.stringValue == answer.question, "the stored question reads \(question["content"] ?? .null)")
                check(question["reply_job_id"]?.stringValue == answer.job, "the stored question names reply \(question["reply_job_id"] ?? .null)")
                check(reply["job_id"]?.stringValue == answer.job, "the stored answer is job \(reply["job_id"] ?? .null)'s, not \(answer.job)'s")
                check(reply["status"]?.stringValue == "complete", "the stored answer is \(reply["status"] ?? .null), not complete")
                let stored = reply["content"]?.stringValue ?? ""
                check(stored == answer.text, "the stored text differs from the streamed one: stored \(Self.brief(stored)), streamed \(Self.brief(answer.text))")
                let job = try await http.send(.GET, "/api/jobs/\(answer.job)", token: token)
                check(job.json["status"]?.stringValue == "succeeded", "the job is \(job.json["status"] ?? .null): \(job.text.prefix(300))")
                if case .int(let attempts)? = job.json["attempts"], attempts > 1 { tally.count("interrupted") }
                if good { tally.count("answers") }
            }
        } catch {
            tally.fail("chat \(index): \(error)")
        }
    }

    struct Answer {
        var label: String
        var question: String
        var messageID: String
        var job: String
        var text: String
    }

    /// Sends one message accepting the event stream and reads the answer to
    /// its end: the POST's own stream, then, after every break, `GET
    /// /api/jobs/{id}/events` with `Last-Event-ID` through the balancer.
    /// The message carries an `Idempotency-Key`, as the balancer may resend
    /// it to another instance when its instance dies mid-request, and as
    /// this client resends it when no instance answered. `nil` after a
    /// failure (recorded).
    static func ask(_ http: Balanced, token: String, chat: String, question: String, label: String) async throws -> Answer? {
        let tally = http.tally
        var stream = AnswerStream(label: label, tally: tally)
        let key = "cluster-chat-\(Identifiers.random(byteCount: 12))"
        var sent: (job: String, message: String)?
        var posts = 0
        while sent == nil {
            posts += 1
            if posts > 1 {
                // No instance answered: the same message again, under the same key.
                guard posts <= 20 else {
                    tally.fail("\(label): no instance took the message in \(posts - 1) POSTs")
                    return nil
                }
                tally.retry()
                try await Task.sleep(for: .milliseconds(300))
            }
            var request = HTTPClientRequest(url: http.base + "/api/chats/\(chat)/messages")
            request.method = .POST
            request.headers.add(name: "Authorization", value: "Bearer \(token)")
            request.headers.add(name: "Accept", value: "text/event-stream")
            request.headers.add(name: "Content-Type", value: "application/json")
            request.headers.add(name: "Idempotency-Key", value: key)
            request.body = .bytes(ByteBuffer(string: JSONValue.object(["content": .string(question)]).serialized()))
            do {
                let response = try await http.client.execute(request, timeout: .seconds(600))
                let instance = response.headers.first(name: "Keel-Instance")
                tally.request(instance)
                if response.status == .ok, let job = response.headers.first(name: "Keel-Job-Id"),
                    let message = response.headers.first(name: "Keel-Message-Id")
                {
                    sent = (job, message)
                    if response.headers.first(name: "Idempotent-Replayed") == "true" { tally.count("replayed") }
                    do { try await stream.read(response.body) } catch {}  // broken: resumed below
                    break
                }
                let body = (try? await response.body.collect(upTo: 1 << 20)).map { String(buffer: $0) } ?? ""
                guard [502, 503, 504].contains(Int(response.status.code)), instance == nil else {
                    tally.fail("\(label): POST answered \(response.status.code) \(body.prefix(300))")
                    return nil
                }
            } catch {}
        }
        guard let sent else { return nil }
        let deadline = ContinuousClock.now + .seconds(300)
        while !stream.done && !stream.failed {
            guard ContinuousClock.now < deadline else {
                tally.fail("\(label) (job \(sent.job)): no done after 300 s and \(stream.resumes) resumes, last event \(stream.last)")
                return nil
            }
            tally.retry()
            stream.resumes += 1
            try await Task.sleep(for: .milliseconds(200))
            var request = HTTPClientRequest(url: http.base + "/api/jobs/\(sent.job)/events")
            request.headers.add(name: "Authorization", value: "Bearer \(token)")
            if stream.last > 0 { request.headers.add(name: "Last-Event-ID", value: String(stream.last)) }
            do {
                let response = try await http.client.execute(request, timeout: .seconds(600))
                tally.request(response.headers.first(name: "Keel-Instance"))
                guard response.status == .ok else {
                    let body = (try? await response.body.collect(upTo: 1 << 20)).map { String(buffer: $0) } ?? ""
                    if [502, 503, 504].contains(Int(response.status.code)) { continue }
                    tally.fail("\(label) (job \(sent.job)): resuming after \(stream.last) answered \(response.status.code) \(body.prefix(300))")
                    return nil
                }
                try await stream.read(response.body)
            } catch {}  // cut again: resume again
        }
        tally.count("resets", stream.resets)
        tally.count("resumes", stream.resumes)
        guard !stream.failed else { return nil }
        return Answer(label: "\(label) (job \(sent.job))", question: question, messageID: sent.message, job: sent.job, text: stream.text)
    }

    static func brief(_ text: String) -> String {
        text.count <= 120 ? "\"\(text)\"" : "\"\(text.prefix(50))…\(text.suffix(50))\" (\(text.count) characters)"
    }
}

/// One answer's events as a client sees them across its connections: ids
/// must run 1, 2, 3… with no gap or repeat across resumes; `reset` drops the
/// text shown so far; `token` adds to it; `done` must say succeeded and
/// carry the stored message, whose text must be the text shown.
struct AnswerStream {
    let label: String
    let tally: Tally
    var last: Int64 = 0
    var text = ""
    var done = false
    var failed = false
    var resets = 0
    var resumes = 0

    init(label: String, tally: Tally) {
        self.label = label
        self.tally = tally
    }

    mutating func read(_ body: HTTPClientResponse.Body) async throws {
        var decoder = SSEDecoder()
        for try await buffer in body {
            for event in try decoder.feed(buffer.readableBytesView) {
                self.take(event)
                if self.failed { return }
            }
        }
    }

    private mutating func fail(_ what: String) {
        self.failed = true
        self.tally.fail("\(self.label): \(what)")
    }

    mutating func take(_ event: SSEEvent) {
        guard let current = event.id.flatMap({ Int64($0) }) else {
            if self.done { self.fail("data after done") }
            return
        }
        guard current == self.last + 1 else {
            self.fail("event \(current) (\(event.type)) after \(self.last): a gap or a repeat")
            return
        }
        self.last = current
        let data = (try? JSONValue.parse(Array(event.data.utf8)))?.objectValue ?? [:]
        switch event.type {
        case JobEventType.reset:
            self.resets += 1
            self.text = ""
        case JobEventType.token:
            self.text += data["text"]?.stringValue ?? ""
        case JobEventType.done:
            self.done = true
            guard data["status"]?.stringValue == "succeeded" else {
                self.fail("done with \(event.data.prefix(300))")
                return
            }
            let stored = data["result"]?.objectValue?["content"]?.stringValue ?? ""
            if stored != self.text {
                self.fail("done carries \(ClusterChat.brief(stored)), the stream showed \(ClusterChat.brief(self.text))")
            }
        default:
            break
        }
    }
}
