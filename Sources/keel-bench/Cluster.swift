import ArgumentParser
import AsyncHTTPClient
import Crypto
import Foundation
import KeelCore
import KeelModels
import NIOCore
import NIOHTTP1
import Synchronization

/// The client side of `scripts/cluster`: scenarios driven through a load
/// balancer while the script kills and restarts instances. Each phase prints
/// human-readable lines and one `RESULT {json}` line the script tabulates;
/// the exit status is 1 when anything was lost.
struct Cluster: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Cluster scenarios through a load balancer: sessions, jobs and uploads under fire, chats under fire, idle streams, rolling restarts.",
        subcommands: [ClusterSessions.self, ClusterFire.self, ClusterChat.self, ClusterIdle.self, ClusterRolling.self]
    )
}

/// Counts shared by a phase's tasks.
final class Tally: Sendable {
    private let state = Mutex<(requests: Int, retries: Int, failures: [String], instances: [String: Int])>((0, 0, [], [:]))
    private let counters = Mutex<[String: Int]>([:])

    func request(_ instance: String?) {
        self.state.withLock { state in
            state.requests += 1
            if let instance { state.instances[instance, default: 0] += 1 }
        }
    }

    func retry() { self.state.withLock { $0.retries += 1 } }

    /// Adds to a phase's own count (`counts` reads them back).
    func count(_ name: String, _ amount: Int = 1) { self.counters.withLock { $0[name, default: 0] += amount } }

    func fail(_ what: String) {
        self.state.withLock { $0.failures.append(what) }
        print("FAILURE: \(what)")
    }

    var requests: Int { self.state.withLock { $0.requests } }
    var retries: Int { self.state.withLock { $0.retries } }
    var failures: [String] { self.state.withLock { $0.failures } }
    var instances: [String: Int] { self.state.withLock { $0.instances } }
    var counts: [String: Int] { self.counters.withLock { $0 } }
}

/// HTTP through the balancer, retrying what a client is expected to retry:
/// connection errors, and (when `retryGateway`) 502/503/504 from the balancer.
struct Balanced: Sendable {
    let client: HTTPClient
    let base: String
    let tally: Tally

    struct Answer: Sendable {
        var status: Int
        var headers: HTTPHeaders
        var body: ByteBuffer
        var json: [String: JSONValue] { (try? JSONValue.parse(Array(self.body.readableBytesView)))?.objectValue ?? [:] }
        var text: String { String(buffer: self.body) }
    }

    func send(
        _ method: HTTPMethod, _ path: String, token: String? = nil, headers: [(String, String)] = [], json: String? = nil,
        bytes: ByteBuffer? = nil, retryGateway: Bool = true, attempts: Int = 40
    ) async throws -> Answer {
        var lastError: (any Error)?
        for attempt in 0..<attempts {
            if attempt > 0 {
                self.tally.retry()
                try await Task.sleep(for: .milliseconds(min(1000, 100 * attempt)))
            }
            var request = HTTPClientRequest(url: self.base + path)
            request.method = method
            if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
            for (name, value) in headers { request.headers.add(name: name, value: value) }
            if let json {
                request.headers.add(name: "Content-Type", value: "application/json")
                request.body = .bytes(ByteBuffer(string: json))
            } else if let bytes {
                request.body = .bytes(bytes)
            }
            do {
                let response = try await self.client.execute(request, timeout: .seconds(120))
                let body = try await response.body.collect(upTo: 16 << 20)
                let answer = Answer(status: Int(response.status.code), headers: response.headers, body: body)
                self.tally.request(response.headers.first(name: "Keel-Instance"))
                if retryGateway, [502, 503, 504].contains(answer.status), response.headers.first(name: "Keel-Instance") == nil {
                    lastError = KeelError(.storeUnavailable, "\(method) \(path): \(answer.status) from the balancer")
                    continue
                }
                return answer
            } catch {
                lastError = error
            }
        }
        throw lastError ?? KeelError(.internalError, "no attempt made")
    }

