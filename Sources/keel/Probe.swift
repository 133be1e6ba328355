import ArgumentParser
import AsyncHTTPClient
import Foundation
import KeelCore
import KeelModels
import NIOCore
import NIOHTTP1

/// `keel probe URL`: checks a running Keel deployment through whatever sits
/// in front of it (load balancer, CDN, ingress) for the failures the field
/// reports describe: stickiness that state depends on, idle timeouts that cut
/// streams, buffering that holds events back, body limits below the upload
/// chunk size, CORS that blocks the browser app.
///
/// It touches only its own session, jobs and uploads, removes them at the
/// end, and never relies on sticky sessions: it sends only the
/// `keel_session` cookie and drops every cookie the path sets.
struct Probe: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check a Keel deployment through its load balancer and report what would break.",
        discussion: """
            Prints one line per check (PASS, WARN or FAIL) with the evidence, and a fix for each failure. Exits 1 when a \
            check fails, so it can gate a deploy. Safe against production: it creates one session, a few small jobs and \
            uploads, and deletes them. Bigger request-size tiers (64 and 256 MiB) run only with --disruptive.
            """
    )

    @Argument(help: "The deployment's base URL, as browsers reach it (https://app.example.com).")
    var url: String

    @Option(help: "A browser origin to check CORS for (https://app.example.com).")
    var origin: String?

    @Option(name: .customLong("chunk-size"), help: "The upload chunk size your clients use, in bytes.")
    var chunkSize: Int = 5 * 1_048_576

    @Option(name: .customLong("idle-wait"), help: "Longest time to hold an idle stream open, in seconds (default: twice Keel's heartbeat, at most 55).")
    var idleWait: Double?

    @Option(help: "Requests per stickiness check.")
    var requests: Int = 24

    @Flag(help: "Also send 64 and 256 MiB request bodies (load on the deployment and its disk).")
    var disruptive = false

    @Option(name: .customLong("ops-token"), help: "The deployment's --ops-token, to read its heartbeat from /system-health (env KEEL_OPS_TOKEN).")
    var opsToken: String?

    @Option(help: "The deployment's --sse-heartbeat in seconds, when /system-health cannot be read (default: read it, else 15).")
    var heartbeat: Double?

    func run() async throws {
        guard let base = URL(string: self.url), base.scheme == "http" || base.scheme == "https", base.host != nil else {
            throw ValidationError("'\(self.url)' is not an http(s) URL.")
        }
        var configuration = HTTPClient.Configuration(timeout: .init(connect: .seconds(5)))
        // Streams are asked for as browsers ask (gzip accepted), so a proxy that compresses, and so buffers, them shows up.
        configuration.decompression = .enabled(limit: .none)
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        let probe = Prober(
            client: client, base: self.url.hasSuffix("/") ? String(self.url.dropLast()) : self.url, origin: self.origin,
            chunkSize: self.chunkSize, idleWait: self.idleWait, requests: max(4, self.requests), disruptive: self.disruptive,
            opsToken: self.opsToken ?? ProcessInfo.processInfo.environment["KEEL_OPS_TOKEN"], heartbeat: self.heartbeat
        )
        let failed = await probe.run()
        try? await client.shutdown()
        if failed { throw ExitCode(1) }
    }
}

/// One check's outcome.
struct ProbeResult: Error, Sendable {
    enum Verdict: String, Sendable {
        case pass = "PASS"
        case warn = "WARN"
        case fail = "FAIL"
    }

    var verdict: Verdict
    var name: String
    var evidence: String
    var fix: String?

    static func pass(_ name: String, _ evidence: String) -> Self { Self(verdict: .pass, name: name, evidence: evidence) }
    static func warn(_ name: String, _ evidence: String, fix: String? = nil) -> Self { Self(verdict: .warn, name: name, evidence: evidence, fix: fix) }
    static func fail(_ name: String, _ evidence: String, fix: String) -> Self { Self(verdict: .fail, name: name, evidence: evidence, fix: fix) }
}

/// An HTTP answer as the probe needs it.
struct ProbeResponse: Sendable {
    var status: Int
    var headers: HTTPHeaders
    var body: ByteBuffer

