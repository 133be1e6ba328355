import ArgumentParser
import AsyncHTTPClient
import Foundation
import KeelCore
import KeelModels
import NIOCore
import NIOHTTP1
import NIOPosix

/// Issue 18: a burst of concurrent chats, each message answered by a model
/// streaming its tokens. Against Keel: one session and one chat per user,
/// made before the clock starts; then every user sends one message at once
/// (`POST /api/chats/{id}/messages`, `Accept: text/event-stream`) and reads
/// the reply's stream to its end. Against the peer (`--peer`): the same POST
/// to the peer's one endpoint, nothing to set up.
///
/// Each answer must be complete: status 200, every token of the fake model
/// (`tok0 tok1 … `, the text `bench/chats.sh`'s upstream sends) in order,
/// and one `done` saying `succeeded`, last. Against Keel the stored answer
/// is then read back (`GET /api/chats/{id}`): its text must equal the
/// streamed text. Time to first token: from writing the POST to the first
/// `token` event's arrival. With `--cpu`, the CPU time of the named
/// processes is read from /proc before the burst and after the last answer.
struct ChatBurst: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chats",
        abstract: "Concurrent chats: time to first token, answers per second, completeness, CPU per answer.")

    @OptionGroup var server: ServerOptions
    @Option(help: "Concurrent chats (one session each), every message sent at once.") var chats = 200
    @Option(help: "Tokens the fake model streams per answer (`tok0 ` … ); every answer must have them all.") var tokens = 200
    @Flag(help: "Drive the FastAPI peer (bench/peer/chat_app.py): POST --peer-path, no sessions, nothing stored to check.") var peer = false
    @Option(help: "The peer's endpoint.") var peerPath = "/chat/stream"
    @Option(help: "The user's message.") var content = "What do the quarterly reports say about the travel budget?"
    @Option(help: "A name for this case in the RESULT line.") var label = "keel"
    @Option(
        help: ArgumentHelp(
            "CPU time to measure, LABEL=PID[,PID…] (repeatable); +PID also counts the process's descendants, found at each reading.",
            valueName: "label=pids"))
    var cpu: [String] = []
    @Option(help: "Seconds an answer may take before it counts as lost.") var timeoutSeconds = 120
    @Option(help: "Concurrent requests while making the sessions and chats (untimed).") var setupConcurrency = 16

    func validate() throws {
        guard self.chats > 0, self.tokens > 0, self.timeoutSeconds > 0, self.setupConcurrency > 0 else {
            throw ValidationError("--chats, --tokens, --timeout-seconds and --setup-concurrency must be positive")
        }
        _ = try self.cpuGroups()
    }

    func cpuGroups() throws -> [CPUGroup] {
        try self.cpu.map { text in
            let parts = text.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, !parts[0].isEmpty else { throw ValidationError("--cpu \(text): expected LABEL=PID[,PID…]") }
            var group = CPUGroup(label: parts[0], pids: [], trees: [])
            for item in parts[1].split(separator: ",") {
                let withTree = item.hasPrefix("+")
                guard let pid = Int32(withTree ? item.dropFirst() : item), pid > 0 else { throw ValidationError("--cpu \(text): '\(item)' is not a pid") }
                if withTree { group.trees.append(pid) } else { group.pids.append(pid) }
            }
            return group
        }
    }

    func run() async throws {
        let base = self.server.url.hasSuffix("/") ? String(self.server.url.dropLast()) : self.server.url
        let groups = try self.cpuGroups()
        let setupClient = Client.make(connections: self.setupConcurrency + 4)
        defer { Client.shutdown(setupClient) }

        // Untimed: a session and a chat per user (Keel), or nothing (peer).
        var users: [User] = []
        let body = JSONValue.object(["content": .string(self.content)]).serialized()
        if self.peer {
            users = (0..<self.chats).map { _ in User(bearer: nil, chatID: nil, path: self.peerPath) }
        } else {
            users = try await Self.setUp(setupClient, base, count: self.chats, concurrency: self.setupConcurrency)
        }
        let target = try BareHTTP.Target(base)
        let expected = (0..<self.tokens).map { "tok\($0) " }.joined()

        let cpuBefore = groups.map { $0.seconds() }
        let start = ContinuousClock.now
        let futures = try await ChatClient.burst(target, users: users, body: body, timeout: .seconds(Int64(self.timeoutSeconds)))
        var outcomes: [ChatClient.Outcome] = []
        var errors: [String: Int] = [:]
        for future in futures {
            do { outcomes.append(try await future.get()) } catch { errors["\(error)", default: 0] += 1 }
        }
        let elapsed = ContinuousClock.now - start
        let cpuAfter = groups.map { $0.seconds() }

        // Every answer checked: the stream, then (Keel) the stored message.
        var complete: [Int] = []
        var problems: [String: Int] = errors
        var checked: [(index: Int, text: String)] = []
        // Token events per complete answer: one per model token when every
        // piece gets its own store write, fewer when a batch of pieces
        // shares one (Keel's forEachBatch). Only the text is checked.
        var tokenEvents: [Double] = []
        for (index, outcome) in outcomes.enumerated() {
            let verdict = Self.check(outcome, expected: expected)
            if let problem = verdict.problem {
                problems[problem, default: 0] += 1
            } else {
                complete.append(index)
                checked.append((index, verdict.text))
                tokenEvents.append(Double(verdict.tokenEvents))
            }
        }
        var stored = 0
        if !self.peer {
            // What the store holds for each streamed answer, read back after the run.
            let results = try await withThrowingTaskGroup(of: String?.self) { group in
                var results: [String?] = []
                var next = 0
                func add() {
                    let (index, text) = checked[next]
                    let user = users[outcomes[index].user]
                    next += 1
                    group.addTask { try await Self.storedProblem(setupClient, base, user: user, streamed: text) }
                }
                while next < min(checked.count, self.setupConcurrency) { add() }
                while let result = try await group.next() {
                    results.append(result)
                    if next < checked.count { add() }
                }
                return results
            }
            for problem in results {
                if let problem { problems["stored: " + problem, default: 0] += 1 } else { stored += 1 }
            }
        }

        let seconds = elapsed.milliseconds / 1000
        let answered = self.peer ? complete.count : stored
        let rate = Double(answered) / seconds
        let ttft = Summary(values: complete.map { outcomes[$0].firstToken ?? .nan })
        let total = Summary(values: complete.map { outcomes[$0].total })
        let connect = Summary(values: outcomes.compactMap(\.connected))
        let eventsPerAnswer = tokenEvents.isEmpty ? Double.nan : tokenEvents.reduce(0, +) / Double(tokenEvents.count)
        print("# \(self.label): \(self.peer ? "peer POST \(self.peerPath)" : "Keel POST /api/chats/{id}/messages") at \(base), \(self.chats) chats at once, \(self.tokens) tokens each")
        print(
            String(
                format: "complete=%d/%d%@ elapsed=%.3fs answers/s=%.1f", complete.count, self.chats,
                self.peer ? "" : " stored=\(stored)/\(self.chats)", seconds, rate))
        print("time to first token (from the POST written): \(ttft)")
        print("whole answer (from the POST written):        \(total)")
        print("connect (before the POST):                   \(connect)")
        print(
            String(
                format: "token events per answer: mean %.1f, min %.0f, max %.0f (%d tokens each)", eventsPerAnswer, tokenEvents.min() ?? .nan,
                tokenEvents.max() ?? .nan, self.tokens))
        var cpuFields: [String] = []
        for (index, group) in groups.enumerated() {
            let used = cpuAfter[index] - cpuBefore[index]
            let perAnswer = answered > 0 ? used * 1000 / Double(answered) : .nan
            print(String(format: "cpu %@: %.2f s over the burst, %.2f ms per answer (pids %@)", group.label, used, perAnswer, group.describe))
            cpuFields.append(String(format: "cpu_%@_ms=%.2f", group.label, perAnswer))
        }
        for (problem, count) in problems.sorted(by: { $0.value > $1.value }) { print("LOST \(count): \(problem)") }
        print(
            "RESULT label=\(self.label) chats=\(self.chats) complete=\(self.peer ? complete.count : stored) "
                + String(
                    format: "seconds=%.3f answers_s=%.2f ttft_p50_ms=%.2f ttft_p99_ms=%.2f total_p50_ms=%.2f total_p99_ms=%.2f token_events=%.1f ", seconds, rate,
                    ttft.percentile(50), ttft.percentile(99), total.percentile(50), total.percentile(99), eventsPerAnswer)
                + cpuFields.joined(separator: " "))
        if answered < self.chats { throw ExitCode(1) }
    }

    /// One simulated user: who it is (Keel) and where it posts.
    struct User: Sendable {
        var bearer: String?
        var chatID: String?
        var path: String
    }

    static func setUp(_ client: HTTPClient, _ base: String, count: Int, concurrency: Int) async throws -> [User] {
        try await withThrowingTaskGroup(of: (Int, User).self) { group in
            var users = [User?](repeating: nil, count: count)
            var next = 0
            func add() {
                let index = next
                next += 1
                group.addTask {
                    let token = try await Client.session(client, base)
                    let created = try await Client.send(client, .POST, base + "/api/chats", token: token, body: #"{"title":"bench"}"#)
                    guard created.status == 201, case .string(let id)? = created.json["id"] else {
                        throw ValidationError("POST /api/chats answered \(created.status): \(created.json)")
                    }
                    return (index, User(bearer: token, chatID: id, path: "/api/chats/\(id)/messages"))
                }
            }
            while next < min(count, concurrency) { add() }
            while let (index, user) = try await group.next() {
                users[index] = user
                if next < count { add() }
            }
            return users.compactMap { $0 }
        }
    }

    /// The stream's verdict: its text, its number of `token` events (one
    /// per model token, or fewer when pieces that arrived together shared
    /// a store write), or what is wrong with it. Only the text is checked.
    static func check(_ outcome: ChatClient.Outcome, expected: String) -> (text: String, tokenEvents: Int, problem: String?) {
        guard outcome.status == 200 else {
            return ("", 0, "status \(outcome.status): \(String(decoding: outcome.body.prefix(300), as: UTF8.self))")
        }
        var decoder = SSEDecoder()
        guard let events = try? decoder.feed(outcome.body) else { return ("", 0, "the stream is not valid SSE") }
        if decoder.finish() { return ("", 0, "the stream ended inside an event (\(events.count) events, last \(events.last?.type ?? "none"))") }
        guard outcome.ended else { return ("", 0, "the connection closed before the response ended (\(events.count) events)") }
        var text = ""
        var tokens = 0
        for event in events where event.type == JobEventType.token {
            guard case .string(let piece)? = (try? JSONValue.parse(Array(event.data.utf8)))?.objectValue?["text"] else {
                return ("", tokens, "a token event without text")
            }
            text += piece
            tokens += 1
        }
        guard let last = events.last, last.type == JobEventType.done, events.filter({ $0.type == JobEventType.done }).count == 1 else {
            return (text, tokens, "no single done event at the end (\(events.count) events, \(tokens) token events, last \(events.last?.type ?? "none"))")
        }
        let status = (try? JSONValue.parse(Array(last.data.utf8)))?.objectValue?["status"]?.stringValue
        guard status == "succeeded" else { return (text, tokens, "done says \(status ?? "no status"): \(last.data.prefix(300))") }
        if events.contains(where: { $0.type == JobEventType.reset }) { return (text, tokens, "a reset (a retried attempt)") }
        guard text == expected else { return (text, tokens, "the text differs from the model's (\(tokens) token events, \(text.utf8.count) bytes)") }
        return (text, tokens, nil)
    }

    /// Reads the chat back: one assistant message, complete, with the streamed text.
    static func storedProblem(_ client: HTTPClient, _ base: String, user: User, streamed: String) async throws -> String? {
        guard let chatID = user.chatID else { return "no chat" }
        let chat = try await Client.send(client, .GET, base + "/api/chats/\(chatID)", token: user.bearer)
        guard chat.status == 200, case .array(let messages)? = chat.json["messages"] else { return "GET /api/chats/{id} answered \(chat.status)" }
        let replies = messages.compactMap(\.objectValue).filter { $0["role"] == .string("assistant") }
        guard replies.count == 1, let reply = replies.first else { return "\(replies.count) assistant messages" }
        guard reply["status"] == .string("complete") else { return "the reply is \(reply["status"]?.stringValue ?? "?")" }
        guard reply["content"] == .string(streamed) else { return "the stored text differs from the streamed text" }
        return nil
    }
}