    func session() async throws -> String {
        let created = try await self.send(.POST, "/api/session")
        guard created.status == 201, let token = created.json["token"]?.stringValue else {
            throw KeelError(.internalError, "POST /api/session answered \(created.status): \(created.text)")
        }
        return token
    }
}

struct ClusterOptions: ParsableArguments {
    @Option(help: "The balancer's base URL.") var url = "http://127.0.0.1:8080"

    /// Runs a phase with its client, shutting the client down on every path.
    func run(_ body: @Sendable (HTTPClient, Tally, Balanced) async throws -> Void) async throws {
        let (client, tally, http) = self.make()
        do {
            try await body(client, tally, http)
        } catch {
            try? await client.shutdown()
            throw error
        }
    }

    func make() -> (HTTPClient, Tally, Balanced) {
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = 64
        configuration.timeout.connect = .seconds(5)
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        let tally = Tally()
        return (client, tally, Balanced(client: client, base: self.url, tally: tally))
    }
}

/// Prints the phase's result line and fails the process when something was lost.
func finish(phase: String, tally: Tally, extra: [String: String] = [:], client: HTTPClient) async throws {
    let failures = tally.failures
    var fields = [
        "\"phase\":\"\(phase)\"", "\"requests\":\(tally.requests)", "\"retries\":\(tally.retries)", "\"lost\":\(failures.count)",
        "\"instances\":\(tally.instances.count)",
    ]
    for (key, value) in extra.sorted(by: { $0.key < $1.key }) { fields.append("\"\(key)\":\(value)") }
    print("instances: " + tally.instances.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "))
    print("RESULT {" + fields.joined(separator: ",") + "}")
    try? await client.shutdown()
    if !failures.isEmpty { throw ExitCode(1) }
}

// MARK: 1. Sessions

struct ClusterSessions: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "sessions", abstract: "Reads and patches of one session land on every instance and see each other's writes.")
    @OptionGroup var options: ClusterOptions
    @Option(help: "Patch-then-read rounds.") var rounds = 150

    func run() async throws {
        try await self.options.run { client, tally, http in
            let token = try await http.session()
            for round in 1...self.rounds {
                let patch = try await http.send(.PATCH, "/api/session", token: token, headers: [("Content-Type", "application/merge-patch+json")], bytes: ByteBuffer(string: #"{"round":\#(round)}"#))
                if patch.status != 200 { tally.fail("PATCH round \(round): \(patch.status) \(patch.text)") }
                let read = try await http.send(.GET, "/api/session", token: token)
                if read.status != 200 || read.json["data"]?.objectValue?["round"] != .int(Int64(round)) {
                    tally.fail("GET after round \(round) on \(read.headers.first(name: "Keel-Instance") ?? "?"): \(read.status) \(read.text.prefix(200))")
                }
            }
            print("sessions: \(self.rounds) patch+read rounds")
            try await finish(phase: "sessions", tally: tally, client: client)
        }
    }
}

// MARK: 2 and 3. Jobs and uploads under fire

struct ClusterFire: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "fire", abstract: "Jobs (with Idempotency-Keys, streamed) and tus uploads while instances are killed.")
    @OptionGroup var options: ClusterOptions
    @Option(help: "demo.generate jobs.") var jobs = 24
    @Option(help: "Token events per job.") var tokens = 40
    @Option(help: "Milliseconds between a job's tokens.") var delayMs = 100
    @Option(help: "Concurrent uploads.") var uploads = 2
    @Option(help: "Size of each upload in MiB.") var uploadMib = 160
    @Option(help: "Chunk size in MiB.") var chunkMib = 5

    func run() async throws {
        try await self.options.run { client, tally, http in
            let token = try await http.session()
            let run = Identifiers.random(byteCount: 6)
            let (jobs, tokens, delay) = (self.jobs, self.tokens, self.delayMs)
            let (uploads, uploadBytes, chunk) = (self.uploads, self.uploadMib * 1_048_576, self.chunkMib * 1_048_576)
            let started = ContinuousClock.now
            let streamed = try await withThrowingTaskGroup(of: Bool.self) { group in
                for index in 0..<jobs {
                    group.addTask {
                        let key = "cluster-\(run)-\(index)"
                        // Every kill of the instance running a job costs it an attempt (a crashing job must not loop forever):
                        // under a chaos loop, allow plenty.
                        let input = #"{"type":"demo.generate","input":{"tokens":\#(tokens),"delay_ms":\#(delay)},"max_attempts":20}"#
                        let created = try await http.send(.POST, "/api/jobs", token: token, headers: [("Idempotency-Key", key)], json: input)
                        guard [200, 202].contains(created.status), let id = created.json["id"]?.stringValue else {
                            tally.fail("job \(key): create answered \(created.status) \(created.text)")
                            return false
                        }
                        return await Self.follow(http, token: token, id: id, tokens: tokens)
                    }
                }
                for index in 0..<uploads {
                    group.addTask {
                        await Self.upload(http, token: token, index: index, size: uploadBytes, chunk: chunk)
                        return false
                    }
                }
                return try await group.reduce(0) { $0 + ($1 ? 1 : 0) }
            }
            // Exactly one job per key: list the session's jobs.
            let listed = try await http.send(.GET, "/api/jobs?limit=100", token: token)
            let all = listed.json["jobs"].flatMap { value -> [JSONValue]? in if case .array(let items) = value { return items } else { return nil } } ?? []
            if all.count != jobs { tally.fail("the session has \(all.count) jobs, expected \(jobs) (duplicates or losses)") }
            let succeeded = all.filter { $0.objectValue?["status"] == .string("succeeded") }.count
            if succeeded != jobs { tally.fail("\(succeeded) of \(jobs) jobs succeeded") }
            let seconds = (ContinuousClock.now - started).timeInterval
            print("fire: \(jobs) jobs (\(streamed) streams complete), \(uploads) uploads of \(self.uploadMib) MiB, \(String(format: "%.1f", seconds)) s")
            try await finish(
                phase: "fire", tally: tally,
                extra: ["jobs": "\(jobs)", "jobs_succeeded": "\(succeeded)", "uploads": "\(uploads)", "bytes": "\(uploads * uploadBytes)"], client: client)
        }
    }

    /// Streams a job's events to the end, resuming with Last-Event-ID after every break: ids must run 1, 2, 3… with no gap or
    /// repeat, and exactly one `done` (succeeded) must end it. Returns whether all held.
    static func follow(_ http: Balanced, token: String, id: String, tokens: Int) async -> Bool {
        var last: Int64 = 0
        var dones = 0
        var breaks = 0
        let deadline = ContinuousClock.now + .seconds(600)
        while dones == 0 && ContinuousClock.now < deadline {
            var request = HTTPClientRequest(url: http.base + "/api/jobs/\(id)/events")
            request.headers.add(name: "Authorization", value: "Bearer \(token)")
            if last > 0 { request.headers.add(name: "Last-Event-ID", value: String(last)) }
            do {
                let response = try await http.client.execute(request, timeout: .seconds(600))
                http.tally.request(response.headers.first(name: "Keel-Instance"))
                guard response.status == .ok else {
                    _ = try? await response.body.collect(upTo: 1 << 20)
                    if [502, 503, 504].contains(Int(response.status.code)) {
                        http.tally.retry()
                        try await Task.sleep(for: .milliseconds(200))
                        continue
                    }
                    http.tally.fail("job \(id): stream answered \(response.status.code)")
                    return false
                }
                var decoder = SSEDecoder()
                for try await buffer in response.body {
                    for event in try decoder.feed(buffer.readableBytesView) {
                        guard let current = event.id.flatMap({ Int64($0) }) else {
                            if dones > 0 { http.tally.fail("job \(id): data after done") }
                            continue
                        }
                        guard current == last + 1 else {
                            http.tally.fail("job \(id): event \(current) after \(last) (gap or repeat)")
                            return false
                        }
                        last = current
                        if event.type == "done" {
                            dones += 1
                            if !event.data.contains(#""status":"succeeded""#) { http.tally.fail("job \(id): done with \(event.data.prefix(200))") }
                        }
                    }
                }
            } catch {
                // A killed instance cut the stream: resume elsewhere.
            }
            if dones == 0 {
                breaks += 1
                http.tally.retry()
                try? await Task.sleep(for: .milliseconds(200))
            }
        }
        guard dones == 1 else {
            http.tally.fail("job \(id): \(dones) done events after \(breaks) breaks")
            return false
        }
        // The stream ends after done: a resume after it answers nothing more.
        return true
    }

    /// One resumable upload through the balancer: HEAD for the offset after any failure, PATCH chunks, verify the sha256.
    static func upload(_ http: Balanced, token: String, index: Int, size: Int, chunk: Int) async {
        var generator = SystemRandomNumberGenerator()
        var content = [UInt8](repeating: 0, count: size)
        content.withUnsafeMutableBytes { buffer in
            for word in buffer.bindMemory(to: UInt64.self).indices { buffer.bindMemory(to: UInt64.self)[word] = generator.next() }
        }
        let expected = SHA256.hash(data: content).map { String(format: "%02x", $0) }.joined()
        do {
            let tus = [("Tus-Resumable", "1.0.0")]
            let created = try await http.send(.POST, "/api/uploads", token: token, headers: tus + [("Upload-Length", String(size))])
            guard created.status == 201, let location = created.headers.first(name: "Location") else {
                http.tally.fail("upload \(index): create answered \(created.status) \(created.text)")
                return
            }
            var offset = 0
            var failures = 0
            while offset < size {
                let end = min(offset + chunk, size)
                var patched: Balanced.Answer?
                do {
                    patched = try await http.send(
                        .PATCH, location, token: token,
                        headers: tus + [("Upload-Offset", String(offset)), ("Content-Type", "application/offset+octet-stream")],
                        bytes: ByteBuffer(bytes: content[offset..<end]), retryGateway: false, attempts: 1)
                } catch {}
                if patched?.status == 204, let next = patched?.headers.first(name: "Upload-Offset").flatMap(Int.init) {
                    offset = next
                    continue
                }
                failures += 1
                http.tally.retry()
                if failures > 200 {
                    http.tally.fail("upload \(index): gave up at \(offset) (last \(patched?.status ?? 0) \(patched?.text.prefix(160) ?? ""))")
                    return
                }
                try await Task.sleep(for: .milliseconds(patched?.status == 423 ? 500 : 200))
                let head = try await http.send(.HEAD, location, token: token, headers: tus)
                if let current = head.headers.first(name: "Upload-Offset").flatMap(Int.init) { offset = current }
            }
            let info = try await http.send(.GET, location + "/info", token: token)
            if info.json["sha256"]?.stringValue != expected {
                http.tally.fail("upload \(index): stored sha256 \(info.json["sha256"]?.stringValue ?? "none") != \(expected)")
            } else {
                print("upload \(index): \(size) bytes, sha256 verified after \(failures) retries")
            }
        } catch {
            http.tally.fail("upload \(index): \(error)")
        }
    }
}

