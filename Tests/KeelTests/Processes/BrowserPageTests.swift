import Foundation
import KeelCore
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The pages in a real browser: `Tests/Clients/browser/keel_page.py` drives
/// Debian's Chromium through Selenium against a real `keel serve` answered by
/// the fake model upstream. The cluster form (three instances behind nginx,
/// the stream's instance SIGKILLed mid-answer) is a phase of
/// `scripts/cluster`. Runs when `scripts/test` provides the Python clients
/// and Chromium (`KEEL_TEST_CHROMIUM=1`).
@Suite("Browser pages", .timeLimit(.minutes(4)))
struct BrowserPageTests {
    static let adminToken = "browser-admin-token-0123456789"
    static let question = "What does the report conclude?"
    /// The fake model's answer: `slow-30-40` is 30 tokens 40 ms apart.
    static let answer = (0..<30).map { "tok\($0) " }.joined()

    static var enabled: Bool { ThirdPartyClientTests.python != nil && ThirdPartyClientTests.chromium }

    static var docx: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/documents/report.docx").path
    }

    static var webDirectory: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Sources/KeelServer/Web").path
    }

    static func modelsFile(_ fake: FakeOpenAIUpstream) throws -> String {
        let path = try TestEnvironment.directory("browser-models").appendingPathComponent("models.json")
        try #"{"providers": {"fake": {"kind": "openai", "base_url": "\#(fake.baseURL)"}}, "models": {"storyteller": {"provider": "fake", "model": "slow-30-40"}}, "chains": {"default": ["storyteller"]}}"#
            .write(to: path, atomically: true, encoding: .utf8)
        return path.path
    }

    /// Runs the driver; returns its JSON line once it printed PASS.
    static func drive(_ arguments: [String]) async throws -> [String: JSONValue] {
        let finished = try await ChildProcess.run(
            try #require(ThirdPartyClientTests.python), [ThirdPartyClientTests.clientsDirectory.appendingPathComponent("browser/keel_page.py").path] + arguments)
        let printed = finished.output + finished.errors
        #expect(finished.status == 0, "\(printed)")
        #expect(finished.output.split(separator: "\n").contains("PASS"), "\(printed)")
        let line = finished.output.split(separator: "\n").last { $0.hasPrefix("{") }
        return try line.map { try JSONValue.parse(Array($0.utf8)).objectValue ?? [:] } ?? [:]
    }

    @Test(
        "served by Keel: upload a DOCX, see its sections, ask, read the streamed answer with its source and model; the admin page shows the upload and the chat",
        .enabled(if: enabled))
    func sameOrigin() async throws {
        try await FakeOpenAIUpstream.running { fake in
            let fixture = try await StoreFixture.make(.sqlite)
            let server = try await KeelProcess.serve(
                store: fixture.location, arguments: ["--models", try Self.modelsFile(fake)], environment: ["KEEL_ADMIN_TOKEN": Self.adminToken])
            defer { server.signal(SIGKILL) }
            let screenshots = fixture.directory.appendingPathComponent("screenshots")
            let result = try await Self.drive([
                "single", "--page", server.baseURL + "/", "--docx", Self.docx, "--question", Self.question, "--expect-text", Self.answer,
                "--admin", server.baseURL + "/admin", "--admin-token", Self.adminToken, "--screenshots", screenshots.path,
            ])
            #expect(result["first_token_ms"] != nil, "\(result)")
            for name in ["app.png", "admin.png"] {
                #expect(FileManager.default.fileExists(atPath: screenshots.appendingPathComponent(name).path), "\(name)")
            }
        }
    }

    @Test(
        "an upload resumes after a reload; Stop keeps the partial answer, stopped, with its model; chats reopen with each answer once; fallbacks shown; usable at 360 px and by keyboard",
        .enabled(if: enabled))
    func extras() async throws {
        try await FakeOpenAIUpstream.running { fake in
            let fixture = try await StoreFixture.make(.sqlite)
            // Every answer falls back from a model that always fails (no cooldown, so it is tried each time).
            let models = fixture.directory.appendingPathComponent("models.json")
            try #"{"providers": {"fake": {"kind": "openai", "base_url": "\#(fake.baseURL)"}}, "models": {"broken": {"provider": "fake", "model": "server-error"}, "slow": {"provider": "fake", "model": "slow-300-50"}}, "chains": {"default": ["broken", "slow"]}}"#
                .write(to: models, atomically: true, encoding: .utf8)
            // 40 MB of text: big enough that a throttled upload is caught mid-way by a reload.
            let big = fixture.directory.appendingPathComponent("big.txt")
            let line = Array("the quick brown fox jumps over the lazy dog, again and again\n".utf8)
            try Data((0..<(40_000_000 / line.count)).flatMap { _ in line }).write(to: big)
            let server = try await KeelProcess.serve(
                store: fixture.location,
                arguments: ["--models", models.path, "--model-cooldown", "0s", "--document-max-characters", "50000000"])
            defer { server.signal(SIGKILL) }
            let result = try await Self.drive([
                "extras", "--page", server.baseURL + "/", "--docx", Self.docx, "--big", big.path,
                "--expect-text", (0..<300).map { "tok\($0) " }.joined(),
            ])
            #expect(result["fallback"] != nil, "\(result)")
        }
    }

    @Test("from another origin: the same page against Keel's API with --cors-origins and the session cookie sent by credentials", .enabled(if: enabled))
    func crossOrigin() async throws {
        try await FakeOpenAIUpstream.running { fake in
            let pagePort = try freePort()
            let fixture = try await StoreFixture.make(.sqlite)
            let server = try await KeelProcess.serve(
                store: fixture.location,
                arguments: ["--models", try Self.modelsFile(fake), "--cors-origins", "http://127.0.0.1:\(pagePort)"])
            defer { server.signal(SIGKILL) }
            let site = Process()
            site.executableURL = URL(fileURLWithPath: try #require(ThirdPartyClientTests.python))
            site.arguments = ["-m", "http.server", String(pagePort), "--bind", "127.0.0.1", "--directory", Self.webDirectory]
            site.standardOutput = FileHandle.nullDevice
            site.standardError = FileHandle.nullDevice
            try site.run()
            // SIGKILL: the child inherits a mask that blocks SIGTERM (see ThirdPartyClientTests).
            defer { kill(site.processIdentifier, SIGKILL) }
            try await waitFor("the page server") {
                (try? await HTTP.send(.GET, "http://127.0.0.1:\(pagePort)/index.html").status) == 200
            }
            _ = try await Self.drive([
                "single", "--page", "http://127.0.0.1:\(pagePort)/index.html?api=\(server.baseURL)", "--docx", Self.docx,
                "--question", Self.question, "--expect-text", Self.answer,
            ])
        }
    }
}
