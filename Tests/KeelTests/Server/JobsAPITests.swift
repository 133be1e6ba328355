import Foundation
import HTTPTypes
import HummingbirdTesting
import KeelCore
import KeelServer
import Testing

@Suite("Jobs API", .timeLimit(.minutes(2)))
struct JobsAPITests {
    static let demo = #"{"type":"demo.generate","input":{"tokens":3,"delay_ms":0}}"#

    @Test("create answers 202 with the job and its links; an Idempotency-Key replay answers 200 with the same job")
    func createAndReplay() async throws {
        try await withTestApp(configure: { $0.jobs.workers = 0 }) { _, client in
            let token = try await client.createSession()
            let created = try await client.send(.post, "/api/jobs", token: token, headers: [.init("Idempotency-Key")!: "order-1"], body: Self.demo)
            #expect(created.status == .accepted)
            let id = try #require(created.json["id"]?.stringValue)
            #expect(created.headers[.location] == "/api/jobs/\(id)")
            #expect(created.json["status"] == .string("queued"))
            #expect(created.json["type"] == .string("demo.generate"))
            #expect(created.json["attempts"] == .int(0))
            #expect(created.json["input"] == .object(["tokens": .int(3), "delay_ms": .int(0), "fail_attempts": .int(0)]))
            #expect(created.json["links"]?.objectValue?["events"] == .string("/api/jobs/\(id)/events"))
            #expect(created.json["progress"]?.objectValue != nil)
            #expect(created.json["created_at"]?.stringValue != nil)

            let replay = try await client.send(.post, "/api/jobs", token: token, headers: [.init("Idempotency-Key")!: "order-1"], body: Self.demo)
            #expect(replay.status == .ok)
            #expect(replay.json["id"] == .string(id))

            let different = try await client.send(
                .post, "/api/jobs", token: token, headers: [.init("Idempotency-Key")!: "order-1"],
                body: #"{"type":"demo.generate","input":{"tokens":4}}"#)
            #expect(different.status == .conflict)
            #expect(different.errorCode == "idempotency_key_reused")

            // The same key from another session is another job.
            let other = try await client.createSession()
            let foreign = try await client.send(.post, "/api/jobs", token: other, headers: [.init("Idempotency-Key")!: "order-1"], body: Self.demo)
            #expect(foreign.status == .accepted)
            #expect(foreign.json["id"] != .string(id))

            let read = try await client.send(.get, "/api/jobs/\(id)", token: token)
            #expect(read.status == .ok)
            #expect(read.json["id"] == .string(id))
        }
    }

    @Test("bad requests: no session, unknown type, bad input, bad key, other sessions' jobs")
    func badRequests() async throws {
        try await withTestApp(configure: { $0.jobs.workers = 0 }) { _, client in
            #expect(try await client.send(.post, "/api/jobs", body: Self.demo).errorCode == "session_required")
            let token = try await client.createSession()

            let unknown = try await client.send(.post, "/api/jobs", token: token, body: #"{"type":"nope.nothing"}"#)
            #expect(unknown.status == .badRequest)
            #expect(unknown.errorCode == "unknown_job_type")
            #expect(unknown.json["error"]?.objectValue?["hint"]?.stringValue?.contains("demo.generate") == true)

            let badInputs = [
                #"{"type":"demo.generate","input":{"tokens":"many"}}"#,
                #"{"type":"demo.generate","input":{"tokens":-1}}"#,
                #"{"type":"demo.generate","input":{"tokens":100001}}"#,
                #"{"type":"demo.generate","input":{"delay_ms":1.5}}"#,
                #"{"type":"demo.generate","input":{"fail_attempts":true}}"#,
                #"{"type":"demo.generate","input":{"colour":"red"}}"#,
                #"{"type":"demo.generate","input":[1,2]}"#,
                #"{"type":"demo.generate","max_attempts":0}"#,
                #"{"type":"demo.generate","extra":1}"#,
                #"{"input":{}}"#,
                #"[]"#,
            ]
            for body in badInputs {
                let response = try await client.send(.post, "/api/jobs", token: token, body: body)
                #expect(response.status == .badRequest, "\(body)")
                #expect(response.errorCode == "invalid_input", "\(body)")
            }
            let malformed = try await client.send(.post, "/api/jobs", token: token, body: #"{"type":"demo.generate""#)
            #expect(malformed.errorCode == "invalid_json")
            let badKey = try await client.send(.post, "/api/jobs", token: token, headers: [.init("Idempotency-Key")!: String(repeating: "k", count: 300)], body: Self.demo)
            #expect(badKey.status == .badRequest)
            // Nothing above created a job.
            let list = try await client.send(.get, "/api/jobs", token: token)
            #expect(list.json["jobs"] == .array([]))

            let created = try await client.send(.post, "/api/jobs", token: token, body: Self.demo)
            let id = try #require(created.json["id"]?.stringValue)
            let stranger = try await client.createSession()
            for (method, path) in [(HTTPRequest.Method.get, "/api/jobs/\(id)"), (.get, "/api/jobs/\(id)/events"), (.post, "/api/jobs/\(id)/cancel")] {
                let response = try await client.send(method, path, token: stranger)
                #expect(response.status == .notFound, "\(method) \(path)")
                #expect(response.errorCode == "not_found")
            }
            #expect(try await client.send(.get, "/api/jobs", token: stranger).json["jobs"] == .array([]))
            #expect(try await client.send(.get, "/api/jobs/not-a-job", token: token).status == .notFound)
            // The stranger's attempts changed nothing.
            #expect(try await client.send(.get, "/api/jobs/\(id)", token: token).json["status"] == .string("queued"))
        }
    }

    @Test("list: own jobs, newest first, paginated with a cursor, filtered by status")
    func listing() async throws {
        try await withTestApp(configure: { $0.jobs.workers = 0 }) { _, client in
            let token = try await client.createSession()
            var ids: [String] = []
            for _ in 0..<5 {
                let created = try await client.send(.post, "/api/jobs", token: token, body: Self.demo)
                ids.append(try #require(created.json["id"]?.stringValue))
                try await Task.sleep(for: .milliseconds(3))
            }
            var seen: [String] = []
            var cursor: String?
            var pages = 0
            repeat {
                let query = cursor.map { "&cursor=\($0)" } ?? ""
                let page = try await client.send(.get, "/api/jobs?limit=2\(query)", token: token)
                #expect(page.status == .ok)
                guard case .array(let jobs)? = page.json["jobs"] else { Issue.record("no jobs array"); return }
                seen += jobs.compactMap { $0.objectValue?["id"]?.stringValue }
                cursor = page.json["next_cursor"]?.stringValue
                pages += 1
            } while cursor != nil && pages < 10
            #expect(seen == ids.reversed())
            #expect(pages == 3)

            let cancelled = try await client.send(.post, "/api/jobs/\(ids[0])/cancel", token: token)
            #expect(cancelled.json["status"] == .string("cancelled"))
            let onlyCancelled = try await client.send(.get, "/api/jobs?status=cancelled", token: token)
            #expect(onlyCancelled.json["jobs"]?.arrayValue?.count == 1)

            #expect(try await client.send(.get, "/api/jobs?status=sleeping", token: token).errorCode == "invalid_input")
            #expect(try await client.send(.get, "/api/jobs?limit=0", token: token).errorCode == "invalid_input")
            #expect(try await client.send(.get, "/api/jobs?limit=1000", token: token).errorCode == "invalid_input")
            #expect(try await client.send(.get, "/api/jobs?cursor=garbage", token: token).errorCode == "invalid_cursor")
        }
    }

    @Test("cancel: a queued job is cancelled at once with its done event; a finished one answers 409")
    func cancelQueued() async throws {
        try await withTestApp(configure: { $0.jobs.workers = 0 }) { _, client in
            let token = try await client.createSession()
            let id = try #require(try await client.send(.post, "/api/jobs", token: token, body: Self.demo).json["id"]?.stringValue)
            let cancelled = try await client.send(.post, "/api/jobs/\(id)/cancel", token: token)
            #expect(cancelled.status == .ok)
            #expect(cancelled.json["status"] == .string("cancelled"))
            let again = try await client.send(.post, "/api/jobs/\(id)/cancel", token: token)
            #expect(again.status == .conflict)
            #expect(again.errorCode == "job_finished")
            let page = try await client.send(.get, "/api/jobs/\(id)/events?format=json", token: token)
            #expect(page.json["done"] == .bool(true))
            let events = try #require(page.json["events"]?.arrayValue)
            #expect(events.count == 1)
            #expect(events.first?.objectValue?["type"] == .string("done"))
            #expect(events.first?.objectValue?["data"]?.objectValue?["status"] == .string("cancelled"))
        }
    }

    @Test("a burst of jobs wakes idle workers one by one until all are busy; the slow poll is never needed")
    func burstWakesEveryWorker() async throws {
        // With a one-minute safety-net poll, only the hub's wake-ups can start these jobs.
        try await withTestApp(configure: { $0.jobs.workers = 3; $0.jobs.pollInterval = .seconds(60) }, runJobs: true) { _, client in
            let token = try await client.createSession()
            var ids: [String] = []
            for _ in 0..<3 {
                ids.append(
                    try #require(
                        try await client.send(.post, "/api/jobs", token: token, body: #"{"type":"demo.generate","input":{"tokens":40,"delay_ms":250}}"#)
                            .json["id"]?.stringValue))
            }
            var workers = Set<String>()
            try await waitFor("three jobs running at once on three workers") {
                let page = try await client.send(.get, "/api/jobs?status=running", token: token)
                workers = Set(page.json["jobs"]?.arrayValue?.compactMap { $0.objectValue?["worker"]?.stringValue } ?? [])
                return workers.count == 3
            }
            for id in ids { _ = try await client.send(.post, "/api/jobs/\(id)/cancel", token: token) }
        }
    }

    @Test("workers run a job; its stream has retry:, consecutive ids, the tokens and one final done; JSON pages match")
    func runAndStream() async throws {
        try await withTestApp(configure: { $0.jobs.workers = 2 }, runJobs: true) { _, client in
            let token = try await client.createSession()
            let id = try #require(
                try await client.send(.post, "/api/jobs", token: token, body: #"{"type":"demo.generate","input":{"tokens":12,"delay_ms":5}}"#)
                    .json["id"]?.stringValue)
            let stream = try await client.send(.get, "/api/jobs/\(id)/events", token: token)
            #expect(stream.status == .ok)
            #expect(stream.headers[.contentType]?.hasPrefix("text/event-stream") == true)
            #expect(stream.headers[.cacheControl] == "no-cache")
            #expect(stream.headers[.init("X-Accel-Buffering")!] == "no")
            var parser = SSEParser()
            _ = parser.feed(stream.text)
            let transcript = parser.transcript
            #expect(transcript.retry == 2000)
            #expect(transcript.problems().isEmpty, "\(transcript.problems())")
            #expect(transcript.finalOutput == (0..<12).map { "t\($0) " }.joined())
            let done = try #require(transcript.events.last?.json?.objectValue)
            #expect(done["status"] == .string("succeeded"))
            #expect(done["result"] == .object(["tokens": .int(12), "attempt": .int(1)]))

            let job = try await client.send(.get, "/api/jobs/\(id)", token: token)
            #expect(job.json["status"] == .string("succeeded"))
            #expect(job.json["progress"]?.objectValue?["percent"] == .double(100))
            let last = try #require(transcript.events.last?.id)
            #expect(job.json["last_event_id"] == .int(last))

            // Resume from the middle, by header and by query.
            let resumed = try await client.send(.get, "/api/jobs/\(id)/events", token: token, headers: [.init("Last-Event-ID")!: "5"])
            var tail = SSEParser()
            _ = tail.feed(resumed.text)
            #expect(tail.transcript.problems(startingAfter: 5).isEmpty)
            #expect(tail.transcript.events.map(\.id) == transcript.events.dropFirst(5).map(\.id))
            let page = try await client.send(.get, "/api/jobs/\(id)/events?format=json&after=5&limit=3", token: token)
            #expect(page.json["events"]?.arrayValue?.compactMap { $0.objectValue?["id"] } == [.int(6), .int(7), .int(8)])
            #expect(page.json["last_event_id"] == .int(8))
            #expect(page.json["done"] == .bool(false))

            // Resumed after the terminal event (EventSource reconnects after every close):
            // 204, which tells it to stop, instead of a stream that would never end.
            let afterDone = try await client.send(.get, "/api/jobs/\(id)/events", token: token, headers: [.init("Last-Event-ID")!: "\(last)"])
            #expect(afterDone.status == .noContent)
            #expect(afterDone.text.isEmpty)
            let lastPage = try await client.send(.get, "/api/jobs/\(id)/events?format=json&after=\(last)", token: token)
            #expect(lastPage.json["events"]?.arrayValue?.isEmpty == true)
            #expect(lastPage.json["last_event_id"] == .int(last))
            #expect(lastPage.json["done"] == .bool(true))

            // Cursors beyond the end, or not numbers at all.
            for (headers, query) in [
                ([HTTPField.Name("Last-Event-ID")!: "\(last + 1)"], ""), ([.init("Last-Event-ID")!: "abc"], ""), ([.init("Last-Event-ID")!: "-3"], ""),
                ([:], "?after=\(last + 50)"), ([:], "?after=x"), ([:], "?format=json&after=1e3"),
            ] {
                let response = try await client.send(.get, "/api/jobs/\(id)/events\(query)", token: token, headers: HTTPFields(headers.map { HTTPField(name: $0.key, value: $0.value) }))
                #expect(response.status == .badRequest, "\(headers) \(query)")
                #expect(response.errorCode == "invalid_cursor", "\(headers) \(query)")
            }
            #expect(try await client.send(.get, "/api/jobs/\(id)/events?format=xml", token: token).errorCode == "invalid_input")
        }
    }

    @Test("many streams on one live job share its reads, and each sees every event once, in order")
    func sharedStreams() async throws {
        // No heartbeat re-read to paper over a missed wake-up: a stream that misses one hangs, and the time limit fails the test.
        let configure: (inout KeelConfiguration) -> Void = {
            $0.jobs.workers = 1
            $0.jobs.retryBackoff = .milliseconds(20)
            $0.streams.heartbeatInterval = .seconds(600)
        }
        try await withTestApp(configure: configure, runJobs: true) { _, client in
            let token = try await client.createSession()
            let id = try #require(
                try await client.send(.post, "/api/jobs", token: token, body: #"{"type":"demo.generate","input":{"tokens":40,"delay_ms":5,"fail_attempts":1}}"#)
                    .json["id"]?.stringValue)
            let transcripts = try await withThrowingTaskGroup(of: SSETranscript.self) { group in
                for index in 0..<30 {
                    group.addTask {
                        // Some join late (while others finish and leave), some resume from the middle.
                        try await Task.sleep(for: .milliseconds(index * 20))
                        let resumes = index % 4 == 3
                        if resumes {
                            // A client can only resume from an id it was sent: wait until there is one.
                            try await waitFor("event 3") {
                                if case .int(let last)? = try await client.send(.get, "/api/jobs/\(id)", token: token).json["last_event_id"] { return last >= 3 }
                                return false
                            }
                        }
                        let headers: HTTPFields = resumes ? [.init("Last-Event-ID")!: "3"] : [:]
                        let response = try await client.send(.get, "/api/jobs/\(id)/events", token: token, headers: headers)
                        var parser = SSEParser()
                        _ = parser.feed(response.text)
                        return parser.transcript
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            let full = try #require(transcripts.first { $0.events.first?.id == 1 })
            #expect(full.finalOutput == (0..<40).map { "t\($0) " }.joined())
            for transcript in transcripts {
                let start = (transcript.events.first?.id ?? 1) - 1
                #expect(transcript.problems(startingAfter: start).isEmpty, "\(transcript.problems(startingAfter: start))")
                #expect(transcript.events.map(\.id) == full.events.dropFirst(Int(start)).map(\.id))
                #expect(transcript.events.map(\.data) == full.events.dropFirst(Int(start)).map(\.data))
            }
        }
    }

    @Test("a failing attempt is retried: the log has a reset, the job succeeds on attempt 2")
    func retries() async throws {
        try await withTestApp(configure: { $0.jobs.workers = 1; $0.jobs.retryBackoff = .milliseconds(50) }, runJobs: true) { _, client in
            let token = try await client.createSession()
            let id = try #require(
                try await client.send(.post, "/api/jobs", token: token, body: #"{"type":"demo.generate","input":{"tokens":6,"delay_ms":0,"fail_attempts":1}}"#)
                    .json["id"]?.stringValue)
            let stream = try await client.send(.get, "/api/jobs/\(id)/events", token: token)
            var parser = SSEParser()
            _ = parser.feed(stream.text)
            let transcript = parser.transcript
            #expect(transcript.problems().isEmpty, "\(transcript.problems())")
            #expect(transcript.events.filter { $0.type == "reset" }.count == 1)
            #expect(transcript.finalOutput == (0..<6).map { "t\($0) " }.joined())
            let job = try await client.send(.get, "/api/jobs/\(id)", token: token)
            #expect(job.json["status"] == .string("succeeded"))
            #expect(job.json["attempts"] == .int(2))

            // With no attempts left, it fails with the handler's error.
            let doomed = try #require(
                try await client.send(.post, "/api/jobs", token: token, body: #"{"type":"demo.generate","max_attempts":2,"input":{"tokens":2,"delay_ms":0,"fail_attempts":5}}"#)
                    .json["id"]?.stringValue)
            _ = try await client.send(.get, "/api/jobs/\(doomed)/events", token: token)
            let failed = try await client.send(.get, "/api/jobs/\(doomed)", token: token)
            #expect(failed.json["status"] == .string("failed"))
            #expect(failed.json["attempts"] == .int(2))
            #expect(failed.json["error"]?.objectValue?["code"] == .string("demo_failure"))
        }
    }

    @Test("cancelling a running job: its worker hears at once, not at its next heartbeat, and stops")
    func cancelRunning() async throws {
        // Heartbeats every 20 s: only the cancel's own wake-up can stop it sooner.
        try await withTestApp(configure: { $0.jobs.workers = 1; $0.jobs.leaseDuration = .seconds(60) }, runJobs: true) { app, client in
            let token = try await client.createSession()
            let id = try #require(
                try await client.send(.post, "/api/jobs", token: token, body: #"{"type":"demo.generate","input":{"tokens":200,"delay_ms":50}}"#)
                    .json["id"]?.stringValue)
            try await waitFor("the job to run") { try await client.send(.get, "/api/jobs/\(id)", token: token).json["status"] == .string("running") }
            let cancelling = try await client.send(.post, "/api/jobs/\(id)/cancel", token: token)
            #expect(cancelling.status == .accepted)
            #expect(cancelling.json["cancel_requested"] == .bool(true))
            let asked = ContinuousClock.now
            try await waitFor("the job to stop") { try await client.send(.get, "/api/jobs/\(id)", token: token).json["status"] == .string("cancelled") }
            #expect(ContinuousClock.now - asked < .seconds(5))
            let page = try await client.send(.get, "/api/jobs/\(id)/events?format=json&limit=1000", token: token)
            #expect(page.json["done"] == .bool(true))
            #expect(page.json["events"]?.arrayValue?.count ?? 0 < 300)
        }
    }

    @Test("finished jobs expire after the result TTL: 404, and the janitor purges them with their events")
    func resultTTL() async throws {
        let configure: (inout KeelConfiguration) -> Void = {
            $0.jobs.workers = 1
            $0.jobs.resultTTL = .milliseconds(600)
            $0.jobs.janitorInterval = .milliseconds(100)
        }
        try await withTestApp(configure: configure, runJobs: true) { app, client in
            let token = try await client.createSession()
            let id = try #require(
                try await client.send(.post, "/api/jobs", token: token, body: #"{"type":"demo.generate","input":{"tokens":1,"delay_ms":0}}"#)
                    .json["id"]?.stringValue)
            // The stream ends with the finished job (asking again could already be too late on a loaded machine).
            var parser = SSEParser()
            _ = parser.feed(try await client.send(.get, "/api/jobs/\(id)/events", token: token).text)
            #expect(parser.transcript.events.last?.json?.objectValue?["status"] == .string("succeeded"))
            try await waitFor("the job to expire") { try await client.send(.get, "/api/jobs/\(id)", token: token).status == .notFound }
            #expect(try await client.send(.get, "/api/jobs/\(id)/events?format=json", token: token).status == .notFound)
            // Purged from the store, not just hidden.
            try await waitFor("the janitor to purge it") { try await app.store.jobs.job(id: id) == nil }
            #expect(try await app.store.events.events(jobID: id, after: 0, limit: 10).isEmpty)
        }
    }

    @Test("system health reports the queue and workers; metrics count jobs")
    func operations() async throws {
        try await withTestApp(configure: { $0.jobs.workers = 0 }) { _, client in
            let token = try await client.createSession()
            _ = try await client.send(.post, "/api/jobs", token: token, body: Self.demo)
            let health = try await client.send(.get, "/system-health")
            let jobs = try #require(health.json["jobs"]?.objectValue)
            #expect(jobs["queue_depth"] == .int(1))
            #expect(jobs["workers"] == .int(0))
            let metrics = try await client.send(.get, "/metrics").text
            #expect(metrics.contains(#"keel_jobs_created_total{type="demo.generate"} 1"#))
            #expect(metrics.contains("keel_job_queue_depth 1"))
        }
    }
}

/// Polls `condition` until it holds, failing after `timeout`.
func waitFor(_ what: String, timeout: Duration = .seconds(30), _ condition: () async throws -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return }
        try await Task.sleep(for: .milliseconds(50))
    }
    Issue.record("timed out waiting for \(what)")
    throw KeelError(.internalError, "timed out waiting for \(what)")
}