    var instance: String? { self.headers.first(name: "Keel-Instance") }
    var json: [String: JSONValue] { (try? JSONValue.parse(Array(self.body.readableBytesView)))?.objectValue ?? [:] }
    var text: String { String(buffer: self.body) }
    /// Cookies the path set other than Keel's own (stickiness cookies, typically).
    var foreignCookies: [String] {
        self.headers["Set-Cookie"].compactMap { $0.split(separator: "=").first.map(String.init) }.filter { $0 != "keel_session" }
    }
}

struct Prober: Sendable {
    let client: HTTPClient
    let base: String
    let origin: String?
    let chunkSize: Int
    let idleWait: Double?
    let requests: Int
    let disruptive: Bool
    let opsToken: String?
    let heartbeat: Double?

    /// Runs every check, prints the report, cleans up; returns whether a check failed.
    func run() async -> Bool {
        var results: [ProbeResult] = []
        var cleanup = Cleanup()
        print("keel probe \(self.base)")
        let health = await self.checkHealth()
        self.report(health)
        results += health
        guard !health.contains(where: { $0.verdict == .fail && $0.name == "health" }) else {
            return true
        }
        let token: String
        switch await self.createSession() {
        case .success(let created):
            token = created
            cleanup.session = created
        case .failure(let result):
            self.report([result])
            return true
        }
        let heartbeat = await self.heartbeatSeconds()
        // The idle check waits the longest: run it next to the others.
        async let idle = self.checkIdleTimeout(token: token, heartbeat: heartbeat)
        var batch: [ProbeResult] = []
        batch.append(await self.checkSessions(token: token))
        let (jobsResult, jobID) = await self.checkJobs(token: token)
        batch.append(jobsResult)
        if let jobID { batch.append(await self.checkResumes(token: token, jobID: jobID)) }
        batch.append(await self.checkBuffering(token: token))
        let (sizeResult, uploads) = await self.checkRequestSize(token: token)
        batch.append(sizeResult)
        cleanup.uploads += uploads
        if let origin { batch.append(await self.checkCORS(origin: origin, token: token)) }
        self.report(batch)
        let (idleResult, idleJob) = await idle
        self.report([idleResult])
        results += batch + [idleResult]
        if let idleJob { cleanup.jobs.append(idleJob) }
        await self.clean(cleanup)
        let failures = results.filter { $0.verdict == .fail }.count
        let warnings = results.filter { $0.verdict == .warn }.count
        print(failures == 0 ? "ok: \(results.count) checks, \(warnings) warnings" : "failed: \(failures) of \(results.count) checks")
        return failures > 0
    }

    func report(_ results: [ProbeResult]) {
        for result in results {
            print("\(result.verdict.rawValue)  \(result.name.padding(toLength: 14, withPad: " ", startingAt: 0)) \(result.evidence)")
            if let fix = result.fix { print("      fix: \(fix)") }
        }
    }

    // MARK: Checks

    func checkHealth() async -> [ProbeResult] {
        var instances = Set<String>()
        var failures: [String] = []
        var foreign = Set<String>()
        for index in 0..<self.requests {
            let path = index % 2 == 0 ? "/health" : "/ready"
            do {
                let response = try await self.send(.GET, path)
                if let instance = response.instance { instances.insert(instance) }
                foreign.formUnion(response.foreignCookies)
                if response.status != 200 { failures.append("\(path) \(response.status)") }
            } catch {
                failures.append("\(path): \(error)")
            }
        }
        var results: [ProbeResult] = []
        if failures.count == self.requests {
            results.append(.fail("health", "no answer from /health or /ready: \(failures.first ?? "")", fix: "Check the URL, DNS and that the balancer forwards to Keel's port."))
            return results
        }
        if failures.isEmpty {
            results.append(.pass("health", "\(self.requests) requests to /health and /ready answered 200"))
        } else {
            results.append(.fail("health", "\(failures.count) of \(self.requests) failed: \(Set(failures).sorted().prefix(3).joined(separator: "; "))",
                fix: "An instance is unready or the balancer routes to a dead target: health-check /ready and let it eject failing targets."))
        }
        if instances.isEmpty {
            results.append(.fail("instances", "no Keel-Instance header in the answers", fix: "Is this Keel? Something in front strips response headers; let Keel-Instance through."))
        } else if instances.count == 1 {
            results.append(.warn("instances", "1 instance answered \(self.requests) requests (\(instances.first!))",
                fix: "If you run several, the balancer pins this client to one (stickiness) or only one is healthy."))
        } else {
            results.append(.pass("instances", "\(instances.count) instances answered: \(instances.sorted().joined(separator: ", "))"))
        }
        if !foreign.isEmpty {
            results.append(.warn("cookies", "the path sets cookies \(foreign.sorted().joined(separator: ", ")) (stickiness?); this probe drops them",
                fix: "Keel needs no sticky sessions; turn stickiness off so load spreads and a dead instance costs nothing."))
        }
        return results
    }

