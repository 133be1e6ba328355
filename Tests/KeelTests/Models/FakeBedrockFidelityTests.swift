import Foundation
import Testing

/// The fake is only as good as its fidelity: botocore's own `bedrock-runtime`
/// client calls `converse_stream` on it for every mode, signs with SigV4 (the
/// fake must accept its signatures and refuse a wrong secret) or a Bedrock
/// API key, and reads the event stream and the errors with its own parser
/// (`Tests/Clients/models/check_fake_bedrock.py`). Without Python or botocore
/// the test is skipped locally; on CI (`CI=true`) that is a failure.
@Suite("fake_bedrock.py read by botocore")
struct FakeBedrockFidelityTests {
    @Test func botocoreReadsTheFake() async throws {
        let script = FakeOpenAIUpstream.scriptsDirectory.appendingPathComponent("check_fake_bedrock.py").path
        let (status, output) = try await FakeOpenAIFidelityTests.run([script])
        if status == 3 || status == 127 || status == -1 {
            let why = "\(FakeOpenAIUpstream.python) cannot import botocore (pip install botocore, or set KEEL_TEST_PYTHON)"
            if ProcessInfo.processInfo.environment["CI"] == "true" {
                Issue.record("CI must have botocore: \(why)\n\(output)")
            }
            try Test.cancel("skipped: \(why)")
        }
        #expect(status == 0, "check_fake_bedrock.py failed:\n\(output)")
        #expect(output.contains(" passed, 0 failed"))
    }
}
