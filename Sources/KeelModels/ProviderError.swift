import Foundation

/// Why a provider call failed, classified the way the router decides on it
/// (DESIGN.md, "Models, chains, fallback").
///
/// ``message`` is for logs and for the `fallback` event's reason: it never
/// contains the API key or any `Authorization` header (the clients redact
/// their secrets from upstream error bodies too).
public struct ProviderError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable, Hashable {
        /// No connection: refused, DNS, TLS, or closed before a response head.
        case connect
        /// Every connection this process may open to the provider's host
        /// (`--model-max-connections`) stayed in use for the connect timeout:
        /// this process's limit, not the model's failure. Another model may
        /// be on another host; the model is neither counted failing nor cooled.
        case busy
        /// No bytes for longer than the idle timeout, or a 408 or a
        /// transport timeout.
        case timeout
        /// 429 that is not a spend limit, with the wait the upstream asked for.
        case rateLimited(retryAfter: Duration?)
        /// 529, or an error typed `overloaded_error`.
        case overloaded
        /// 5xx (and 409, which providers use for transient conflicts).
        case serverError(status: Int)
        /// A 4xx the request itself caused (400 validation, 404, 413, 422):
        /// another try of the same request fails the same way.
        case badRequest(status: Int)
        /// 401 or 403: the credentials are wrong; cool the model for long.
        case unauthorized(status: Int)
        /// The account's quota or spend limit is used up (OpenAI's
        /// `insufficient_quota` 429, Anthropic's `billing_error` or "credit
        /// balance" errors): retrying soon does not help.
        case spendLimit
        /// An error sent inside a 200 stream (`data: {"error": …}`), with its
        /// `code` (or `type`) when it had one.
        case inBand(code: String?)
        /// A stream event that is not what the protocol says.
        case malformed
        /// The stream ended, or the connection broke, before the proper end.
        case truncated
    }

    public var kind: Kind
    public var message: String
    /// The HTTP status, when the failure was an HTTP response.
    public var status: Int?
    /// The wait the upstream asked for (`retry-after-ms`, `Retry-After`), on
    /// any status that carried one.
    public var retryAfter: Duration?

    public init(_ kind: Kind, _ message: String, status: Int? = nil, retryAfter: Duration? = nil) {
        self.kind = kind
        self.message = message
        self.status = status
        if case .rateLimited(let wait) = kind, retryAfter == nil {
            self.retryAfter = wait
        } else {
            self.retryAfter = retryAfter
        }
    }

    /// Whether the same request may succeed on another try or on another
    /// model: connect errors, timeouts, 408, 409, 429 (not a spend limit),
    /// 5xx, 529, and a broken stream (in-band error, malformed event,
    /// truncation), which the router continues on the next model. Not 400
    /// and other request errors, not a spend limit, and not 401/403 (those
    /// move on to the next model after cooling this one for long: see
    /// ``coolsLong``).
    public var retryable: Bool {
        switch self.kind {
        case .connect, .busy, .timeout, .rateLimited, .overloaded, .serverError, .inBand, .malformed, .truncated:
            true
        case .badRequest, .unauthorized, .spendLimit:
            false
        }
    }

    /// Whether the model should be cooled for long (bad credentials, spend
    /// limit) rather than for a retry interval, and the chain moved on.
    public var coolsLong: Bool {
        switch self.kind {
        case .unauthorized, .spendLimit: true
        default: false
        }
    }

    public var description: String {
        var text = "ProviderError(\(self.kind)"
        if let status { text += ", status \(status)" }
        if let retryAfter { text += ", retry after \(retryAfter)" }
        return text + "): \(self.message)"
    }

    /// Classifies a non-2xx response from its status, the error body's
    /// `type` and `code` (OpenAI's and Anthropic's shapes), and its headers'
    /// retry hint.
    public static func fromStatus(
        _ status: Int, type: String?, code: String?, message: String, retryAfter: Duration?
    ) -> ProviderError {
        let quota: Set<String> = [
            "insufficient_quota", "billing_hard_limit_reached", "billing_not_active", "billing_error",
        ]
        let kind: Kind
        if quota.contains(code ?? "") || quota.contains(type ?? "") {
            kind = .spendLimit
        } else if status == 529 || type == "overloaded_error" || code == "overloaded_error" {
            kind = .overloaded
        } else {
            switch status {
            case 429: kind = .rateLimited(retryAfter: retryAfter)
            case 408: kind = .timeout
            case 401, 403: kind = .unauthorized(status: status)
            case 409, 500...599: kind = .serverError(status: status)
            default: kind = .badRequest(status: status)
            }
        }
        return ProviderError(kind, "HTTP \(status): \(message)", status: status, retryAfter: retryAfter)
    }
}

/// The wait an upstream asks for before the next try.
public enum RetryAfter {
    /// `retry-after-ms` (milliseconds, OpenAI's and Anthropic's) wins over
    /// `Retry-After` (seconds, or an HTTP-date measured from `now`). A date
    /// in the past is a zero wait; an unparseable or negative value is none.
    public static func parse(
        _ headers: some Sequence<(name: String, value: String)>, now: Date = Date()
    ) -> Duration? {
        var milliseconds: String?
        var retryAfter: String?
        for header in headers {
            switch header.name.lowercased() {
            case "retry-after-ms": milliseconds = milliseconds ?? header.value
            case "retry-after": retryAfter = retryAfter ?? header.value
            default: break
            }
        }
        if let milliseconds, let value = Double(milliseconds.trimmingCharacters(in: .whitespaces)),
            value.isFinite, value >= 0
        {
            return .milliseconds(Int64(value.rounded()))
        }
        if let retryAfter { return self.parse(retryAfter, now: now) }
        return nil
    }

    /// One `Retry-After` value: delay-seconds or an HTTP-date.
    public static func parse(_ value: String, now: Date = Date()) -> Duration? {
        let text = value.trimmingCharacters(in: .whitespaces)
        if let seconds = Double(text) {
            guard seconds.isFinite, seconds >= 0 else { return nil }
            return .milliseconds(Int64((seconds * 1000).rounded()))
        }
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        // IMF-fixdate, then the obsolete RFC 850 and asctime forms (RFC 9110 §5.6.7).
        for format in ["EEE, dd MMM yyyy HH:mm:ss zzz", "EEEE, dd-MMM-yy HH:mm:ss zzz", "EEE MMM d HH:mm:ss yyyy"] {
            formatter.dateFormat = format
            if let date = formatter.date(from: text) {
                let seconds = max(0, date.timeIntervalSince(now))
                return .milliseconds(Int64((seconds * 1000).rounded()))
            }
        }
        return nil
    }
}
