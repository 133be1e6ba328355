import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1

/// A streaming client for Anthropic's Messages API.
///
/// `POST {baseURL}/v1/messages` with `stream: true` and
/// `anthropic-version: 2023-06-01`; the body is read as it arrives through
/// ``SSEDecoder``. System messages become the top-level `system` field (joined
/// by a blank line); user and assistant messages are sent in order.
/// `ChatRequest.thinkingBudget` sends `thinking: {type: enabled, budget_tokens}`.
///
/// Events: `message_start` carries the input tokens; `content_block_delta`
/// with a `text_delta` becomes ``ChatStreamEvent/text(_:)``, with a
/// `thinking_delta` ``ChatStreamEvent/reasoning(_:)`` (`signature_delta` and
/// other deltas are skipped); `message_delta`'s `stop_reason` becomes
/// ``ChatStreamEvent/finished(reason:)`` (Anthropic's own reason, e.g.
/// `end_turn`, `max_tokens`); `message_stop` ends the stream, after a
/// ``ChatStreamEvent/usage(_:)`` with the last `output_tokens`. `ping` and
/// unknown event types (Anthropic may add some) are skipped. An `error` event
/// throws ``ProviderError/Kind/overloaded`` for `overloaded_error` and
/// ``ProviderError/Kind/inBand(code:)`` otherwise; a body that ends, or a
/// connection that breaks, before `message_stop` throws
/// ``ProviderError/Kind/truncated``.
///
/// HTTP errors are classified by ``ProviderError/fromStatus(_:type:code:message:retryAfter:)``
/// (429 `rate_limit_error` with `Retry-After`, 529 `overloaded_error`, 500
/// `api_error`, 400, 401/403), except that a `billing_error` or an error
/// whose message mentions the credit balance is a
/// ``ProviderError/Kind/spendLimit``, whatever its status: not retried.
public struct AnthropicProvider: SinkDrivenProvider {
    /// How the API key is sent.
    public enum Authentication: Sendable, Equatable {
        /// `x-api-key: KEY` (Anthropic's API).
        case apiKeyHeader
        /// `Authorization: Bearer KEY` (gateways and proxies).
        case bearer
    }

    public static let defaultVersion = "2023-06-01"
    /// `max_tokens` when the request sets none (Anthropic requires it).
    public static let defaultMaxTokens = 1024

    public let baseURL: String
    private let apiKey: String?
    public let authentication: Authentication
    public let anthropicVersion: String
    private let httpClient: HTTPClient
    private let headers: [(String, String)]
    /// The longest wait for the next bytes of the response (its head, then
    /// each body chunk); `ping` events count as bytes. Past it the request is
    /// cancelled and the stream throws `.timeout`.
    public let idleTimeout: Duration
    /// The largest error body read from a non-2xx response.
    public let maximumErrorBodySize: Int

    /// - Parameters:
    ///   - baseURL: without the version, e.g. `https://api.anthropic.com`.
    ///   - apiKey: sent as `x-api-key` (or as `Authorization: Bearer`, see
    ///     `authentication`); `nil` sends none.
    ///   - headers: added to every request (e.g. `anthropic-beta`). Values of
    ///     headers whose names mention a key, token, secret or auth are
    ///     redacted from error messages like the API key.
    public init(
        baseURL: String = "https://api.anthropic.com", apiKey: String?, authentication: Authentication = .apiKeyHeader,
        anthropicVersion: String = AnthropicProvider.defaultVersion, httpClient: HTTPClient,
        headers: [(String, String)] = [], idleTimeout: Duration = .seconds(60), maximumErrorBodySize: Int = 64 * 1024
    ) {
        self.baseURL = ProviderTransport.trimmingTrailingSlashes(baseURL)
        self.apiKey = apiKey
        self.authentication = authentication
        self.anthropicVersion = anthropicVersion
        self.httpClient = httpClient
        self.headers = headers
        self.idleTimeout = idleTimeout
        self.maximumErrorBodySize = maximumErrorBodySize
    }


    // MARK: - Request

