import Foundation
import KeelCore
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Real `keel serve` processes sharing one store run, poll and stream jobs
/// for each other, and finish the jobs of a process killed mid-run.
@Suite("Jobs across processes", .timeLimit(.minutes(5)))
struct MultiProcessJobTests {
    /// Fast chores and heartbeats. Leases stay at their default (30 s) unless a test
    /// needs one to expire: a short lease is lost to any stall of the machine longer than
    /// two thirds of it, and a job that loses three leases fails.
    static let fast = ["--janitor-interval", "300ms", "--sse-heartbeat", "500ms", "--job-retry-backoff", "100ms"]

    /// What `processes` logged at warning level or above, for a failure's message.
    static func trouble(_ processes: KeelProcess...) -> String {
        processes.map { process in
            let lines = process.log.split(separator: "\n").filter { $0.contains(" warning ") || $0.contains(" error ") || $0.contains(" critical ") }
            return "proc-\(process.port): " + (lines.isEmpty ? "no warnings" : lines.joined(separator: "\n"))
        }.joined(separator: "\n")
    }

    /// Two `keel serve` processes sharing a fresh store of `driver`.
    static func pair(_ driver: Driver, a: [String], b: [String]) async throws -> (StoreFixture, KeelProcess, KeelProcess) {
        let fixture = try await StoreFixture.make(driver)
        let first = try await KeelProcess.serve(store: fixture.location, arguments: a)
        do {
            return (fixture, first, try await KeelProcess.serve(store: fixture.location, arguments: b))
        } catch {
            first.signal(SIGKILL)
            throw error
        }
    }

    static func session(on server: KeelProcess) async throws -> String {
        try #require(try await HTTP.send(.POST, server.baseURL + "/api/session").json["token"]?.stringValue)
    }

