import ArgumentParser
import AsyncHTTPClient
import Foundation
import KeelCore
import KeelModels
import NIOCore
import NIOHTTP1
import Synchronization

/// Load generators for `bench/`: they drive a running Keel over HTTP and
/// print what they measured. Timing is measured here, on the client side,
/// never in tests.
@main
struct KeelBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keel-bench",
        abstract: "Load generators for Keel's benchmarks (see bench/).",
        subcommands: [JobThroughput.self, Pickup.self, Streams.self, IdleStreams.self, Cluster.self, FloorServer.self, RouterOverhead.self, ChatBurst.self]
    )
}

struct ServerOptions: ParsableArguments {
    @Option(help: "Base URL of the server (or balancer) to drive.") var url = "http://127.0.0.1:8080"
}

/// One HTTP client for the whole run, with room for many connections.
enum Client {
    static func make(connections: Int) -> HTTPClient {
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = connections
        configuration.connectionPool.idleTimeout = .seconds(120)
        configuration.timeout.connect = .seconds(30)
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }

    /// The process exits right after a run; the shutdown need not be awaited.
    static func shutdown(_ client: HTTPClient) {
        Task { try? await client.shutdown() }
    }

    static func send(
        _ client: HTTPClient, _ method: HTTPMethod, _ url: String, token: String? = nil, body: String? = nil
    ) async throws -> (status: UInt, json: [String: JSONValue]) {
        var request = HTTPClientRequest(url: url)
        request.method = method
        if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(string: body))
        }
        let response = try await client.execute(request, timeout: .seconds(60))
        let buffer = try await response.body.collect(upTo: 8 << 20)
        let json = (try? JSONValue.parse(buffer.readableBytesView))?.objectValue ?? [:]
        return (response.status.code, json)
    }

    static func session(_ client: HTTPClient, _ base: String) async throws -> String {
        let created = try await Self.send(client, .POST, base + "/api/session")
        guard created.status == 201, case .string(let token)? = created.json["token"] else {
            throw ValidationError("could not create a session at \(base) (status \(created.status))")
        }
        return token
    }

    /// The body of `POST /api/jobs` for a `demo.generate` job.
    static func jobBody(input: String) -> String { #"{"type":"demo.generate","input":\#(input)}"# }

    static func createJob(_ client: HTTPClient, _ base: String, token: String, input: String) async throws -> String {
        let created = try await Self.send(client, .POST, base + "/api/jobs", token: token, body: Self.jobBody(input: input))
        guard created.status == 202, case .string(let id)? = created.json["id"] else {
            throw ValidationError("job creation answered \(created.status): \(created.json)")
        }
        return id
    }
}

/// Percentiles of a sample, in milliseconds.
struct Summary: CustomStringConvertible {
    var values: [Double]

    func percentile(_ p: Double) -> Double {
        guard !self.values.isEmpty else { return .nan }
        let sorted = self.values.sorted()
        let rank = Int((p / 100 * Double(sorted.count - 1)).rounded())
        return sorted[min(max(rank, 0), sorted.count - 1)]
    }

    var mean: Double { self.values.isEmpty ? .nan : self.values.reduce(0, +) / Double(self.values.count) }

    var description: String {
        String(
            format: "n=%d p50=%.2fms p90=%.2fms p99=%.2fms max=%.2fms mean=%.2fms", self.values.count, self.percentile(50), self.percentile(90),
            self.percentile(99), self.values.max() ?? .nan, self.mean)
    }
}

extension Duration {
    var milliseconds: Double { Double(self.components.seconds) * 1000 + Double(self.components.attoseconds) / 1e15 }
}