    func makeHTTPRequest(_ request: ChatRequest) throws -> HTTPClientRequest {
        var headers = [("anthropic-version", self.anthropicVersion)]
        if let apiKey {
            switch self.authentication {
            case .apiKeyHeader: headers.append(("x-api-key", apiKey))
            case .bearer: headers.append(("Authorization", "Bearer \(apiKey)"))
            }
        }
        let system = request.messages.filter { $0.role == .system }.map(\.content)
        var maxTokens = request.maxTokens ?? Self.defaultMaxTokens
        if request.maxTokens == nil, let budget = request.thinkingBudget {
            // Anthropic requires max_tokens > budget_tokens.
            maxTokens = max(maxTokens, budget + Self.defaultMaxTokens)
        }
        let body = WireRequest(
            model: request.model,
            max_tokens: maxTokens,
            system: system.isEmpty ? nil : system.joined(separator: "\n\n"),
            messages: request.messages.filter { $0.role != .system }.map {
                WireRequest.Message(role: $0.role.rawValue, content: $0.content)
            },
            stream: true,
            temperature: request.temperature,
            stop_sequences: request.stop.isEmpty ? nil : request.stop,
            thinking: request.thinkingBudget.map { WireRequest.Thinking(type: "enabled", budget_tokens: $0) })
        return try ProviderTransport.eventStreamPOST(
            url: self.baseURL + "/v1/messages", headers: headers + self.headers, body: body)
    }

    // MARK: - Streaming

    func drive(_ request: ChatRequest, _ continuation: EventSink)
        async throws
    {
        let http = try ProviderTransport.request { try self.makeHTTPRequest(request) }
        let includeUsage = request.includeUsage
        try await withIdleWatchdog(idleTimeout: self.idleTimeout) { activity in
            try await self.read(http, includeUsage: includeUsage, activity: activity, continuation)
        }
    }

    private func read(
        _ http: HTTPClientRequest, includeUsage: Bool, activity: Activity,
        _ continuation: EventSink
    ) async throws {
        var body = try await ProviderTransport.open(
            http, client: self.httpClient, activity: activity, maximumErrorBodySize: self.maximumErrorBodySize,
            transportError: self.transportError(_:afterHead:), statusError: self.statusError)
        var decoder = SSEDecoder()
        let jsonDecoder = JSONDecoder()
        var inputTokens = 0
        var outputTokens = 0
        while true {
            guard let buffer = try await body.next() else {
                throw ProviderError(.truncated, "the stream ended without message_stop")
            }
            let events: [SSEEvent]
            do {
                events = try decoder.feed(buffer.readableBytesView)
            } catch {
                throw ProviderError(.malformed, "undecodable event stream: \(error)")
            }
            for event in events {
                let wire: WireEvent
                do {
                    wire = try jsonDecoder.decode(WireEvent.self, from: Data(event.data.utf8))
                } catch {
                    throw ProviderError(
                        .malformed, "a stream event is not a Messages API event: \(self.excerpt(event.data))")
                }
                switch wire.type {
                case "message_start":
                    if let usage = wire.message?.usage {
                        inputTokens = usage.input_tokens ?? inputTokens
                        outputTokens = usage.output_tokens ?? outputTokens
                    }
                case "content_block_start":
                    if let block = wire.content_block {
                        if block.type == "text", let text = block.text, !text.isEmpty {
                            continuation.yield(.text(text))
                        } else if block.type == "thinking", let thinking = block.thinking, !thinking.isEmpty {
                            continuation.yield(.reasoning(thinking))
                        }
                    }
                case "content_block_delta":
                    guard let delta = wire.delta else {
                        throw ProviderError(.malformed, "content_block_delta without a delta: \(self.excerpt(event.data))")
                    }
                    switch delta.type {
                    case "text_delta":
                        if let text = delta.text, !text.isEmpty { continuation.yield(.text(text)) }
                    case "thinking_delta":
                        if let thinking = delta.thinking, !thinking.isEmpty { continuation.yield(.reasoning(thinking)) }
                    default:
                        break  // signature_delta, input_json_delta, citations_delta
                    }
                case "message_delta":
                    if let usage = wire.usage {
                        inputTokens = usage.input_tokens ?? inputTokens
                        outputTokens = usage.output_tokens ?? outputTokens
                    }
                    if let reason = wire.delta?.stop_reason {
                        continuation.yield(.finished(reason: reason))
                    }
                case "message_stop":
                    if includeUsage {
                        continuation.yield(.usage(ChatUsage(inputTokens: inputTokens, outputTokens: outputTokens)))
                    }
                    continuation.finish()
                    await body.drain()
                    return
                case "error":
                    throw self.inBandError(wire.error)
                default:
                    break  // ping, content_block_stop, and event types added later
                }
            }
        }
    }

