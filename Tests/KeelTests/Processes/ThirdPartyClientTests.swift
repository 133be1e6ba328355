import Crypto
import Foundation
import KeelCore
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Real clients from other ecosystems against a real `keel serve`. They run
/// when `KEEL_TEST_PYTHON` names a Python with the packages of
/// `Tests/Clients/requirements.txt` (`scripts/test` always provides one).
@Suite("Third-party clients", .timeLimit(.minutes(3)))
struct ThirdPartyClientTests {
    static var python: String? {
        ProcessInfo.processInfo.environment["KEEL_TEST_PYTHON"].flatMap { $0.isEmpty ? nil : $0 }
    }

    static var clientsDirectory: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Clients")
    }

    /// `scripts/test` installs Debian's chromium and chromium-driver and sets this.
    static var chromium: Bool { ProcessInfo.processInfo.environment["KEEL_TEST_CHROMIUM"] == "1" }

    @Test(
        "a browser's EventSource follows a job from another origin with the session cookie, sees every event once, and stops after done (204)",
        .enabled(if: python != nil && chromium))
    func browserEventSource() async throws {
        let pagePort = try freePort()
        let fixture = try await StoreFixture.make(.sqlite)
        let server = try await KeelProcess.serve(
            store: fixture.location,
            arguments: ["--cors-origins", "http://127.0.0.1:\(pagePort)", "--sse-retry", "200ms", "--job-retry-backoff", "100ms"])
        defer { server.signal(SIGKILL) }
        // The page comes from another origin: a second port.
        let site = Process()
        site.executableURL = URL(fileURLWithPath: try #require(Self.python))
        site.arguments = ["-m", "http.server", String(pagePort), "--bind", "127.0.0.1", "--directory", Self.clientsDirectory.appendingPathComponent("browser").path]
        site.standardOutput = FileHandle.nullDevice
        site.standardError = FileHandle.nullDevice
        try site.run()
        // SIGKILL, not terminate(): the child inherits the spawning thread's
        // signal mask, which blocks SIGTERM, and Python never unblocks it, so
        // a SIGTERM stays pending and the page server outlived the tests.
        defer { kill(site.processIdentifier, SIGKILL) }
        try await waitFor("the page server") {
            (try? await HTTP.send(.GET, "http://127.0.0.1:\(pagePort)/events.html").status) == 200
        }

        let finished = try await ChildProcess.run(try #require(Self.python), [
            Self.clientsDirectory.appendingPathComponent("browser/check.py").path,
            "http://127.0.0.1:\(pagePort)/events.html?keel=\(server.baseURL)",
        ])
        let printed = finished.output + finished.errors
        #expect(finished.status == 0, "\(printed)")
        #expect(printed.contains("PASS"), "\(printed)")
    }

    @Test("tuspy (the official Python tus client) uploads, resumes from HEAD with sha1 checksums, and the stored file matches", .enabled(if: python != nil))
    func tuspy() async throws {
        let fixture = try await StoreFixture.make(.sqlite)
        let server = try await KeelProcess.serve(store: fixture.location)
        defer { server.signal(SIGKILL) }
        let token = try await MultiProcessJobTests.session(on: server)
        let content = try await randomBytes(megabytes: 7)
        let file = fixture.directory.appendingPathComponent("source.bin")
        try Data(content).write(to: file)

        let finished = try await ChildProcess.run(
            try #require(Self.python), [Self.clientsDirectory.appendingPathComponent("tuspy_upload.py").path, server.baseURL, token, file.path])
        #expect(finished.status == 0, "\(finished.errors)")
        let report = try JSONValue.parse(Array(finished.output.utf8)).objectValue ?? [:]
        // The first uploader stopped at half; the second learned that from HEAD.
        #expect(report["resumed_from"] == .int(Int64(content.count / 2)))
        let url = try #require(report["url"]?.stringValue)
        #expect(url.hasPrefix(server.baseURL + "/api/uploads/"))
        let location = String(url.dropFirst(server.baseURL.count))
        try await MultiProcessUploadTests.verify(server, location, token: token, content: content)
        #expect(server.log.contains("upload complete"))
    }
}