// MARK: 4. Idle streams

struct ClusterIdle: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "idle", abstract: "A stream idle for longer than the balancer's read timeout stays open thanks to heartbeats.")
    @OptionGroup var options: ClusterOptions
    @Option(help: "Seconds the stream must stay idle (three times the balancer's read timeout).") var seconds = 30

    func run() async throws {
        try await self.options.run { client, tally, http in
            let token = try await http.session()
            let created = try await http.send(
                .POST, "/api/jobs", token: token, headers: [("Idempotency-Key", "idle-\(Identifiers.random(byteCount: 6))")],
                json: #"{"type":"demo.generate","input":{"tokens":1,"delay_ms":\#(self.seconds * 1000 + 2000)}}"#)
            guard let id = created.json["id"]?.stringValue else { throw ValidationError("could not create a job: \(created.text)") }
            var request = HTTPClientRequest(url: self.options.url + "/api/jobs/\(id)/events")
            request.headers.add(name: "Authorization", value: "Bearer \(token)")
            let opened = ContinuousClock.now
            var heartbeats = 0
            var sawToken = false
            var sawDone = false
            do {
                let response = try await client.execute(request, timeout: .seconds(Int64(self.seconds) * 3))
                tally.request(response.headers.first(name: "Keel-Instance"))
                for try await buffer in response.body {
                    let text = String(buffer: buffer)
                    heartbeats += text.components(separatedBy: ": keep-alive").count - 1
                    if text.contains("event: token") { sawToken = true }
                    if text.contains("event: done") { sawDone = true }
                }
            } catch {
                tally.fail("the idle stream broke after \(String(format: "%.1f", (ContinuousClock.now - opened).timeInterval)) s: \(error)")
            }
            let held = (ContinuousClock.now - opened).timeInterval
            if !(sawToken && sawDone) {
                tally.fail("the idle stream ended after \(String(format: "%.1f", held)) s without the job's output (cut by the balancer?)")
            } else if held < Double(self.seconds) {
                tally.fail("the job finished after only \(String(format: "%.1f", held)) s")
            }
            print("idle: stream open \(String(format: "%.1f", held)) s with \(heartbeats) heartbeats, then the token and done")
            try await finish(phase: "idle", tally: tally, extra: ["held_seconds": String(format: "%.1f", held), "heartbeats": "\(heartbeats)"], client: client)
        }
    }
}