/// CPU time of some processes, from /proc/PID/stat: utime + stime, plus
/// cutime + cstime (children that ended and were waited for).
struct CPUGroup: Sendable {
    var label: String
    var pids: [Int32]
    /// Processes counted with all their descendants.
    var trees: [Int32]

    var describe: String { (self.pids.map { "\($0)" } + self.trees.map { "+\($0)" }).joined(separator: ",") }

    func seconds() -> Double {
        var all = Set(self.pids)
        if !self.trees.isEmpty {
            // Parent of every process now, to find the trees' members.
            var children: [Int32: [Int32]] = [:]
            let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
            for entry in entries {
                guard let pid = Int32(entry), let fields = Self.fields(pid), fields.count > 1, let parent = Int32(fields[1]) else { continue }
                children[parent, default: []].append(pid)
            }
            var pending = self.trees
            while let pid = pending.popLast() {
                guard all.insert(pid).inserted else { continue }
                pending += children[pid] ?? []
            }
        }
        let ticks = all.reduce(0.0) { sum, pid in
            guard let fields = Self.fields(pid), fields.count > 14 else { return sum }
            return sum + fields[11...14].reduce(0.0) { $0 + (Double($1) ?? 0) }
        }
        return ticks / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// The fields of /proc/PID/stat after the command's closing parenthesis
    /// (state is [0], ppid [1], utime [11], stime [12], cutime [13], cstime [14]).
    static func fields(_ pid: Int32) -> [Substring]? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = text.lastIndex(of: ")") else { return nil }
        return text[text.index(after: close)...].split(separator: " ")
    }
}

