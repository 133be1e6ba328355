import AsyncHTTPClient
import Dispatch
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `Tests/Clients/models/fake_openai.py` (or another fake of that directory,
/// such as `fake_anthropic.py`) run as a child process for one test: it
/// prints its port on its first stdout line. The Python is
/// `KEEL_TEST_PYTHON` (default `python3`); the fake needs only the standard
/// library. ``startModel(log:)`` runs the real small model's server,
/// `smollm2_server.py`, the same way, under `KEEL_TEST_MODEL_PYTHON` with
/// `KEEL_TEST_MODEL_FILE` (both set by `scripts/test`).
final class FakeOpenAIUpstream: Sendable {
    let port: Int
    private let process: Process

    var baseURL: String { "http://127.0.0.1:\(self.port)/v1" }
    /// The server root, without the version (Anthropic's base URL).
    var rootURL: String { "http://127.0.0.1:\(self.port)" }

    static var python: String {
        ProcessInfo.processInfo.environment["KEEL_TEST_PYTHON"].flatMap { $0.isEmpty ? nil : $0 } ?? "python3"
    }

    static var scriptsDirectory: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Clients/models")
    }

    private init(port: Int, process: Process) {
        self.port = port
        self.process = process
    }

    /// The real model's Python and GGUF file, or `nil` when either variable is unset or empty.
    static var model: (python: String, file: String)? {
        let environment = ProcessInfo.processInfo.environment
        guard let python = environment["KEEL_TEST_MODEL_PYTHON"], !python.isEmpty,
            let file = environment["KEEL_TEST_MODEL_FILE"], !file.isEmpty
        else { return nil }
        return (python, file)
    }

    /// Starts the fake; `apiKey` makes it answer 401 to any other key;
    /// `arguments` are added to its command line.
    static func start(
        apiKey: String? = nil, script: String = "fake_openai.py", arguments: [String] = []
    ) async throws -> FakeOpenAIUpstream {
        try await self.start(script: script, python: self.python, arguments: (apiKey.map { ["--api-key", $0] } ?? []) + arguments)
    }

    /// Runs `body` with a fresh fake (`fake_openai.py`), stopped after it. A
    /// fake that cannot run skips the test locally and is an issue on CI.
    static func running(_ body: (FakeOpenAIUpstream) async throws -> Void) async throws {
        let fake: FakeOpenAIUpstream
        do {
            fake = try await Self.start()
        } catch {
            if ProcessInfo.processInfo.environment["CI"] == "true" { Issue.record("CI must run the fake upstream: \(error)") }
            try Test.cancel("skipped: the fake upstream cannot run: \(error)")
        }
        defer { fake.stop() }
        try await body(fake)
    }

    /// Starts `smollm2_server.py` with the real model (see ``model``), its
    /// stderr appended to `log` when given. Loading the model takes about a
    /// second, more on a loaded machine.
    static func startModel(log: URL? = nil) async throws -> FakeOpenAIUpstream {
        guard let model = self.model else {
            throw FakeOpenAIUpstreamError(message: "KEEL_TEST_MODEL_PYTHON and KEEL_TEST_MODEL_FILE are not set")
        }
        return try await self.start(
            script: "smollm2_server.py", python: model.python, arguments: ["--model", model.file], log: log)
    }

    /// Starts `script` of `Tests/Clients/models` under `python` and reads the
    /// port from its first stdout line.
    private static func start(script: String, python: String, arguments: [String], log: URL? = nil) async throws
        -> FakeOpenAIUpstream
    {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [python, self.scriptsDirectory.appendingPathComponent(script).path] + arguments
        let output = Pipe()
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = output
        var logHandle: FileHandle?
        if let log {
            if !FileManager.default.fileExists(atPath: log.path) {
                _ = FileManager.default.createFile(atPath: log.path, contents: nil)
            }
            logHandle = try FileHandle(forWritingTo: log)
            logHandle?.seekToEndOfFile()
        }
        process.standardError = logHandle ?? FileHandle.nullDevice
        defer { try? logHandle?.close() }  // the child has its own copy
        try process.run()
        let handle = output.fileHandleForReading
        // Reading the pipe blocks: do it on a Dispatch thread, not the cooperative pool.
        let line: String = try await withCheckedThrowingContinuation { continuation in
            DispatchQueue.global().async {
                var bytes: [UInt8] = []
                while !bytes.contains(0x0A) {
                    let data = handle.availableData
                    if data.isEmpty { break }
                    bytes += data
                }
                continuation.resume(returning: String(decoding: bytes, as: UTF8.self))
            }
        }
        guard let port = Int(line.trimmingCharacters(in: .whitespacesAndNewlines)), port > 0 else {
            process.terminate()
            let seeLog = log.map { " (its stderr: \($0.path))" } ?? ""
            throw FakeOpenAIUpstreamError(message: "\(script) printed no port: \(line.debugDescription)\(seeLog)")
        }
        return FakeOpenAIUpstream(port: port, process: process)
    }

    /// Stops the fake: SIGTERM, then SIGKILL if it is still running after 2 s.
    func stop() {
        guard self.process.isRunning else { return }
        self.process.terminate()
        for _ in 0..<200 where self.process.isRunning { usleep(10_000) }
        if self.process.isRunning { kill(self.process.processIdentifier, SIGKILL) }
        self.process.waitUntilExit()
    }

    /// What the fake was sent: one entry per request.
    func requests(_ client: HTTPClient) async throws -> [[String: Any]] {
        let response = try await client.execute(
            HTTPClientRequest(url: "http://127.0.0.1:\(self.port)/_fake/requests"), timeout: .seconds(10))
        let body = try await response.body.collect(upTo: 16 << 20)
        let object = try JSONSerialization.jsonObject(with: Data(body.readableBytesView))
        return try #require(object as? [[String: Any]])
    }
}

struct FakeOpenAIUpstreamError: Error, CustomStringConvertible {
    let message: String
    var description: String { self.message }
}