/// Jobs created over HTTP by concurrent clients and run by the server's workers.
struct JobThroughput: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "jobs", abstract: "End-to-end throughput of no-op jobs.")
    @OptionGroup var server: ServerOptions
    @Option(help: "Jobs to create.") var jobs = 5000
    @Option(help: "Concurrent creating clients.") var concurrency = 32
    @Option(help: "Where to check completion, if not --url (a server sharing the store).") var statusURL: String?
    @Flag(help: "Only create the jobs and report the creation rate (for a server without workers).") var enqueueOnly = false
    @Option(help: "HTTP client creating the jobs: nio (bare keep-alive SwiftNIO connections) or async-http-client (how the earlier figures were measured).")
    var client: ClientKind = .nio

    func run() async throws {
        let client = Client.make(connections: self.concurrency + 4)
        defer { Client.shutdown(client) }
        let base = self.server.url
        let token = try await Client.session(client, base)
        let next = SharedCount()
        let total = self.jobs
        let start = ContinuousClock.now
        let input = #"{"tokens":0,"delay_ms":0}"#
        let latencies: [Double]
        switch self.client {
        case .nio:
            latencies = try await JobCreator.run(
                try BareHTTP.Target(base), bearer: token, body: Client.jobBody(input: input), total: total, connections: self.concurrency)
        case .asyncHTTPClient:
            latencies = try await withThrowingTaskGroup(of: [Double].self) { group in
                for _ in 0..<self.concurrency {
                    group.addTask {
                        var latencies: [Double] = []
                        while next.increment() <= total {
                            let sent = ContinuousClock.now
                            _ = try await Client.createJob(client, base, token: token, input: input)
                            latencies.append((ContinuousClock.now - sent).milliseconds)
                        }
                        return latencies
                    }
                }
                return try await group.reduce(into: []) { $0 += $1 }
            }
        }
        let enqueued = ContinuousClock.now - start
        guard latencies.count == total else { throw ValidationError("\(latencies.count) of \(total) jobs were created") }
        if self.enqueueOnly {
            print(String(format: "client=\(self.client.rawValue) jobs=%d concurrency=%d enqueue=%.0f/s (%.2fs)", total, self.concurrency,
                         Double(total) / (enqueued.milliseconds / 1000), enqueued.milliseconds / 1000))
            print("create latency: \(Summary(values: latencies))")
            return
        }
        let statusBase = self.statusURL ?? base
        // Done when nothing is queued or running.
        while true {
            let queued = try await Client.send(client, .GET, statusBase + "/api/jobs?status=queued&limit=1", token: token)
            let running = try await Client.send(client, .GET, statusBase + "/api/jobs?status=running&limit=1", token: token)
            if queued.json["jobs"] == .array([]) && running.json["jobs"] == .array([]) { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        let finished = ContinuousClock.now - start
        let failed = try await Client.send(client, .GET, statusBase + "/api/jobs?status=failed&limit=1", token: token)
        guard failed.json["jobs"] == .array([]) else { throw ValidationError("some jobs failed") }
        print(String(format: "client=\(self.client.rawValue) jobs=%d concurrency=%d enqueue=%.0f/s end-to-end=%.0f jobs/s (%.2fs)", total, self.concurrency,
                     Double(total) / (enqueued.milliseconds / 1000), Double(total) / (finished.milliseconds / 1000), finished.milliseconds / 1000))
        print("create latency: \(Summary(values: latencies))")
    }
}

/// Time from a job's creation to a worker starting it, one job at a time.
struct Pickup: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Pickup latency: created_at to started_at of jobs created one at a time against idle workers (store timestamps, 1 ms resolution).")
    @OptionGroup var server: ServerOptions
    @Option(help: "Jobs to time.") var samples = 300
    @Option(help: "Pause between jobs, in milliseconds (workers go idle).") var pauseMs = 30

    func run() async throws {
        let client = Client.make(connections: 4)
        defer { Client.shutdown(client) }
        let base = self.server.url
        let token = try await Client.session(client, base)
        var pickups: [Double] = []
        for _ in 0..<self.samples {
            try await Task.sleep(for: .milliseconds(self.pauseMs))
            let id = try await Client.createJob(client, base, token: token, input: #"{"tokens":0,"delay_ms":0}"#)
            var job: [String: JSONValue] = [:]
            for _ in 0..<2000 {
                job = try await Client.send(client, .GET, base + "/api/jobs/\(id)", token: token).json
                if job["status"] == .string("succeeded") { break }
                try await Task.sleep(for: .milliseconds(2))
            }
            guard case .string(let created)? = job["created_at"], case .string(let started)? = job["started_at"],
                let createdAt = Self.parse(created), let startedAt = Self.parse(started)
            else { throw ValidationError("job \(id) did not run: \(job)") }
            pickups.append((startedAt - createdAt) * 1000)
        }
        print("pickup: \(Summary(values: pickups))")
        // Both timestamps are whole milliseconds, so a pickup read as d ms
        // took between d - 1 and d + 1 ms: when more than half read 1 ms or
        // less, the true median is under 2 ms whatever the rounding hid.
        // (Whole milliseconds, give or take the float error of the dates.)
        let withinOne = pickups.filter { $0 < 1.5 }.count
        print(String(format: "pickup read as 1 ms or less: %d of %d (%.1f %%; each took under 2 ms)", withinOne, pickups.count,
                     100 * Double(withinOne) / Double(max(pickups.count, 1))))
    }

    static func parse(_ text: String) -> Double? {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.date(from: text)?.timeIntervalSince1970
    }
}

/// Many clients streaming jobs' events at once.
struct Streams: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Concurrent SSE clients: time to first event, and completeness.")
    @OptionGroup var server: ServerOptions
    @Option(help: "Concurrent streaming clients.") var clients = 1000
    @Option(help: "Jobs they follow (clients are spread evenly).") var jobs = 10
    @Option(help: "Token events per job.") var events = 50
    @Option(help: "Milliseconds between a job's events.") var intervalMs = 20
    @Option(help: "Stream this URL instead of Keel jobs (a peer server sending the same events, then done).") var rawURL: String?
    @Option(help: "HTTP client: nio (a bare SwiftNIO channel per stream) or async-http-client (how the earlier figures were measured).")
    var client: ClientKind = .nio

    func run() async throws {
        let client = Client.make(connections: self.clients + 8)
        defer { Client.shutdown(client) }
        let base = self.server.url
        var token = ""
        var urls: [String] = []
        if let rawURL = self.rawURL {
            urls = [rawURL]
        } else {
            token = try await Client.session(client, base)
            for _ in 0..<self.jobs {
                let id = try await Client.createJob(client, base, token: token, input: #"{"tokens":\#(self.events),"delay_ms":\#(self.intervalMs)}"#)
                urls.append(base + "/api/jobs/\(id)/events")
            }
        }
        let streamURLs = urls
        let bearer = token
        let expectedTokens = self.events
        // Resolved before the clock starts.
        let targets = self.client == .nio ? try streamURLs.map(BareHTTP.Target.init) : []
        let start = ContinuousClock.now
        var results: [(firstEvent: Double, complete: Bool)] = []
        switch self.client {
        case .nio:
            // All streams started from here, without a task each.
            for outcome in try await StreamClient.burst(targets, count: self.clients, bearer: bearer.isEmpty ? nil : bearer) {
                let outcome = try await outcome.get()
                results.append((outcome.firstEvent ?? .infinity, outcome.status == 200 && Self.complete(outcome.body, tokens: expectedTokens)))
            }
        case .asyncHTTPClient:
            results = try await withThrowingTaskGroup(of: (firstEvent: Double, complete: Bool).self) { group in
                for index in 0..<self.clients {
                    group.addTask {
                        var request = HTTPClientRequest(url: streamURLs[index % streamURLs.count])
                        if !bearer.isEmpty { request.headers.add(name: "Authorization", value: "Bearer \(bearer)") }
                        let connected = ContinuousClock.now
                        let response = try await client.execute(request, timeout: .seconds(120))
                        var first: Double?
                        var decoder = SSEDecoder()
                        var events: [SSEEvent] = []
                        for try await buffer in response.body {
                            events += try decoder.feed(buffer.readableBytesView)
                            if first == nil, !events.isEmpty { first = (ContinuousClock.now - connected).milliseconds }
                        }
                        return (first ?? .infinity, Self.complete(events, tokens: expectedTokens))
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
        }
        let elapsed = ContinuousClock.now - start
        let incomplete = results.filter { !$0.complete }.count
        print("client=\(self.client.rawValue) " + String(format: "clients=%d jobs=%d events/job=%d interval=%dms elapsed=%.2fs incomplete=%d",
                     self.clients, self.jobs, self.events, self.intervalMs, elapsed.milliseconds / 1000, incomplete))
        print("time to first event: \(Summary(values: results.map(\.firstEvent)))")
        if incomplete > 0 { throw ExitCode(1) }
    }

    /// ``complete(_:tokens:)`` of a whole stream's text.
    static func complete(_ text: String, tokens: Int) -> Bool {
        var decoder = SSEDecoder()
        guard let events = try? decoder.feed(Array(text.utf8)) else { return false }
        return self.complete(events, tokens: tokens)
    }

    /// Ids 1, 2, 3… without gaps, every token once, one done at the end.
    static func complete(_ events: [SSEEvent], tokens: Int) -> Bool {
        var expected: Int64 = 1
        var tokenCount = 0
        var done = 0
        for event in events {
            guard event.id.flatMap({ Int64($0) }) == expected else { return false }
            expected += 1
            if event.type == "token" { tokenCount += 1 }
            if event.type == "done" { done += 1 }
        }
        return tokenCount == tokens && done == 1 && events.last?.type == "done"
    }
}

enum ClientKind: String, ExpressibleByArgument, Sendable {
    case nio
    case asyncHTTPClient = "async-http-client"
}

/// Many idle streams held open (the script measures the server's memory).
struct IdleStreams: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "idle", abstract: "Hold many idle SSE streams open and count their heartbeats.")
    @OptionGroup var server: ServerOptions
    @Option(help: "Streams to hold.") var clients = 10_000
    @Option(help: "Seconds to hold them after all are open.") var holdSeconds = 40
    @Option(help: "Connections opened at once while ramping up.") var rampBatch = 500

    func run() async throws {
        let client = Client.make(connections: self.clients + 8)
        defer { Client.shutdown(client) }
        let base = self.server.url
        let token = try await Client.session(client, base)
        // A job that stays quiet for minutes: one token after 60 s, another after 120 s.
        let id = try await Client.createJob(client, base, token: token, input: #"{"tokens":3,"delay_ms":60000}"#)
        let opened = SharedCount()
        let heartbeats = SharedCount()
        let failures = SharedCount()
        let hold = Duration.seconds(self.holdSeconds)
        let total = self.clients
        let started = ContinuousClock.now
        await withTaskGroup(of: Void.self) { group in
            for index in 0..<total {
                if index > 0 && index % self.rampBatch == 0 {
                    // Let a batch connect before starting the next.
                    while opened.value + failures.value < index {
                        try? await Task.sleep(for: .milliseconds(20))
                    }
                }
                group.addTask {
                    do {
                        var request = HTTPClientRequest(url: base + "/api/jobs/\(id)/events")
                        request.headers.add(name: "Authorization", value: "Bearer \(token)")
                        let response = try await client.execute(request, timeout: .seconds(600))
                        guard response.status == .ok else {
                            failures.increment()
                            return
                        }
                        opened.increment()
                        var deadline: ContinuousClock.Instant?
                        for try await buffer in response.body {
                            let text = String(buffer: buffer)
                            heartbeats.add(text.components(separatedBy: ": keep-alive").count - 1)
                            if deadline == nil, opened.value == total { deadline = .now + hold }
                            if let deadline, ContinuousClock.now >= deadline { break }
                        }
                    } catch {
                        failures.increment()
                    }
                }
            }
            let rampedUp = ContinuousClock.now - started
            print(String(format: "streams requested=%d; ramp-up finished after %.1fs", total, rampedUp.milliseconds / 1000))
            // Report when all are open, then hold.
            while opened.value + failures.value < total {
                try? await Task.sleep(for: .milliseconds(100))
            }
            print("streams open=\(opened.value) failed=\(failures.value); holding \(self.holdSeconds)s")
            FileHandle.standardOutput.write(Data("READY\n".utf8))
            try? await Task.sleep(for: hold)
            print("heartbeats received=\(heartbeats.value) (\(String(format: "%.2f", Double(heartbeats.value) / Double(max(1, opened.value)))) per stream)")
            group.cancelAll()
        }
    }
}

/// A counter shared by concurrent client tasks.
final class SharedCount: Sendable {
    private let count = Atomic<Int>(0)

    /// Adds one and returns the new value.
    @discardableResult
    func increment() -> Int { self.count.wrappingAdd(1, ordering: .relaxed).newValue }

    func add(_ amount: Int) { self.count.wrappingAdd(amount, ordering: .relaxed) }

    var value: Int { self.count.load(ordering: .relaxed) }
}