/// The burst over bare connections (``BareHTTP``): one channel per chat,
/// all started at once on the event loops, no Swift task per stream.
enum ChatClient {
    struct Outcome: Sendable {
        /// Which user sent it.
        var user: Int
        /// Milliseconds from starting the connect to the POST being written.
        var connected: Double?
        /// Milliseconds from the POST written to the first `token` event.
        var firstToken: Double?
        /// Milliseconds from the POST written to the response's end.
        var total: Double = .nan
        var status: UInt = 0
        var body: [UInt8] = []
        /// Whether the response ended (rather than the connection closing).
        var ended = false
    }

    static func burst(_ target: BareHTTP.Target, users: [ChatBurst.User], body: String, timeout: TimeAmount) async throws -> [EventLoopFuture<Outcome>] {
        let loops = Array(MultiThreadedEventLoopGroup.singleton.makeIterator())
        var futures: [EventLoopFuture<Outcome>] = []
        for (index, loop) in loops.enumerated() {
            futures += try await loop.submit {
                stride(from: index, to: users.count, by: loops.count).map { send(target, user: $0, users[$0], body: body, on: loop, timeout: timeout) }
            }.get()
        }
        return futures
    }

    static func send(_ target: BareHTTP.Target, user index: Int, _ user: ChatBurst.User, body: String, on eventLoop: any EventLoop, timeout: TimeAmount)
        -> EventLoopFuture<Outcome>
    {
        let promise = eventLoop.makePromise(of: Outcome.self)
        let started = ContinuousClock.now
        var head = BareHTTP.head(.POST, target, uri: user.path, bearer: user.bearer)
        head.headers.add(name: "Accept", value: "text/event-stream")
        head.headers.add(name: "Content-Type", value: "application/json")
        head.headers.add(name: "Content-Length", value: "\(body.utf8.count)")
        let request = head
        return BareHTTP.exchange(target, on: eventLoop, promise: promise, timeout: timeout, whatTimedOut: "answer still streaming") {
            ChatReader(request: request, body: body, user: index, started: started, promise: promise)
        }
    }
}

