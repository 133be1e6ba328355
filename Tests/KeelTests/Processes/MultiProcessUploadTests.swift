import AsyncHTTPClient
import Crypto
import Foundation
import KeelCore
import NIOCore
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Real `keel serve` processes sharing one store take turns receiving one
/// upload; one is SIGKILLed mid-PATCH and restarted; the file still arrives
/// intact. Racing clients never corrupt it.
@Suite("Uploads across processes", .timeLimit(.minutes(6)))
struct MultiProcessUploadTests {
    /// Commit every MiB, so a PATCH cut off mid-way leaves a partial prefix; take over a dead holder after 2 s.
    static let arguments = ["--upload-commit-bytes", "1048576", "--upload-lock-timeout", "2s"]
    static let chunk = 5 * 1_048_576

    static func create(_ server: KeelProcess, token: String, length: Int) async throws -> String {
        let created = try await HTTP.send(
            .POST, server.baseURL + "/api/uploads", token: token,
            headers: [("Tus-Resumable", "1.0.0"), ("Upload-Length", String(length)), ("Upload-Metadata", "filename dmlkZW8ubXA0")])
        #expect(created.status == 201, "\(created.body)")
        return try #require(created.headers.first(name: "Location"))
    }

    static func offset(_ server: KeelProcess, _ location: String, token: String) async throws -> Int? {
        let head = try await HTTP.send(.HEAD, server.baseURL + location, token: token, headers: [("Tus-Resumable", "1.0.0")], timeout: .seconds(10))
        return head.headers.first(name: "Upload-Offset").flatMap { Int($0) }
    }

    /// The PATCH body bytes a server has read so far (`keel_upload_bytes_received_total`).
    static func bytesReceived(_ server: KeelProcess) async throws -> Int {
        let metrics = try await HTTP.send(.GET, server.baseURL + "/metrics", timeout: .seconds(10))
        let line = metrics.body.split(separator: "\n").first { $0.hasPrefix("keel_upload_bytes_received_total") }
        return line.flatMap { $0.split(separator: " ").last }.flatMap { Double($0) }.map { Int($0) } ?? 0
    }

    /// One PATCH; the body is streamed, optionally pausing after `pauseAfter` bytes until `resume` returns.
    static func patch(
        _ server: KeelProcess, _ location: String, token: String, offset: Int, bytes: ArraySlice<UInt8>,
        pauseAfter: Int? = nil, whilePaused: (@Sendable () async throws -> Void)? = nil
    ) async throws -> HTTP.Result {
        var request = HTTPClientRequest(url: server.baseURL + location)
        request.method = .PATCH
        request.headers.add(name: "Authorization", value: "Bearer \(token)")
        request.headers.add(name: "Tus-Resumable", value: "1.0.0")
        request.headers.add(name: "Upload-Offset", value: String(offset))
        request.headers.add(name: "Content-Type", value: "application/offset+octet-stream")
        let pieces = AsyncStream<ByteBuffer> { continuation in
            Task {
                var sent = 0
                for start in stride(from: bytes.startIndex, to: bytes.endIndex, by: 256 * 1024) {
                    let piece = bytes[start..<min(start + 256 * 1024, bytes.endIndex)]
                    continuation.yield(ByteBuffer(bytes: piece))
                    sent += piece.count
                    if let pauseAfter, sent >= pauseAfter, let whilePaused {
                        try? await Task.sleep(for: .milliseconds(300))
                        try? await whilePaused()
                        break
                    }
                }
                continuation.finish()
            }
        }
        request.body = .stream(pieces, length: .known(Int64(bytes.count)))
        return try await HTTP.execute(request, timeout: .seconds(60))
    }

    /// Sends everything from the server's offset on, alternating servers per chunk, retrying through 423/409/errors.
    static func upload(_ content: [UInt8], location: String, token: String, servers: @Sendable () -> [KeelProcess]) async throws {
        var turn = 0
        var failures = 0
        while true {
            let server = servers()[turn % servers().count]
            turn += 1
            guard let offset = try? await Self.offset(server, location, token: token) else {
                failures += 1
                #expect(failures < 50)
                try await Task.sleep(for: .milliseconds(200))
                continue
            }
            if offset == content.count { return }
            let end = min(offset + Self.chunk, content.count)
            let result = try? await Self.patch(server, location, token: token, offset: offset, bytes: content[offset..<end])
            if result?.status != 204 {
                failures += 1
                #expect(failures < 50, "\(result?.status ?? 0) \(result?.body ?? "connection error")")
                if failures >= 50 { return }
                try await Task.sleep(for: .milliseconds(result?.status == 423 ? 500 : 100))
            }
        }
    }