    func createSession() async -> Result<String, ProbeResult> {
        do {
            let response = try await self.send(.POST, "/api/session")
            guard response.status == 201, let token = response.json["token"]?.stringValue else {
                return .failure(.fail("session", "POST /api/session answered \(response.status): \(response.text.prefix(200))", fix: "Check /ready and the instance's logs."))
            }
            return .success(token)
        } catch {
            return .failure(.fail("session", "POST /api/session failed: \(error)", fix: "Check /ready and the instance's logs."))
        }
    }

    /// Keel's heartbeat: as given, else from `/system-health` (which needs the
    /// operator token through a proxy), else the default, said so.
    func heartbeatSeconds() async -> Double {
        if let heartbeat { return heartbeat }
        let response = try? await self.send(.GET, "/system-health", headers: self.opsToken.map { [("Authorization", "Bearer \($0)")] } ?? [])
        if case .double(let seconds)? = response?.json["streams"]?.objectValue?["heartbeat_seconds"] { return seconds }
        if case .int(let seconds)? = response?.json["streams"]?.objectValue?["heartbeat_seconds"] { return Double(seconds) }
        print("  (could not read /system-health\(response.map { ": it answered \($0.status)" } ?? ""); assuming Keel's default 15 s heartbeat: pass --ops-token or --heartbeat)")
        return 15
    }