    // MARK: - Errors

    private func inBandError(_ error: WireError?) -> ProviderError {
        let type = error?.type
        let message = self.redact(error?.message ?? "an error event without a message")
        let label = "in-band error\(type.map { " \($0)" } ?? ""): \(message)"
        if Self.isSpendLimit(type: type, message: message) { return ProviderError(.spendLimit, label) }
        if type == "overloaded_error" { return ProviderError(.overloaded, label) }
        return ProviderError(.inBand(code: type), label)
    }

    static func isSpendLimit(type: String?, message: String) -> Bool {
        let lower = message.lowercased()
        return type == "billing_error" || lower.contains("credit balance") || lower.contains("spend limit")
            || lower.contains("api usage limits")
    }

    private func statusError(_ response: ProviderTransport.ErrorResponse) -> ProviderError {
        var type: String?
        var message: String
        if let envelope = try? JSONDecoder().decode(WireErrorEnvelope.self, from: response.body),
            let error = envelope.error
        {
            type = error.type
            message = error.message ?? response.bodyExcerpt
        } else {
            message = response.bodyExcerptOrReason
        }
        if let type { message += " (\(type))" }
        message = self.redact(message)
        if Self.isSpendLimit(type: type, message: message) {
            return ProviderError(
                .spendLimit, "HTTP \(response.status): \(message)", status: response.status, retryAfter: response.retryAfter)
        }
        return ProviderError.fromStatus(
            response.status, type: type, code: nil, message: message, retryAfter: response.retryAfter)
    }

    private func transportError(_ error: any Error, afterHead: Bool) -> any Error {
        ProviderTransport.error(error, afterHead: afterHead, terminator: "message_stop", baseURL: self.baseURL, redact: self.redact)
    }

    private func excerpt(_ text: String) -> String { ProviderTransport.excerpt(text) }

    /// Removes the API key and other secret header values from text that
    /// came from the upstream or from the transport.
    func redact(_ text: String) -> String {
        ProviderTransport.redact(text, apiKey: self.apiKey, headers: self.headers)
    }
}

// MARK: - Wire format

private struct WireRequest: Encodable {
    struct Message: Encodable {
        var role: String
        var content: String
    }

    struct Thinking: Encodable {
        var type: String
        var budget_tokens: Int
    }

    var model: String
    var max_tokens: Int
    var system: String?
    var messages: [Message]
    var stream: Bool
    var temperature: Double?
    var stop_sequences: [String]?
    var thinking: Thinking?
}

private struct WireError: Decodable {
    var type: String?
    var message: String?
}

/// `{"type": "error", "error": {"type": …, "message": …}}`
private struct WireErrorEnvelope: Decodable {
    var error: WireError?
}

private struct WireUsage: Decodable {
    var input_tokens: Int?
    var output_tokens: Int?
}

/// Every Messages API stream event, with only the fields Keel reads.
private struct WireEvent: Decodable {
    struct Message: Decodable {
        var usage: WireUsage?
    }

    struct ContentBlock: Decodable {
        var type: String
        var text: String?
        var thinking: String?
    }

    /// A content block delta (`text_delta`, `thinking_delta`, …) or a
    /// message delta (`stop_reason`).
    struct Delta: Decodable {
        var type: String?
        var text: String?
        var thinking: String?
        var stop_reason: String?
    }

    var type: String
    var message: Message?
    var content_block: ContentBlock?
    var delta: Delta?
    var usage: WireUsage?
    var error: WireError?
}