    static func createJob(_ server: String, token: String, input: String) async throws -> String {
        let created = try await HTTP.send(.POST, server + "/api/jobs", token: token, body: #"{"type":"demo.generate","input":\#(input)}"#)
        #expect(created.status == 202, "\(created.body)")
        return try #require(created.json["id"]?.stringValue)
    }

    static func job(_ server: String, _ id: String, token: String) async throws -> [String: JSONValue] {
        try await HTTP.send(.GET, server + "/api/jobs/\(id)", token: token).json
    }

    @Test("the process running a job is SIGKILLed: the job succeeds on the other, whose stream shows a reset, the full output and one done", arguments: Driver.available)
    func killedWorker(driver: Driver) async throws {
        // The victim's lease must expire for the job to be rescued: 4 s, so it is rescued
        // well within the stream's patience, yet the survivor's lease outlives a 2.6 s stall.
        let leases = Self.fast + ["--job-lease-duration", "4s", "--workers", "1"]
        let (_, a, b) = try await Self.pair(driver, a: leases, b: leases)
        defer {
            a.signal(SIGKILL)
            b.signal(SIGKILL)
        }
        let token = try await Self.session(on: a)
        // 40 tokens 400 ms apart: 16 s per attempt, long enough that a loaded CI machine
        // (slow polls, slow process start) still kills the worker mid-run.
        let id = try await Self.createJob(a.baseURL, token: token, input: #"{"tokens":40,"delay_ms":400}"#)

        // Polled on B: who runs it?
        var worker = ""
        try await waitFor("the job to start") {
            let job = try await Self.job(b.baseURL, id, token: token)
            try #require(job["status"] != .string("succeeded"), "the job finished before the test could kill its worker")
            worker = job["worker"]?.stringValue ?? ""
            return !worker.isEmpty
        }
        let (victim, survivor) = worker.hasPrefix("proc-\(a.port)/") ? (a, b) : (b, a)

        let streaming = Task {
            try await SSE.read(survivor.baseURL + "/api/jobs/\(id)/events", token: token, timeout: .seconds(90))
        }
        try await waitFor("some output") {
            (try await Self.job(survivor.baseURL, id, token: token)["last_event_id"]).flatMap { if case .int(let n) = $0 { n } else { nil } } ?? 0 >= 8
        }
        let before = try await Self.job(survivor.baseURL, id, token: token)
        try #require(before["status"] == .string("running"), "the job must still be running when its worker is killed: \(before)")
        victim.signal(SIGKILL)
        #expect(await victim.waitForExit() != 0)

        let transcript = try await streaming.value
        #expect(transcript.status == 200)
        #expect(transcript.endedByServer)
        #expect(transcript.problems().isEmpty, "\(transcript.problems())")
        #expect(transcript.events.contains { $0.type == "reset" })
        #expect(transcript.finalOutput == (0..<40).map { "t\($0) " }.joined(), "\(Self.trouble(survivor))")
        let final = try await Self.job(survivor.baseURL, id, token: token)
        #expect(final["status"] == .string("succeeded"), "\(final)")
        #expect(final["attempts"] == .int(2), "\(final)\n\(Self.trouble(survivor))")
        #expect(await survivor.stop() == 0)
    }

    @Test("a job created on A is polled and streamed on B; a stream cut mid-way resumes on the other process without gaps or repeats", arguments: Driver.available)
    func resumeElsewhere(driver: Driver) async throws {
        // A's worker and handlers run on the event loops (--executor event-loops).
        let (_, a, b) = try await Self.pair(driver, a: Self.fast + ["--workers", "1", "--executor", "event-loops"], b: Self.fast + ["--workers", "0"])
        defer {
            a.signal(SIGKILL)
            b.signal(SIGKILL)
        }
        let token = try await Self.session(on: b)
        let id = try await Self.createJob(b.baseURL, token: token, input: #"{"tokens":30,"delay_ms":40}"#)
        #expect(try await HTTP.send(.GET, a.baseURL + "/api/jobs/\(id)", token: token).status == 200)

        // Live on B (whose own workers are off: every event comes from A through the store).
        let first = try await SSE.read(b.baseURL + "/api/jobs/\(id)/events", token: token) { ($0.id ?? 0) >= 10 }
        #expect(!first.endedByServer)
        let cut = try #require(first.events.last?.id)
        // Resumed on A from where B's client stopped.
        let rest = try await SSE.read(a.baseURL + "/api/jobs/\(id)/events", token: token, lastEventID: cut)
        #expect(rest.endedByServer)
        var whole = first
        whole.events += rest.events
        #expect(whole.problems().isEmpty, "\(whole.problems())")
        #expect(whole.finalOutput == (0..<30).map { "t\($0) " }.joined())
        #expect(try await Self.job(b.baseURL, id, token: token)["status"] == .string("succeeded"))

        // The JSON form on B agrees with the streams.
        let page = try await HTTP.send(.GET, b.baseURL + "/api/jobs/\(id)/events?format=json&limit=1000", token: token)
        #expect(page.json["events"]?.arrayValue?.compactMap { $0.objectValue?["id"] } == whole.events.map { .int($0.id ?? -1) })
    }

    @Test("a job running on A is cancelled through B: A's worker hears through the store's change feed, long before its next heartbeat", arguments: Driver.available)
    func cancelElsewhere(driver: Driver) async throws {
        // A heartbeats every 20 s; B runs no jobs.
        let (_, a, b) = try await Self.pair(
            driver, a: Self.fast + ["--workers", "1", "--job-lease-duration", "60s"], b: Self.fast + ["--workers", "0"])
        defer {
            a.signal(SIGKILL)
            b.signal(SIGKILL)
        }
        let token = try await Self.session(on: b)
        let id = try await Self.createJob(b.baseURL, token: token, input: #"{"tokens":400,"delay_ms":50}"#)
        try await waitFor("the job to run on A") { try await Self.job(b.baseURL, id, token: token)["status"] == .string("running") }
        let cancelling = try await HTTP.send(.POST, b.baseURL + "/api/jobs/\(id)/cancel", token: token)
        #expect(cancelling.status == 202, "\(cancelling.body)")
        let asked = ContinuousClock.now
        try await waitFor("the job to stop") { try await Self.job(b.baseURL, id, token: token)["status"] == .string("cancelled") }
        #expect(ContinuousClock.now - asked < .seconds(5))
    }

    @Test("SIGTERM closes open streams; the client resumes on the other process and misses nothing", arguments: Driver.available)
    func drainClosesStreams(driver: Driver) async throws {
        let (_, a, b) = try await Self.pair(driver, a: Self.fast + ["--workers", "0", "--drain-delay", "500ms"], b: Self.fast + ["--workers", "1"])
        defer {
            a.signal(SIGKILL)
            b.signal(SIGKILL)
        }
        let token = try await Self.session(on: b)
        // 15 s of output: the job outlives the drain even when a loaded machine is slow to signal.
        let id = try await Self.createJob(b.baseURL, token: token, input: #"{"tokens":30,"delay_ms":500}"#)
        let streaming = Task { try await SSE.read(a.baseURL + "/api/jobs/\(id)/events", token: token) }
        try await waitFor("some output") {
            (try await Self.job(b.baseURL, id, token: token)["last_event_id"]).flatMap { if case .int(let n) = $0 { n } else { nil } } ?? 0 >= 5
        }
        // The stream is open on A before A drains (on a loaded machine the
        // client may not have connected yet, and would find A refusing).
        try await waitFor("the stream to be open on A") {
            let metrics = try await HTTP.send(.GET, a.baseURL + "/metrics", timeout: .seconds(10)).body
            return metrics.split(separator: "\n").contains { $0.hasPrefix("keel_sse_open_streams ") && !$0.hasSuffix(" 0") && !$0.hasSuffix(" 0.0") }
        }
        a.signal(SIGTERM)
        let cut = try await streaming.value
        #expect(cut.endedByServer)
        #expect(
            !cut.events.contains { $0.type == "done" },
            "the job outlives the drain, so the stream must have been cut: \(cut.events.suffix(3))\n\(Self.trouble(a, b))")
        #expect(await a.waitForExit() == 0)
        let last = try #require(cut.events.last?.id)
        let rest = try await SSE.read(b.baseURL + "/api/jobs/\(id)/events", token: token, lastEventID: last)
        var whole = cut
        whole.events += rest.events
        #expect(whole.problems().isEmpty, "\(whole.problems())")
        #expect(whole.finalOutput == (0..<30).map { "t\($0) " }.joined())
    }

    @Test("an idle stream gets heartbeats, and the job's events still arrive from the other process", arguments: Driver.available)
    func heartbeats(driver: Driver) async throws {
        let (_, a, b) = try await Self.pair(driver, a: Self.fast + ["--workers", "1"], b: Self.fast + ["--workers", "0"])
        defer {
            a.signal(SIGKILL)
            b.signal(SIGKILL)
        }
        let token = try await Self.session(on: a)
        let id = try await Self.createJob(a.baseURL, token: token, input: #"{"tokens":2,"delay_ms":5000}"#)
        let transcript = try await SSE.read(b.baseURL + "/api/jobs/\(id)/events", token: token)
        #expect(transcript.problems().isEmpty, "\(transcript.problems())")
        #expect(transcript.events.last?.type == "done", "\(transcript.events.suffix(3))\n\(Self.trouble(a, b))")
        // About 10 s with nothing to say, at one heartbeat per 500 ms of silence: ask for a few,
        // leaving room for a loaded machine that starts the stream seconds late.
        #expect(transcript.comments >= 3, "only \(transcript.comments) heartbeats")
        #expect(transcript.finalOutput == "t0 t1 ", "\(transcript.events)\n\(Self.trouble(a, b))")
    }

    @Test("Idempotency-Key: the same key sent to two processes at once makes one job", arguments: Driver.available)
    func idempotencyRace(driver: Driver) async throws {
        let (_, a, b) = try await Self.pair(driver, a: ["--workers", "0"], b: ["--workers", "0"])
        defer {
            a.signal(SIGKILL)
            b.signal(SIGKILL)
        }
        let token = try await Self.session(on: a)
        let servers = [a.baseURL, b.baseURL]
        let results = try await withThrowingTaskGroup(of: HTTP.Result.self) { group in
            for index in 0..<20 {
                group.addTask {
                    try await HTTP.send(
                        .POST, servers[index % 2] + "/api/jobs", token: token, body: #"{"type":"demo.generate"}"#, headers: [("Idempotency-Key", "same")])
                }
            }
            return try await group.reduce(into: [HTTP.Result]()) { $0.append($1) }
        }
        #expect(Set(results.compactMap { $0.json["id"]?.stringValue }).count == 1)
        #expect(results.filter { $0.status == 202 }.count == 1)
        #expect(results.filter { $0.status == 200 }.count == 19)
        let list = try await HTTP.send(.GET, b.baseURL + "/api/jobs", token: token)
        #expect(list.json["jobs"]?.arrayValue?.count == 1)
    }

    @Test(
        "keel worker runs jobs for a server without workers, shows itself on the admin dashboard, and drains on SIGTERM releasing its unfinished job",
        arguments: Driver.available)
    func separateWorker(driver: Driver) async throws {
        let fixture = try await StoreFixture.make(driver)
        let adminToken = "admin-token-for-the-tests-0123"
        let server = try await KeelProcess.serve(store: fixture.location, arguments: ["--workers", "0", "--admin-token", adminToken])
        let worker = try KeelProcess.worker(
            store: fixture.location,
            arguments: ["--workers", "1", "--drain-timeout", "1s", "--instance-id", "the-worker", "--instance-report-interval", "200ms"])
        defer {
            server.signal(SIGKILL)
            worker.signal(SIGKILL)
        }
        let token = try #require(try await HTTP.send(.POST, server.baseURL + "/api/session").json["token"]?.stringValue)
        let quick = try await Self.createJob(server.baseURL, token: token, input: #"{"tokens":3,"delay_ms":10}"#)
        let done = try await SSE.read(server.baseURL + "/api/jobs/\(quick)/events", token: token)
        #expect(done.problems().isEmpty)
        #expect(try await Self.job(server.baseURL, quick, token: token)["status"] == .string("succeeded"))

        let slow = try await Self.createJob(server.baseURL, token: token, input: #"{"tokens":100,"delay_ms":100}"#)
        try await waitFor("the worker to take the slow job") {
            try await Self.job(server.baseURL, slow, token: token)["worker"]?.stringValue?.hasPrefix("the-worker/") == true
        }
        // The dashboard lists the worker beside the server, busy with the slow job.
        try await waitFor("the worker's report of its busy worker") {
            let overview = try await HTTP.send(.GET, server.baseURL + "/api/admin/overview", token: adminToken).json
            let instances = overview["instances"]?.arrayValue?.compactMap(\.objectValue) ?? []
            let reported = instances.first { $0["id"] == .string("the-worker") }
            let serving = instances.first { $0["id"] == .string("proc-\(server.port)") }
            return reported?["role"] == .string("worker") && reported?["workers"] == .int(1) && reported?["busy_workers"] == .int(1)
                && reported?["open_connections"] == .int(0) && serving?["role"] == .string("server") && serving?["workers"] == .int(0)
        }
        #expect(await worker.stop() == 0)
        // Released, not failed: queued again with the attempt not counted.
        let released = try await Self.job(server.baseURL, slow, token: token)
        #expect(released["status"] == .string("queued"))
        #expect(released["attempts"] == .int(0))
        #expect(worker.log.contains("released unfinished"))
    }
}