// MARK: 5. Rolling restart

struct ClusterRolling: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rolling", abstract: "Steady load while the script restarts instances one by one: no request may fail (connection errors are retried).")
    @OptionGroup var options: ClusterOptions
    @Option(help: "Seconds of load.") var seconds = 30
    @Option(help: "Concurrent clients.") var clients = 6

    func run() async throws {
        try await self.options.run { client, tally, http in
            let deadline = ContinuousClock.now + .seconds(self.seconds)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for worker in 0..<self.clients {
                    group.addTask {
                        let token = try await http.session()
                        var round = 0
                        while ContinuousClock.now < deadline {
                            round += 1
                            // Only connection errors are retried here: any HTTP error, 502/503 from the balancer included, is a failure.
                            let patch = try await http.send(
                                .PATCH, "/api/session", token: token, headers: [("Content-Type", "application/merge-patch+json")],
                                bytes: ByteBuffer(string: #"{"n":\#(round)}"#), retryGateway: false)
                            if patch.status != 200 { tally.fail("client \(worker): PATCH answered \(patch.status) \(patch.text.prefix(160))") }
                            let read = try await http.send(.GET, "/api/session", token: token, retryGateway: false)
                            if read.status != 200 || read.json["data"]?.objectValue?["n"] != .int(Int64(round)) {
                                tally.fail("client \(worker): GET answered \(read.status) \(read.text.prefix(160))")
                            }
                            if round % 5 == 0 {
                                let job = try await http.send(
                                    .POST, "/api/jobs", token: token, headers: [("Idempotency-Key", "rolling-\(worker)-\(round)")],
                                    json: #"{"type":"demo.generate","input":{"tokens":0}}"#, retryGateway: false)
                                if ![200, 202].contains(job.status) { tally.fail("client \(worker): job create answered \(job.status) \(job.text.prefix(160))") }
                            }
                            try await Task.sleep(for: .milliseconds(20))
                        }
                    }
                }
                try await group.waitForAll()
            }
            print("rolling: \(tally.requests) requests, \(tally.retries) retried after connection errors")
            try await finish(phase: "rolling", tally: tally, client: client)
        }
    }
}