    /// Reads and patches that land on every instance see each other's writes, with only the session cookie.
    func checkSessions(token: String) async -> ProbeResult {
        var instances = Set<String>()
        do {
            for round in 1...self.requests / 2 {
                let patch = try await self.send(.PATCH, "/api/session", token: token, body: #"{"keel_probe_round":\#(round)}"#, contentType: "application/merge-patch+json")
                guard patch.status == 200 else {
                    return .fail("sessions", "PATCH /api/session answered \(patch.status) on \(patch.instance ?? "?"): \(patch.text.prefix(160))", fix: Self.stateFix)
                }
                let read = try await self.send(.GET, "/api/session", token: token)
                guard read.status == 200 else {
                    return .fail("sessions", "GET /api/session answered \(read.status) on \(read.instance ?? "?") after a write on \(patch.instance ?? "?")", fix: Self.stateFix)
                }
                guard read.json["data"]?.objectValue?["keel_probe_round"] == .int(Int64(round)) else {
                    return .fail("sessions", "a read on \(read.instance ?? "?") did not see the write made on \(patch.instance ?? "?")", fix: Self.stateFix)
                }
                instances.formUnion([patch.instance, read.instance].compactMap { $0 })
            }
        } catch {
            return .fail("sessions", "a session request failed: \(error)", fix: Self.stateFix)
        }
        return .pass("sessions", "\(self.requests) reads and writes with only the keel_session cookie, on \(instances.count) instance(s), all consistent")
    }

    static let stateFix = "Every instance must use the same --store and KEEL_SECRET; Keel then needs no stickiness."

    /// A job created on one instance is polled on every instance until it succeeds.
    func checkJobs(token: String) async -> (ProbeResult, String?) {
        do {
            let created = try await self.send(.POST, "/api/jobs", token: token, body: #"{"type":"keel.probe","input":{"tokens":5,"delay_ms":40}}"#)
            guard created.status == 202, let id = created.json["id"]?.stringValue else {
                return (.fail("jobs", "POST /api/jobs answered \(created.status): \(created.text.prefix(160))", fix: "Check the instance's logs; keel.probe is built in."), nil)
            }
            var instances = Set([created.instance].compactMap { $0 })
            let deadline = ContinuousClock.now + .seconds(30)
            var polls = 0
            while ContinuousClock.now < deadline {
                let polled = try await self.send(.GET, "/api/jobs/\(id)", token: token)
                polls += 1
                guard polled.status == 200 else {
                    return (.fail("jobs", "polling the job created on \(created.instance ?? "?") answered \(polled.status) on \(polled.instance ?? "?")", fix: Self.stateFix), id)
                }
                if let instance = polled.instance { instances.insert(instance) }
                if polled.json["status"] == .string("succeeded") {
                    return (.pass("jobs", "job created on \(created.instance ?? "?"), \(polls) polls on \(instances.count) instance(s), succeeded"), id)
                }
                if case .string(let status)? = polled.json["status"], ["failed", "cancelled"].contains(status) {
                    return (.fail("jobs", "the demo job ended \(status)", fix: "Check the workers' logs (keel serve --workers, keel worker)."), id)
                }
                try await Task.sleep(for: .milliseconds(100))
            }
            return (.fail("jobs", "the demo job did not finish in 30 s (\(polls) polls)", fix: "No worker is running: start keel serve with --workers > 0 or a keel worker on the same store."), id)
        } catch {
            return (.fail("jobs", "a job request failed: \(error)", fix: Self.stateFix), nil)
        }
    }

    /// The finished job's stream resumed from every event id, wherever each request lands.
    func checkResumes(token: String, jobID: String) async -> ProbeResult {
        do {
            let page = try await self.send(.GET, "/api/jobs/\(jobID)/events?format=json&after=0", token: token)
            guard page.status == 200, case .int(let last)? = page.json["last_event_id"], last > 0 else {
                return .fail("resumes", "GET events?format=json answered \(page.status)", fix: Self.stateFix)
            }
            var instances = Set<String>()
            for after in 0..<last {
                let (response, events) = try await self.stream("/api/jobs/\(jobID)/events", token: token, lastEventID: after, maxEvents: 1, timeout: .seconds(10))
                if let instance = response.instance { instances.insert(instance) }
                guard response.status == 200, events.first?.id == after + 1 else {
                    return .fail("resumes", "resuming after event \(after) on \(response.instance ?? "?") gave \(response.status) \(events.first.map { "event \($0.id)" } ?? "no event")", fix: Self.stateFix)
                }
            }
            return .pass("resumes", "resumed the event stream after each of \(last) events on \(instances.count) instance(s); no gap, no repeat")
        } catch {
            return .fail("resumes", "a stream request failed: \(error)", fix: Self.stateFix)
        }
    }

    /// Events sent 300 ms apart must arrive about 300 ms apart, not in one burst.
    func checkBuffering(token: String) async -> ProbeResult {
        do {
            let created = try await self.send(.POST, "/api/jobs", token: token, body: #"{"type":"keel.probe","input":{"tokens":6,"delay_ms":300}}"#)
            guard let id = created.json["id"]?.stringValue else { return .fail("buffering", "could not create a job (\(created.status))", fix: "See the jobs check.") }
            let (response, events) = try await self.stream("/api/jobs/\(id)/events", token: token, lastEventID: nil, maxEvents: 100, timeout: .seconds(30))
            let tokens = events.filter { $0.type == "token" }
            guard response.status == 200, tokens.count >= 4, let first = tokens.first?.arrival, let last = tokens.last?.arrival else {
                return .fail("buffering", "the stream answered \(response.status) with \(tokens.count) token events", fix: "See the jobs check.")
            }
            let spread = (last - first).timeInterval
            let expected = Double(tokens.count - 1) * 0.3
            let evidence = "\(tokens.count) events sent 300 ms apart arrived over \(String(format: "%.2f", spread)) s (expected ≈ \(String(format: "%.1f", expected)) s)"
            if spread < expected * 0.4 {
                return .fail("buffering", evidence + ": something in front buffers responses",
                    fix: "Turn off response buffering and compression for /api/jobs/*/events: nginx proxy_buffering off (Keel also sends X-Accel-Buffering: no, unless proxy_ignore_headers drops it) and no gzip for text/event-stream; CDNs: bypass caching and buffering for that path.")
            }
            return .pass("buffering", evidence)
        } catch {
            return .fail("buffering", "the stream failed: \(error)", fix: "See the jobs check.")
        }
    }

    /// How long the path keeps a silent stream open, against Keel's heartbeat.
    func checkIdleTimeout(token: String, heartbeat: Double) async -> (ProbeResult, String?) {
        let wait = min(55, self.idleWait ?? max(heartbeat * 2, 20))
        do {
            // Tokens a minute apart: after the first progress event the job is silent.
            let created = try await self.send(.POST, "/api/jobs", token: token, body: #"{"type":"keel.probe","input":{"tokens":3,"delay_ms":60000}}"#)
            guard let id = created.json["id"]?.stringValue else { return (.fail("idle-timeout", "could not create a job (\(created.status))", fix: "See the jobs check."), nil) }
            var lastID: Int64 = 0
            let started = ContinuousClock.now
            while ContinuousClock.now - started < .seconds(15) {
                let page = try await self.send(.GET, "/api/jobs/\(id)/events?format=json&after=0", token: token)
                if case .int(let last)? = page.json["last_event_id"], last > 0 { lastID = last; break }
                try await Task.sleep(for: .milliseconds(100))
            }
            let opened = ContinuousClock.now
            let (response, events) = try await self.stream(
                "/api/jobs/\(id)/events?heartbeat=off", token: token, lastEventID: lastID, maxEvents: 1, timeout: .seconds(wait), tolerateTimeout: true)
            let held = (ContinuousClock.now - opened).timeInterval
            let heldText = String(format: "%.1f", held)
            guard response.status == 200 else {
                return (.fail("idle-timeout", "the silent stream answered \(response.status)", fix: "See the resumes check."), id)
            }
            if !events.isEmpty {
                return (.warn("idle-timeout", "an event arrived within \(heldText) s; could not measure"), id)
            }
            if held >= wait - 0.5 {
                return (.pass("idle-timeout", "a silent stream stayed open ≥ \(heldText) s; Keel heartbeats every \(String(format: "%g", heartbeat)) s"), id)
            }
            let evidence = "the path closed a silent stream after \(heldText) s; Keel heartbeats every \(String(format: "%g", heartbeat)) s"
            if held <= heartbeat + 1 {
                return (.fail("idle-timeout", evidence + ": streams are cut between heartbeats",
                    fix: "Raise the proxy's idle/read timeout above \(String(format: "%g", heartbeat)) s (nginx proxy_read_timeout, ALB idle_timeout), or lower --sse-heartbeat below \(String(format: "%.0f", max(1, held - 1))) s."), id)
            }
            if held < heartbeat * 1.5 {
                return (.warn("idle-timeout", evidence + " (thin margin)", fix: "Keep the idle timeout well above the heartbeat, e.g. twice it."), id)
            }
            return (.pass("idle-timeout", evidence), id)
        } catch {
            return (.fail("idle-timeout", "the silent stream failed: \(error)", fix: "See the resumes check."), nil)
        }
    }

    /// The biggest PATCH the path lets through, against the clients' chunk size.
    func checkRequestSize(token: String) async -> (ProbeResult, [String]) {
        var tiers = [1_048_576, self.chunkSize, 16 * 1_048_576]
        if self.disruptive { tiers += [64 * 1_048_576, 256 * 1_048_576] }
        tiers = Array(Set(tiers)).sorted()
        var created: [String] = []
        var largest = 0
        for size in tiers {
            do {
                let upload = try await self.send(.POST, "/api/uploads", token: token, headers: [("Tus-Resumable", "1.0.0"), ("Upload-Length", String(size))])
                guard upload.status == 201, let location = upload.headers.first(name: "Location") else {
                    return (.fail("request-size", "POST /api/uploads answered \(upload.status): \(upload.text.prefix(160))", fix: "Check the instance's logs."), created)
                }
                let path = location.hasPrefix("http") ? String(location.drop(while: { $0 != "/" }).dropFirst(2).drop(while: { $0 != "/" })) : location
                created.append(path)
                let body = ByteBuffer(repeating: 0x6B, count: size)
                let patch = try await self.send(
                    .PATCH, path, token: token,
                    headers: [("Tus-Resumable", "1.0.0"), ("Upload-Offset", "0"), ("Content-Type", "application/offset+octet-stream")], rawBody: body,
                    timeout: .seconds(300))
                if patch.status == 204 {
                    largest = size
                    continue
                }
                let who = patch.instance == nil ? "something in front of Keel (no Keel-Instance header)" : "Keel (\(patch.instance!))"
                let evidence = "a \(Self.mib(size)) PATCH got \(patch.status) from \(who); largest accepted: \(largest == 0 ? "none" : Self.mib(largest))"
                if size <= self.chunkSize {
                    return (.fail("request-size", evidence + ", clients send \(Self.mib(self.chunkSize))",
                        fix: "Raise the body limit in front of Keel above the chunk size (nginx client_max_body_size 0 or ≥ \(Self.mib(self.chunkSize * 2)); ingress-nginx proxy-body-size)."), created)
                }
                return (.warn("request-size", evidence + "; clients send \(Self.mib(self.chunkSize)), which fits", fix: "Fine unless clients use bigger chunks."), created)
            } catch {
                if size <= self.chunkSize {
                    return (.fail("request-size", "a \(Self.mib(size)) PATCH failed: \(error)", fix: "The path in front drops large bodies: raise its body size limit and timeouts."), created)
                }
                return (.warn("request-size", "a \(Self.mib(size)) PATCH failed: \(error); largest accepted \(Self.mib(largest))"), created)
            }
        }
        return (.pass("request-size", "PATCH bodies up to \(Self.mib(largest)) pass (clients send \(Self.mib(self.chunkSize)))"), created)
    }

    /// A browser app on `origin` can call the API with credentials, tus headers included.
    func checkCORS(origin: String, token: String) async -> ProbeResult {
        let fix = "Start Keel with --cors-origins \(origin) (exactly as the browser sends Origin), and let the proxy pass OPTIONS and the Access-Control-* headers through."
        do {
            let preflight = try await self.send(
                .OPTIONS, "/api/uploads",
                headers: [("Origin", origin), ("Access-Control-Request-Method", "PATCH"), ("Access-Control-Request-Headers", "tus-resumable, upload-offset, content-type, authorization")])
            let allowOrigin = preflight.headers.first(name: "Access-Control-Allow-Origin")
            guard (200..<300).contains(preflight.status), allowOrigin == origin else {
                return .fail("cors", "preflight from \(origin) answered \(preflight.status) with Access-Control-Allow-Origin \(allowOrigin ?? "missing")", fix: fix)
            }
            guard preflight.headers.first(name: "Access-Control-Allow-Credentials") == "true" else {
                return .fail("cors", "the preflight does not allow credentials, so the session cookie is never sent", fix: "Run Keel with --cors-credentials true (the default).")
            }
            let allowedHeaders = (preflight.headers.first(name: "Access-Control-Allow-Headers") ?? "").lowercased()
            let missing = ["tus-resumable", "upload-offset", "content-type"].filter { !allowedHeaders.contains($0) }
            guard missing.isEmpty else { return .fail("cors", "the preflight does not allow headers \(missing.joined(separator: ", "))", fix: fix) }
            let actual = try await self.send(.GET, "/api/session", token: token, headers: [("Origin", origin)])
            let exposed = (actual.headers.first(name: "Access-Control-Expose-Headers") ?? "").lowercased()
            guard actual.headers.first(name: "Access-Control-Allow-Origin") == origin, exposed.contains("location"), exposed.contains("upload-offset") else {
                return .fail("cors", "a credentialed GET from \(origin) lacks Access-Control-Allow-Origin or does not expose Location and Upload-Offset", fix: fix)
            }
            return .pass("cors", "\(origin): preflight allows PATCH with tus headers and credentials; Location and Upload-Offset exposed")
        } catch {
            return .fail("cors", "CORS requests failed: \(error)", fix: fix)
        }
    }

    // MARK: Cleanup

    struct Cleanup {
        var session: String?
        var jobs: [String] = []
        var uploads: [String] = []
    }

    func clean(_ cleanup: Cleanup) async {
        guard let token = cleanup.session else { return }
        for job in cleanup.jobs { _ = try? await self.send(.POST, "/api/jobs/\(job)/cancel", token: token) }
        for upload in cleanup.uploads { _ = try? await self.send(.DELETE, upload, token: token, headers: [("Tus-Resumable", "1.0.0")]) }
        _ = try? await self.send(.DELETE, "/api/session", token: token)
    }

    // MARK: HTTP

    func send(
        _ method: HTTPMethod, _ path: String, token: String? = nil, headers: [(String, String)] = [], body: String? = nil,
        contentType: String = "application/json", rawBody: ByteBuffer? = nil, timeout: Duration = .seconds(30)
    ) async throws -> ProbeResponse {
        var request = HTTPClientRequest(url: self.base + path)
        request.method = method
        // Only Keel's own cookie, never one the path set: state must not depend on stickiness.
        if let token { request.headers.add(name: "Cookie", value: "keel_session=\(token)") }
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let body {
            request.headers.add(name: "Content-Type", value: contentType)
            request.body = .bytes(ByteBuffer(string: body))
        } else if let rawBody {
            request.body = .bytes(rawBody)
        }
        let response = try await self.client.execute(request, timeout: .seconds(Int64(timeout.timeInterval.rounded(.up))))
        let collected = try await response.body.collect(upTo: 4 * 1_048_576)
        return ProbeResponse(status: Int(response.status.code), headers: response.headers, body: collected)
    }

    struct StreamEvent: Sendable {
        var id: Int64
        var type: String
        var arrival: ContinuousClock.Instant
    }

    /// Reads Server-Sent Events until `maxEvents`, `done`, the end of the stream or `timeout`.
    func stream(
        _ path: String, token: String, lastEventID: Int64?, maxEvents: Int, timeout: Duration, tolerateTimeout: Bool = false
    ) async throws -> (ProbeResponse, [StreamEvent]) {
        var request = HTTPClientRequest(url: self.base + path)
        request.headers.add(name: "Cookie", value: "keel_session=\(token)")
        request.headers.add(name: "Accept", value: "text/event-stream")
        request.headers.add(name: "Accept-Encoding", value: "gzip, deflate")
        if let lastEventID { request.headers.add(name: "Last-Event-ID", value: String(lastEventID)) }
        let response = try await self.client.execute(request, timeout: .seconds(Int64(timeout.timeInterval.rounded(.up)) + 5))
        let head = ProbeResponse(status: Int(response.status.code), headers: response.headers, body: ByteBuffer())
        guard response.status == .ok else { return (head, []) }
        let body = response.body
        return try await withThrowingTaskGroup(of: [StreamEvent]?.self) { group in
            group.addTask {
                var events: [StreamEvent] = []
                var decoder = SSEDecoder()
                // A connection the path cuts mid-stream ends the stream: what arrived is the answer.
                do {
                    for try await buffer in body {
                        for event in try decoder.feed(buffer.readableBytesView) {
                            guard let eventID = event.id.flatMap({ Int64($0) }) else { continue }
                            events.append(StreamEvent(id: eventID, type: event.type, arrival: .now))
                            if events.count >= maxEvents || event.type == "done" { return events }
                        }
                    }
                } catch is CancellationError {
                    throw CancellationError()
                } catch {
                    return events
                }
                return events
            }
            group.addTask {
                try await Task.sleep(for: timeout)
                return nil
            }
            let first = try await group.next() ?? nil
            group.cancelAll()
            if let events = first { return (head, events) }
            if tolerateTimeout { return (head, []) }
            throw KeelError(.internalError, "no complete answer within \(timeout)")
        }
    }

    static func mib(_ bytes: Int) -> String {
        bytes % 1_048_576 == 0 ? "\(bytes / 1_048_576) MiB" : String(format: "%.1f MiB", Double(bytes) / 1_048_576)
    }
}
