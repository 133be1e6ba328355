import Foundation
import Testing

/// The fake is only as good as its fidelity: the official `openai` Python
/// client reads its streams, errors and a non-streaming answer
/// (`Tests/Clients/models/check_fake_openai.py`). Without Python or `openai`
/// the test is skipped locally; on CI (`CI=true`) that is a failure.
@Suite("fake_openai.py read by the openai client")
struct FakeOpenAIFidelityTests {
    @Test func officialClientReadsTheFake() async throws {
        let script = FakeOpenAIUpstream.scriptsDirectory.appendingPathComponent("check_fake_openai.py").path
        let (status, output) = try await Self.run([script])
        if status == 3 || status == 127 || status == -1 {
            let why = "\(FakeOpenAIUpstream.python) cannot import openai (pip install openai, or set KEEL_TEST_PYTHON)"
            if ProcessInfo.processInfo.environment["CI"] == "true" {
                Issue.record("CI must have the openai client: \(why)\n\(output)")
            }
            try Test.cancel("skipped: \(why)")
        }
        #expect(status == 0, "check_fake_openai.py failed:\n\(output)")
        #expect(output.contains(" passed, 0 failed"))
    }

    /// Runs the Python with its output in a file (a pipe could fill up),
    /// waiting for its exit off the cooperative pool.
    static func run(_ arguments: [String]) async throws -> (Int32, String) {
        let outputURL = FileManager.default.temporaryDirectory.appendingPathComponent("keel-openai-check-\(UUID().uuidString)")
        _ = FileManager.default.createFile(atPath: outputURL.path, contents: nil)
        defer { try? FileManager.default.removeItem(at: outputURL) }
        let output = try FileHandle(forWritingTo: outputURL)
        defer { try? output.close() }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [FakeOpenAIUpstream.python] + arguments
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = output
        process.standardError = output
        let status: Int32 = await withCheckedContinuation { continuation in
            process.terminationHandler = { continuation.resume(returning: $0.terminationStatus) }
            do {
                try process.run()
            } catch {
                process.terminationHandler = nil
                continuation.resume(returning: -1)
            }
        }
        return (status, String(decoding: try Data(contentsOf: outputURL), as: UTF8.self))
    }
}
