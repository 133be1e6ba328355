import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// botocore as the reference for Keel's Bedrock framing and signing: the
/// scripts in `Tests/Clients/models/` run under the Python named by
/// `KEEL_TEST_PYTHON` (default `python3`). Without Python or botocore the
/// tests are skipped locally, but on CI (`CI=true`) that is a failure: CI
/// must prove the bytes against botocore.
enum BotocoreReference {
    struct Finished: Sendable {
        let status: Int32
        let output: Data
        let errors: String
    }

    static var python: String {
        ProcessInfo.processInfo.environment["KEEL_TEST_PYTHON"].flatMap { $0.isEmpty ? nil : $0 } ?? "python3"
    }

    static var scriptsDirectory: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Clients/models")
    }

    /// Returns normally when botocore can be imported; otherwise records an
    /// Issue on CI, and cancels the test (a skip) everywhere.
    static func requireBotocore() async throws {
        let probe = try? await self.run(["-c", "import botocore"])
        guard let probe, probe.status == 0 else {
            let why = "\(self.python) cannot import botocore (pip install botocore, or set KEEL_TEST_PYTHON)"
            if ProcessInfo.processInfo.environment["CI"] == "true" {
                Issue.record("CI must have botocore: \(why); \(probe?.errors ?? "python did not start")")
            }
            try Test.cancel("skipped: \(why)")
        }
    }

    /// Runs one of the scripts and parses its standard output as JSON.
    static func json(_ script: String, _ arguments: [String] = []) async throws -> [String: Any] {
        let finished = try await self.run([self.scriptsDirectory.appendingPathComponent(script).path] + arguments)
        try #require(finished.status == 0, "\(script) failed: \(finished.errors)")
        let object = try JSONSerialization.jsonObject(with: finished.output)
        return try #require(object as? [String: Any], "\(script) printed no JSON object")
    }

    /// Runs the Python with `arguments`, its output in files (a pipe fills
    /// up and blocks a large print), without holding a cooperative thread
    /// while it runs.
    static func run(_ arguments: [String]) async throws -> Finished {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("keel-botocore-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let outputURL = directory.appendingPathComponent("stdout")
        let errorsURL = directory.appendingPathComponent("stderr")
        _ = FileManager.default.createFile(atPath: outputURL.path, contents: nil)
        _ = FileManager.default.createFile(atPath: errorsURL.path, contents: nil)
        let output = try FileHandle(forWritingTo: outputURL)
        let errors = try FileHandle(forWritingTo: errorsURL)
        defer {
            try? output.close()
            try? errors.close()
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [self.python] + arguments
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = output
        process.standardError = errors
        let status: Int32 = try await withCheckedThrowingContinuation { continuation in
            process.terminationHandler = { continuation.resume(returning: $0.terminationStatus) }
            do {
                try process.run()
            } catch {
                process.terminationHandler = nil
                continuation.resume(throwing: error)
            }
        }
        return Finished(
            status: status,
            output: try Data(contentsOf: outputURL),
            errors: String(decoding: try Data(contentsOf: errorsURL), as: UTF8.self))
    }
}