    /// Reads `/info` until the server has the SHA-256 (an upload over
    /// `--upload-digest-inline-max` is hashed by a job, named as `sha256_job`).
    static func verify(_ server: KeelProcess, _ location: String, token: String, content: [UInt8]) async throws {
        var info = try await HTTP.send(.GET, server.baseURL + location + "/info", token: token, timeout: .seconds(120))
        let deadline = ContinuousClock.now + .seconds(120)
        while info.json["sha256"] == .null || info.json["sha256"] == nil, info.json["sha256_job"] != nil, ContinuousClock.now < deadline {
            #expect(info.headers.first(name: "Retry-After") == "2")
            try await Task.sleep(for: .milliseconds(200))
            info = try await HTTP.send(.GET, server.baseURL + location + "/info", token: token, timeout: .seconds(120))
        }
        #expect(info.json["status"] == .string("complete"), "\(info.body)")
        #expect(info.json["offset"] == .int(Int64(content.count)))
        #expect(info.json["sha256"] == .string(try await sha256Hex(content)))
    }

    @Test("160 MB in 5 MB chunks alternating between two processes; one SIGKILLed mid-PATCH and restarted; the stored file's sha256 matches", arguments: Driver.available)
    func killedMidPatch(driver: Driver) async throws {
        let fixture = try await StoreFixture.make(driver)
        let a = try await KeelProcess.serve(store: fixture.location, arguments: Self.arguments)
        let b = try await KeelProcess.serve(store: fixture.location, arguments: Self.arguments)
        let servers = ServerList([a, b])
        defer { servers.killAll() }
        let content = try await randomBytes(megabytes: 160)
        let token = try await MultiProcessJobTests.session(on: a)
        let location = try await Self.create(b, token: token, length: content.count)

        // The first 40 MB alternate between A and B.
        for (index, start) in stride(from: 0, to: 40 * 1_048_576, by: Self.chunk).enumerated() {
            let server = index % 2 == 0 ? a : b
            let result = try await Self.patch(server, location, token: token, offset: start, bytes: content[start..<(start + Self.chunk)])
            #expect(result.status == 204, "\(result.body)")
        }
        // A PATCH to A is cut off by SIGKILL after 3.5 MB have been sent, once A
        // has committed some of them (B sees the offset move past the PATCH's
        // start): killing earlier would prove nothing about what a kill keeps.
        let start = 40 * 1_048_576
        let killed = try? await Self.patch(
            a, location, token: token, offset: start, bytes: content[start..<(start + Self.chunk)], pauseAfter: 3 * 1_048_576 + 524_288,
            whilePaused: {
                try await waitFor("A to commit part of the PATCH") { (try await Self.offset(b, location, token: token) ?? 0) > start }
                a.signal(SIGKILL)
            })
        #expect(killed == nil || killed?.status != 204)
        _ = await a.waitForExit()
        // B reports a consistent prefix: at least where the PATCH began, never past what A received.
        let prefix = try #require(try await Self.offset(b, location, token: token))
        // The kill kept at least one committed megabyte, and nothing A had not received.
        #expect(prefix >= start + 1_048_576 && prefix <= start + 3 * 1_048_576 + 524_288, "offset \(prefix)")
        print("upload prefix after SIGKILL: \(prefix - start) bytes past the PATCH start")
        // A comes back on the same port; the client resumes from HEAD, alternating again.
        let restarted = try await KeelProcess.serve(store: fixture.location, port: a.port, arguments: Self.arguments)
        servers.replace(a, with: restarted)
        try await Self.upload(content, location: location, token: token, servers: { servers.current })
        try await Self.verify(b, location, token: token, content: content)
        try await Self.verify(restarted, location, token: token, content: content)
        #expect(b.log.contains("upload complete") || restarted.log.contains("upload complete"))
    }