/// Writes the POST once connected, notes when the first `token` event
/// arrives and collects the body until the response ends.
private final class ChatReader: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    private static let marker = Array("event: token".utf8)

    private let request: HTTPRequestHead
    private let body: String
    private let started: ContinuousClock.Instant
    private var sent = ContinuousClock.now
    private let promise: EventLoopPromise<ChatClient.Outcome>
    private var outcome: ChatClient.Outcome
    /// Where the search for the first token event goes on from.
    private var scanned = 0
    private var finished = false

    init(request: HTTPRequestHead, body: String, user: Int, started: ContinuousClock.Instant, promise: EventLoopPromise<ChatClient.Outcome>) {
        self.request = request
        self.body = body
        self.started = started
        self.promise = promise
        self.outcome = ChatClient.Outcome(user: user)
    }

    func channelActive(context: ChannelHandlerContext) {
        self.sent = .now
        self.outcome.connected = (self.sent - self.started).milliseconds
        context.write(self.wrapOutboundOut(.head(self.request)), promise: nil)
        context.write(self.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: self.body)))), promise: nil)
        context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.unwrapInboundIn(data) {
        case .head(let head):
            self.outcome.status = head.status.code
        case .body(let buffer):
            self.outcome.body += buffer.readableBytesView
            if self.outcome.firstToken == nil, self.containsTokenEvent() {
                self.outcome.firstToken = (ContinuousClock.now - self.sent).milliseconds
            }
        case .end:
            self.outcome.total = (ContinuousClock.now - self.sent).milliseconds
            self.outcome.ended = true
            self.finish()
            context.close(promise: nil)
        }
    }

    /// An `event: token` line (LF or CRLF) in the body so far.
    private func containsTokenEvent() -> Bool {
        let body = self.outcome.body
        let marker = Self.marker
        var index = self.scanned
        while index + marker.count < body.count {
            if body[index] == marker[0], body[index..<(index + marker.count)].elementsEqual(marker),
                body[index + marker.count] == 0x0A || body[index + marker.count] == 0x0D, index == 0 || body[index - 1] == 0x0A
            {
                return true
            }
            index += 1
        }
        self.scanned = index
        return false
    }

    private func finish() {
        guard !self.finished else { return }
        self.finished = true
        self.promise.succeed(self.outcome)
    }

    func channelInactive(context: ChannelHandlerContext) {
        // Closed before the response ended: what arrived; the check finds it incomplete.
        if self.outcome.total.isNaN { self.outcome.total = (ContinuousClock.now - self.sent).milliseconds }
        self.finish()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if !self.finished {
            self.finished = true
            self.promise.fail(error)
        }
        context.close(promise: nil)
    }
}
