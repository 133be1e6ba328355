import Foundation
import KeelCore
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// What a black-box attack on `keel serve` found (issue 15), kept as
/// regression tests: a hostile client's raw-socket requests
/// (`Tests/Clients/hostile_client.py`, standard library only) against a real
/// server with short timeouts and small quotas. Each case runs on a server
/// of its own.
@Suite("Hostile clients", .serialized, .timeLimit(.minutes(5)))
struct HardeningTests {
    static var python: String? {
        ProcessInfo.processInfo.environment["KEEL_TEST_PYTHON"].flatMap { $0.isEmpty ? nil : $0 } ?? "/usr/bin/python3"
    }

    /// The settings `hostile_client.py` assumes.
    static let serverArguments = [
        "--header-timeout", "1s", "--idle-timeout", "2s", "--body-timeout", "1s", "--linger-timeout", "1s",
        "--sse-heartbeat", "30s", "--session-create-rate", "8", "--session-max-active-jobs", "3", "--job-max-events", "40",
        "--trusted-proxies", "127.0.0.1", "--workers", "4", "--job-retry-backoff", "100ms",
    ]

    static let cases = [
        "sse_abort", "slow_headers", "idle_keepalive", "silent_connection", "slow_body", "early_answer_unread_body", "framing_faults",
        "parser_rejections", "methods", "uploads", "json_content_type", "quotas", "job_quotas", "ops_endpoints", "sse_retry_with_first_event",
    ]

    @Test("a hostile client's case is refused cleanly", arguments: cases)
    func hostile(_ name: String) async throws {
        let fixture = try await StoreFixture.make(.sqlite)
        let server = try await KeelProcess.serve(store: fixture.location, arguments: Self.serverArguments)
        defer { server.signal(SIGKILL) }
        let script = ThirdPartyClientTests.clientsDirectory.appendingPathComponent("hostile_client.py").path
        let finished = try await ChildProcess.run(try #require(Self.python), [script, server.baseURL, name])
        let report = (try? JSONValue.parse(Array(finished.output.utf8)).objectValue) ?? [:]
        #expect(finished.status == 0 && report["ok"] == .bool(true), "\(finished.output)\(finished.errors)\n\(server.logTail())")
    }

    @Test("past --max-connections new connections wait, the limit is logged and counted, and the server serves again when they close")
    func connectionLimit() async throws {
        let fixture = try await StoreFixture.make(.sqlite)
        // Held connections must not time out while the case runs (a later flag wins).
        let server = try await KeelProcess.serve(
            store: fixture.location, arguments: Self.serverArguments + ["--max-connections", "40", "--idle-timeout", "30s", "--header-timeout", "30s"])
        defer { server.signal(SIGKILL) }
        let finished = try await Self.run("connection_limit", on: server)
        #expect(finished.status == 0, "\(finished.output)\(finished.errors)\n\(server.logTail())")
        #expect(server.log.contains("connection limit reached"), "\(server.logTail())")
    }

    @Test("out of file descriptors: accepts back off without spinning, the failure is logged and counted, and the server recovers")
    func fileDescriptorExhaustion() async throws {
        let fixture = try await StoreFixture.make(.sqlite)
        let server = try await KeelProcess.serve(
            store: fixture.location, arguments: Self.serverArguments + ["--max-connections", "1000"], fileLimit: 64)
        defer { server.signal(SIGKILL) }
        let finished = try await Self.run("fd_exhaustion", on: server)
        #expect(finished.status == 0, "\(finished.output)\(finished.errors)\n\(server.logTail())")
        #expect(server.log.contains("out of file descriptors"), "\(server.logTail())")
    }

    static func run(_ name: String, on server: KeelProcess) async throws -> ChildProcess.Finished {
        let script = ThirdPartyClientTests.clientsDirectory.appendingPathComponent("hostile_client.py").path
        return try await ChildProcess.run(try #require(Self.python), [script, server.baseURL, name], environment: ["KEEL_PID": String(server.pid)])
    }
}