    @Test("a client that disconnects mid-PATCH and a server stopped by SIGTERM mid-PATCH both leave every received byte, and no lock behind", arguments: [Driver.sqlite])
    func brokenOff(driver: Driver) async throws {
        let fixture = try await StoreFixture.make(driver)
        let a = try await KeelProcess.serve(store: fixture.location, arguments: Self.arguments + ["--drain-timeout", "1s"])
        let b = try await KeelProcess.serve(store: fixture.location, arguments: Self.arguments)
        let servers = ServerList([a, b])
        defer { servers.killAll() }
        let content = try await randomBytes(megabytes: 10)
        let token = try await MultiProcessJobTests.session(on: a)
        let location = try await Self.create(b, token: token, length: content.count)

        // The client gives up after 1.5 MiB (not a multiple of the commit size).
        let sent = 1_048_576 + 524_288
        let readBeforeB = try await Self.bytesReceived(b)
        let abandoned = Task {
            try await Self.patch(b, location, token: token, offset: 0, bytes: content[0..<Self.chunk], pauseAfter: sent, whilePaused: {
                try await Task.sleep(for: .seconds(60))
            })
        }
        // Only once B has read them all: on a loaded machine a fixed wait
        // could cancel before the last bytes left the client.
        try await waitFor("B to read the 1.5 MiB sent") { try await Self.bytesReceived(b) >= readBeforeB + sent }
        abandoned.cancel()
        try await waitFor("the disconnected PATCH's bytes to be committed") {
            try await Self.offset(a, location, token: token) == sent
        }
        // Its lease was released: the next PATCH proceeds at once.
        let next = try await Self.patch(a, location, token: token, offset: sent, bytes: content[sent..<(sent + 1_048_576)])
        #expect(next.status == 204, "\(next.body)")

        // A receives 2.5 MiB more, then gets SIGTERM while the body is still open.
        let start = sent + 1_048_576
        let paused = 2 * 1_048_576 + 524_288
        let readBefore = try await Self.bytesReceived(a)
        let stopped = try? await Self.patch(
            a, location, token: token, offset: start, bytes: content[start..<(start + Self.chunk)], pauseAfter: paused,
            whilePaused: {
                // Only once A has read them: on a loaded machine the last
                // bytes sent can still be in the socket.
                try await waitFor("A to read the 2.5 MiB sent") { try await Self.bytesReceived(a) >= readBefore + paused }
                a.signal(SIGTERM)
                #expect(await a.waitForExit() == 0)
            })
        #expect(stopped?.status != 204)
        #expect(try await Self.offset(b, location, token: token) == start + paused)
        try await Self.upload(content, location: location, token: token, servers: { [b] })
        try await Self.verify(b, location, token: token, content: content)
    }

    @Test("two clients racing PATCHes on one upload through two processes never corrupt it", arguments: Driver.available)
    func racingClients(driver: Driver) async throws {
        let fixture = try await StoreFixture.make(driver)
        let a = try await KeelProcess.serve(store: fixture.location, arguments: Self.arguments)
        let b = try await KeelProcess.serve(store: fixture.location, arguments: Self.arguments)
        let servers = ServerList([a, b])
        defer { servers.killAll() }
        let content = try await randomBytes(megabytes: 48)
        let token = try await MultiProcessJobTests.session(on: a)
        let location = try await Self.create(a, token: token, length: content.count)
        // The same file, sent by two clients at once, each starting on a different process.
        async let first: Void = Self.upload(content, location: location, token: token, servers: { [a, b] })
        async let second: Void = Self.upload(content, location: location, token: token, servers: { [b, a] })
        _ = try await (first, second)
        try await Self.verify(a, location, token: token, content: content)
        // A rogue PATCH at a stale offset changes nothing.
        let rogue = try await Self.patch(b, location, token: token, offset: 0, bytes: ArraySlice(Array(repeating: 0, count: 1000)))
        #expect(rogue.status == 409)
        try await Self.verify(b, location, token: token, content: content)
    }
}

/// The processes a test talks to, as one changes on restart.
final class ServerList: Sendable {
    private let servers: Mutex<[KeelProcess]>

    init(_ servers: [KeelProcess]) { self.servers = Mutex(servers) }

    var current: [KeelProcess] { self.servers.withLock { $0 } }

    func replace(_ old: KeelProcess, with new: KeelProcess) {
        self.servers.withLock { servers in
            servers = servers.map { $0 === old ? new : $0 }
        }
    }

    func killAll() {
        for server in self.current { server.signal(SIGKILL) }
    }
}
