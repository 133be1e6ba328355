import AsyncHTTPClient
import Foundation
import KeelCore
import NIOCore
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Real `keel serve` processes sharing one store: what one writes, the other
/// reads; concurrent writers lose nothing; a killed process loses nothing.
@Suite("Sessions across processes", .timeLimit(.minutes(3)))
struct MultiProcessSessionTests {
    @Test("two processes share sessions, lose no concurrent patch, and survive SIGKILL", arguments: Driver.available)
    func sharedSessions(driver: Driver) async throws {
        let fixture = try await StoreFixture.make(driver)
        // A runs its handlers on the event loops, B on Swift's pool: the guarantees hold for both.
        var a = try await KeelProcess.serve(store: fixture.location, arguments: ["--executor", "event-loops"])
        let b = try await KeelProcess.serve(store: fixture.location)
        defer {
            a.signal(SIGKILL)
            b.signal(SIGKILL)
        }
        #expect(a.log.contains("keel.executor=event-loops"))
        #expect(b.log.contains("keel.executor=pool"))

        // Created on A (which also generated and stored the signing secret), read and patched on B.
        let created = try await HTTP.send(.POST, a.baseURL + "/api/session", body: #"{"data":{"origin":"a"}}"#)
        #expect(created.status == 201)
        let token = try #require(created.json["token"]?.stringValue)
        let readOnB = try await HTTP.send(.GET, b.baseURL + "/api/session", token: token)
        #expect(readOnB.status == 200)
        #expect(readOnB.json["data"] == .object(["origin": .string("a")]))
        #expect(readOnB.headers.first(name: "Keel-Instance") == "proc-\(b.port)")
        let patchedOnB = try await HTTP.send(.PATCH, b.baseURL + "/api/session", token: token, body: #"{"patched_by":"b"}"#)
        #expect(patchedOnB.status == 200)
        let readOnA = try await HTTP.send(.GET, a.baseURL + "/api/session", token: token)
        #expect(readOnA.json["data"]?.objectValue?["patched_by"] == .string("b"))

        // 50 concurrent patches, alternating between the processes, each adding its own key.
        let servers = [a.baseURL, b.baseURL]
        let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
            for index in 0..<50 {
                group.addTask {
                    try await HTTP.send(.PATCH, servers[index % 2] + "/api/session", token: token, body: #"{"k\#(index)":\#(index)}"#).status
                }
            }
            return try await group.reduce(into: [Int]()) { $0.append($1) }
        }
        #expect(statuses.allSatisfy { $0 == 200 }, "statuses: \(statuses)")
        let afterRace = try await HTTP.send(.GET, b.baseURL + "/api/session", token: token)
        let data = try #require(afterRace.json["data"]?.objectValue)
        for index in 0..<50 {
            #expect(data["k\(index)"] == .int(Int64(index)), "patch \(index) was lost")
        }
        #expect(afterRace.json["version"] == .int(52))

        // A dies without any chance to clean up, then comes back on the same port.
        a.signal(SIGKILL)
        #expect(await a.waitForExit() != 0)
        #expect(try await HTTP.send(.GET, b.baseURL + "/api/session", token: token).status == 200)
        a = try await KeelProcess.serve(store: fixture.location, port: a.port, arguments: ["--executor", "event-loops"])
        let afterRestart = try await HTTP.send(.GET, a.baseURL + "/api/session", token: token)
        #expect(afterRestart.status == 200)
        #expect(afterRestart.json["data"] == afterRace.json["data"])
        #expect(afterRestart.json["version"] == .int(52))

        #expect(await a.stop() == 0)
        #expect(await b.stop() == 0)
    }

    @Test("SIGTERM drains: /ready turns 503 at once, an in-flight request completes, exit 0")
    func drain() async throws {
        let fixture = try await StoreFixture.make(.sqlite)
        // A drain delay of 5 s: /ready must be seen answering 503 within it, and a test run
        // loads the machine enough for a request to take a second or more.
        let keel = try await KeelProcess.serve(store: fixture.location, arguments: ["--drain-delay", "5s", "--drain-timeout", "60s"])
        defer { keel.signal(SIGKILL) }
        let token = try #require(try await HTTP.send(.POST, keel.baseURL + "/api/session").json["token"]?.stringValue)

        // A slow client: the PATCH body arrives in two parts, with SIGTERM in between.
        let payload = #"{"slow":"\#(String(repeating: "z", count: 4000))"}"#
        let bytes = Array(payload.utf8)
        let (parts, feed) = AsyncStream.makeStream(of: ByteBuffer.self)
        var request = HTTPClientRequest(url: keel.baseURL + "/api/session")
        request.method = .PATCH
        request.headers.add(name: "Authorization", value: "Bearer \(token)")
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .stream(parts, length: .known(Int64(bytes.count)))
        let slowPatch = Task { try await HTTP.execute(request) }

        feed.yield(ByteBuffer(bytes: bytes[..<1000]))
        try await Task.sleep(for: .milliseconds(300))
        keel.signal(SIGTERM)
        let signalled = ContinuousClock.now

        var sawNotReady = false
        var polls: [String] = []
        for _ in 0..<20 {
            let ready: HTTP.Result
            do {
                ready = try await HTTP.send(.GET, keel.baseURL + "/ready", timeout: .seconds(2))
                polls.append("\(ContinuousClock.now - signalled): \(ready.status)")
            } catch {
                polls.append("\(ContinuousClock.now - signalled): \(error)")
                try await Task.sleep(for: .milliseconds(50))
                continue
            }
            if ready.status == 503 {
                #expect(ready.errorCode == "draining")
                sawNotReady = true
                break
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(sawNotReady, "/ready never answered 503 during the drain; polls after SIGTERM: \(polls)")

        // The rest of the body comes after the server has stopped accepting connections.
        try await waitFor("the drain delay to end") { keel.log.contains("drain delay over") }
        // The listener closes once the delay is over: new connections are refused
        // while the in-flight request still has its connection.
        try await waitFor("the listener to close") { !canConnect(port: keel.port) }
        feed.yield(ByteBuffer(bytes: bytes[1000...]))
        feed.finish()
        let response = try await slowPatch.value
        #expect(response.status == 200)
        #expect(response.json["data"]?.objectValue?["slow"]?.stringValue?.count == 4000)
        #expect(await keel.waitForExit() == 0, "log:\n\(keel.log)")

        let restarted = try await KeelProcess.serve(store: fixture.location)
        let stored = try await HTTP.send(.GET, restarted.baseURL + "/api/session", token: token)
        #expect(stored.json["data"]?.objectValue?["slow"]?.stringValue?.count == 4000)
        #expect(await restarted.stop() == 0)
    }
}

@Suite("Command line", .timeLimit(.minutes(2)))
struct CommandLineTests {
    @Test("keel --version prints the version")
    func version() async throws {
        let (status, output) = try await KeelProcess.run(["--version"])
        #expect(status == 0)
        #expect(output.trimmingCharacters(in: .whitespacesAndNewlines) == KeelVersion.current)
    }

    @Test("keel migrate applies the schema once", arguments: Driver.available)
    func migrate(driver: Driver) async throws {
        let fixture = try await StoreFixture.make(driver)
        let store = fixture.location.commandLineValue
        let first = try await KeelProcess.run(["migrate", "--store", store])
        #expect(first.status == 0, "\(first.output)")
        #expect(first.output.contains("migrated from version 0"))
        let second = try await KeelProcess.run(["migrate", "--store", store])
        #expect(second.output.contains("nothing to apply"))
    }

    @Test("serve refuses CORS origin * with credentials, and says why")
    func refusesWildcardCredentials() async throws {
        let fixture = try await StoreFixture.make(.sqlite)
        let (status, output) = try await KeelProcess.run(
            ["serve", "--port", String(try freePort()), "--store", fixture.location.commandLineValue],
            environment: ["KEEL_CORS_ORIGINS": "*"]
        )
        #expect(status == 2)
        #expect(output.contains("credentials"))
        #expect(output.contains("hint:"))
    }

    @Test("an older binary refuses a store migrated by a newer one", arguments: Driver.available)
    func refusesNewerSchema(driver: Driver) async throws {
        let fixture = try await StoreFixture.make(driver)
        try await fixture.withStore { _ in }
        try await fixture.execute("INSERT INTO keel_schema_migrations (version, name, applied_at) VALUES (42, 'future', 0)")
        let (status, output) = try await KeelProcess.run(["serve", "--port", String(try freePort()), "--store", fixture.location.commandLineValue])
        #expect(status == 1)
        #expect(output.contains("version 42"), "\(output)")
    }
}

extension StoreLocation {
    var commandLineValue: String {
        switch self {
        case .sqlite(let path): "sqlite:\(path)"
        case .postgres(let url): url
        }
    }
}
