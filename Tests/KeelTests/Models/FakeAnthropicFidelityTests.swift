import Foundation
import Testing

/// The fake is only as good as its fidelity: the official `anthropic` Python
/// client reads its streams (raw events and the accumulating stream helper),
/// errors and a non-streaming answer
/// (`Tests/Clients/models/check_fake_anthropic.py`). Without Python or
/// `anthropic` the test is skipped locally; on CI (`CI=true`) that is a failure.
@Suite("fake_anthropic.py read by the anthropic client")
struct FakeAnthropicFidelityTests {
    @Test func officialClientReadsTheFake() async throws {
        let script = FakeOpenAIUpstream.scriptsDirectory.appendingPathComponent("check_fake_anthropic.py").path
        let (status, output) = try await FakeOpenAIFidelityTests.run([script])
        if status == 3 || status == 127 || status == -1 {
            let why = "\(FakeOpenAIUpstream.python) cannot import anthropic (pip install anthropic, or set KEEL_TEST_PYTHON)"
            if ProcessInfo.processInfo.environment["CI"] == "true" {
                Issue.record("CI must have the anthropic client: \(why)\n\(output)")
            }
            try Test.cancel("skipped: \(why)")
        }
        #expect(status == 0, "check_fake_anthropic.py failed:\n\(output)")
        #expect(output.contains(" passed, 0 failed"))
    }
}
