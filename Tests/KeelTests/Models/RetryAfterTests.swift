import Foundation
import KeelModels
import Testing

@Suite("Retry-After and error classification")
struct RetryAfterTests {
    @Test func delaySeconds() {
        #expect(RetryAfter.parse("2") == .seconds(2))
        #expect(RetryAfter.parse(" 120 ") == .seconds(120))
        #expect(RetryAfter.parse("1.5") == .milliseconds(1500))
        #expect(RetryAfter.parse("-1") == nil)
        #expect(RetryAfter.parse("soon") == nil)
    }

    @Test func httpDate() {
        let now = Date(timeIntervalSince1970: 784_111_767)  // Sun, 06 Nov 1994 08:49:27 GMT
        #expect(RetryAfter.parse("Sun, 06 Nov 1994 08:49:37 GMT", now: now) == .seconds(10))
        #expect(RetryAfter.parse("Sunday, 06-Nov-94 08:49:37 GMT", now: now) == .seconds(10))
        #expect(RetryAfter.parse("Sun Nov  6 08:49:37 1994", now: now) == .seconds(10))
        // A date in the past is no wait at all.
        #expect(RetryAfter.parse("Sun, 06 Nov 1994 08:49:17 GMT", now: now) == .zero)
    }

    @Test func millisecondsHeaderWins() {
        let headers: [(name: String, value: String)] = [("Retry-After", "7"), ("retry-after-ms", "250")]
        #expect(RetryAfter.parse(headers) == .milliseconds(250))
        #expect(RetryAfter.parse([(name: "retry-after", value: "3")]) == .seconds(3))
        #expect(RetryAfter.parse([(name: "x-other", value: "3")]) == nil)
    }

    @Test(arguments: [
        (408, true), (409, true), (429, true), (500, true), (502, true), (503, true), (529, true),
        (400, false), (401, false), (403, false), (404, false), (422, false),
    ])
    func retryableByStatus(status: Int, retryable: Bool) {
        let error = ProviderError.fromStatus(status, type: nil, code: nil, message: "x", retryAfter: nil)
        #expect(error.retryable == retryable)
        #expect(error.coolsLong == (status == 401 || status == 403))
    }

    @Test func spendLimitIsNotRetryable() {
        let error = ProviderError.fromStatus(
            429, type: "insufficient_quota", code: "insufficient_quota", message: "quota", retryAfter: nil)
        #expect(error.kind == .spendLimit)
        #expect(!error.retryable)
        #expect(error.coolsLong)
    }

    @Test func transportKindsAreRetryable() {
        for kind: ProviderError.Kind in [.connect, .timeout, .truncated, .malformed, .inBand(code: nil), .overloaded] {
            #expect(ProviderError(kind, "x").retryable)
        }
    }
}
