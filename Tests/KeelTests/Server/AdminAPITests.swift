import Foundation
import HTTPTypes
import HummingbirdTesting
import KeelCore
import KeelServer
import NIOCore
import Testing

/// `GET /api/admin/overview`, the admin dashboard's data, in process on SQLite.
@Suite("Admin overview API")
struct AdminAPITests {
    static let token = "admin-token-for-the-tests-0123"

    static func overview(_ client: any TestClientProtocol, _ query: String = "", token: String? = Self.token) async throws -> TestResponse {
        try await client.send(.get, "/api/admin/overview\(query)", token: token)
    }

    @Test("without --admin-token the dashboard does not exist: its endpoint and page are 404")
    func offWithoutToken() async throws {
        try await withTestApp { _, client in
            for response in [try await Self.overview(client), try await Self.overview(client, token: nil), try await client.send(.get, "/admin")] {
                #expect(response.status == .notFound)
            }
        }
    }

    @Test("the token is required; the overview counts this instance, jobs by status and over time, uploads, and refuses a bad window")
    func overview() async throws {
        try await withTestApp(configure: { $0.adminToken = Self.token }) { app, client in
            for token in [nil, "wrong", Self.token + "x"] as [String?] {
                let refused = try await Self.overview(client, token: token)
                #expect(refused.status == .unauthorized && refused.errorCode == "admin_token_required", "\(refused.text)")
            }
            // A session's token is not the admin token either.
            let session = try await client.createSession()
            let asSession = try await Self.overview(client, token: session)
            #expect(asSession.status == .unauthorized)

            let job = try await client.send(.post, "/api/jobs", token: session, body: #"{"type":"demo.generate","input":{"tokens":1}}"#)
            #expect(job.status == .accepted || job.status == .created, "\(job.text)")
            let created = try await client.tusCreate(token: session, length: 5, metadata: "filename \(Data("a.txt".utf8).base64EncodedString())")
            let location = try #require(created.headers[.location])
            #expect(try await client.tusPatch(location, token: session, offset: 0, bytes: Array("hello".utf8)[...]).status == .noContent)
            _ = try await client.tusCreate(token: session, length: 9, metadata: "")

            let response = try await Self.overview(client)
            #expect(response.status == .ok && response.headers[.cacheControl] == "no-store", "\(response.text)")
            let body = response.json
            #expect(body["instance"]?.stringValue == app.configuration.instanceID)
            #expect(body["window_minutes"] == .int(60))
            let instances = try #require(body["instances"]?.arrayValue)
            #expect(instances.first?.objectValue?["id"]?.stringValue == app.configuration.instanceID)
            #expect(instances.first?.objectValue?["workers"] == .int(Int64(app.configuration.jobs.workers)))
            let jobs = try #require(body["jobs"]?.objectValue)
            #expect(jobs["by_status"]?.objectValue?["queued"] == .int(1) && jobs["queue_depth"] == .int(1))
            #expect(jobs["by_type"] == .array([.object(["type": .string("demo.generate"), "status": .string("queued"), "count": .int(1)])]))
            let timeline = try #require(jobs["timeline"]?.arrayValue)
            #expect(jobs["bucket_seconds"] == .int(60) && (60...61).contains(timeline.count))
            #expect(timeline.compactMap { $0.objectValue?["created"] } .reduce(0) { $0 + ($1 == .int(1) ? 1 : 0) } == 1)
            let uploads = try #require(body["uploads"]?.objectValue)
            #expect(uploads["by_status"]?.objectValue?["complete"] == .int(1) && uploads["active"] == .int(1))
            #expect(uploads["bytes_received"] == .int(5) && uploads["success_rate"] == .double(1))
            #expect(body["streams"]?.objectValue?["open"] == .int(0) && body["models"] == .array([]))

            let day = try await Self.overview(client, "?minutes=1440")
            #expect(day.json["jobs"]?.objectValue?["bucket_seconds"] == .int(720))
            for bad in ["0", "1441", "ten"] {
                let refused = try await Self.overview(client, "?minutes=\(bad)")
                #expect(refused.status == .badRequest, "\(bad): \(refused.text)")
            }
        }
    }

    @Test("models: other instances' reports are summed with this one's, health comes from the shared store")
    func models() async throws {
        let path = try TestEnvironment.directory("admin-models").appendingPathComponent("models.json")
        try #"{"providers": {"up": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}}, "models": {"fast": {"provider": "up", "model": "x"}, "slow": {"provider": "up", "model": "y"}}, "chains": {"default": ["fast", "slow"]}}"#
            .write(to: path, atomically: true, encoding: .utf8)
        try await withTestApp(configure: { $0.adminToken = Self.token; $0.models.file = path.path }, runJobs: true) { app, client in
            let now = Date()
            let other = InstanceReport(
                id: "other-instance", version: "0.0.9", startedAt: now.addingTimeInterval(-300), seenAt: now.addingTimeInterval(-2),
                figures: .object([
                    "open_streams": .int(3), "open_connections": .int(7), "workers": .int(2), "busy_workers": .int(1), "draining": .bool(true),
                    "models": .object([
                        "fast": .object([
                            "attempts": .int(4), "failures": .object(["rate_limited": .int(1)]), "fallbacks_from": .int(1),
                            "input_tokens": .int(40), "output_tokens": .int(12), "ttft_count": .int(3), "ttft_total_ms": .double(600),
                            "ttft_recent_ms": .array([.double(100), .double(200), .double(300)]),
                        ])
                    ]),
                ]))
            try await app.store.overview.recordInstance(other)
            // An instance gone for longer than the window is not shown.
            var gone = other
            gone.id = "gone"
            gone.seenAt = now.addingTimeInterval(-7200)
            try await app.store.overview.recordInstance(gone)
            try await app.store.modelHealth.recordFailure(model: "fast", reason: "rate_limited", cooldown: .seconds(120), now: now)

            let body = try await Self.overview(client).json
            let instances = try #require(body["instances"]?.arrayValue).compactMap(\.objectValue)
            #expect(instances.map { $0["id"]?.stringValue } == [app.configuration.instanceID, "other-instance"])
            #expect(instances.last?["draining"] == .bool(true) && instances.last?["open_connections"] == .int(7))
            #expect(body["streams"]?.objectValue?["open"] == .int(3))
            let models = try #require(body["models"]?.arrayValue).compactMap(\.objectValue)
            #expect(models.map { $0["name"]?.stringValue } == ["fast", "slow"])
            let fast = try #require(models.first)
            #expect(fast["provider"] == .string("up") && fast["cooling"] == .bool(true) && fast["cooldown_reason"] == .string("rate_limited"))
            #expect(fast["consecutive_failures"] == .int(1) && fast["attempts"] == .int(4) && fast["fallbacks_from"] == .int(1))
            #expect(fast["failures"] == .object(["rate_limited": .int(1)]))
            #expect(fast["tokens"] == .object(["input": .int(40), "output": .int(12)]))
            #expect(fast["time_to_first_token_ms"] == .object(["count": .int(3), "mean": .double(200), "p50": .double(200), "p95": .double(300)]))
            let slow = try #require(models.last)
            #expect(slow["cooling"] == .bool(false) && slow["attempts"] == .int(0))
            #expect(slow["time_to_first_token_ms"]?.objectValue?["p50"] == .null)
        }
    }
}
