import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1

/// A streaming client for Amazon Bedrock's Converse API (`ConverseStream`).
///
/// `POST {endpoint}/model/{modelId}/converse-stream`, the model id
/// percent-encoded as one path segment (a `:` travels as `%3A`, an inference
/// profile ARN's `/` as `%2F`), signed with SigV4 for the signing name
/// `bedrock` (``SigV4Signer`` encodes the path once more, as botocore does),
/// or sent with a Bedrock API key as `Authorization: Bearer`. The body is the
/// Converse request: system messages become `system` blocks, the others
/// `messages` with one text block each, in order; `maxTokens`,
/// `temperature` and `stopSequences` go in `inferenceConfig`;
/// `ChatRequest.thinkingBudget` sends
/// `additionalModelRequestFields: {thinking: {type: enabled, budget_tokens}}`
/// (Anthropic's models on Bedrock).
///
/// The answer is an AWS event stream (`application/vnd.amazon.eventstream`),
/// read as it arrives through ``EventStreamDecoder`` (both CRCs checked: a
/// damaged frame throws ``ProviderError/Kind/malformed``). Events:
/// `contentBlockDelta` with `delta.text` becomes ``ChatStreamEvent/text(_:)``,
/// with `delta.reasoningContent.text` ``ChatStreamEvent/reasoning(_:)`` (the
/// reasoning signature, redacted reasoning, tool and citation deltas are
/// skipped); `messageStop`'s `stopReason` becomes
/// ``ChatStreamEvent/finished(reason:)`` (Bedrock's own reason, e.g.
/// `end_turn`, `max_tokens`); the `metadata` event that follows it becomes
/// ``ChatStreamEvent/usage(_:)``. `messageStart`, `contentBlockStart`,
/// `contentBlockStop` and event types added later are skipped. The stream ends
/// normally after `messageStop` and then `metadata` (or the end of the body
/// when no `metadata` comes); a body that ends, or a connection that breaks,
/// before that throws ``ProviderError/Kind/truncated``. Without
/// `includeUsage` the stream ends at `messageStop`.
///
/// Exceptions inside the stream (`:message-type: exception`):
/// `throttlingException` is ``ProviderError/Kind/rateLimited(retryAfter:)``,
/// `serviceUnavailableException` a retryable 503 ``ProviderError/Kind/serverError(status:)``,
/// `internalServerException` a 500, `validationException` a 400
/// ``ProviderError/Kind/badRequest(status:)``, and `modelStreamErrorException`
/// (and any other exception, or an unmodeled `:message-type: error`)
/// ``ProviderError/Kind/inBand(code:)`` with the exception's name.
///
/// HTTP errors carry `{"message": …}` and the error's name in
/// `x-amzn-ErrorType` (`ThrottlingException:http://internal.amazon.com/…`):
/// see ``classify(status:type:message:retryAfter:)``.
public struct BedrockProvider: SinkDrivenProvider {
    public let region: String
    /// Scheme, host, optional port (and path prefix), without a trailing `/`.
    public let endpoint: String
    private let credentials: BedrockCredentials
    private let httpClient: HTTPClient
    /// The longest wait for the next bytes of the response (its head, then
    /// each body chunk). Past it the request is cancelled and the stream
    /// throws `.timeout`.
    public let idleTimeout: Duration
    /// The largest error body read from a non-2xx response.
    public let maximumErrorBodySize: Int

    /// `max_tokens` sent with a thinking budget when the request sets none:
    /// Anthropic's models on Bedrock require maxTokens > budget_tokens.
    public static let thinkingHeadroomTokens = 1024

    /// - Parameters:
    ///   - endpoint: `nil` for `https://bedrock-runtime.{region}.amazonaws.com`.
    ///   - credentials: an AWS key pair (SigV4) or a Bedrock API key (bearer).
    ///     No part of a secret ever appears in an error message.
    public init(
        region: String, endpoint: String? = nil, credentials: BedrockCredentials, httpClient: HTTPClient,
        idleTimeout: Duration = .seconds(60), maximumErrorBodySize: Int = 64 * 1024
    ) {
        self.region = region
        self.endpoint = ProviderTransport.trimmingTrailingSlashes(
            endpoint ?? "https://bedrock-runtime.\(region).amazonaws.com")
        self.credentials = credentials
        self.httpClient = httpClient
        self.idleTimeout = idleTimeout
        self.maximumErrorBodySize = maximumErrorBodySize
    }


    // MARK: - Request

    /// The JSON body of the Converse request for `request`, as sent.
    public func requestBody(_ request: ChatRequest) throws -> [UInt8] {
        let system = request.messages.filter { $0.role == .system }.map { WireRequest.Text(text: $0.content) }
        var maxTokens = request.maxTokens
        if maxTokens == nil, let budget = request.thinkingBudget { maxTokens = budget + Self.thinkingHeadroomTokens }
        let config = WireRequest.InferenceConfig(
            maxTokens: maxTokens, temperature: request.temperature, stopSequences: request.stop.isEmpty ? nil : request.stop)
        let body = WireRequest(
            messages: request.messages.filter { $0.role != .system }.map {
                WireRequest.Message(role: $0.role.rawValue, content: [WireRequest.Text(text: $0.content)])
            },
            system: system.isEmpty ? nil : system,
            inferenceConfig: config.isEmpty ? nil : config,
            additionalModelRequestFields: request.thinkingBudget.map {
                WireRequest.Additional(thinking: WireRequest.Thinking(type: "enabled", budget_tokens: $0))
            })
        return try ProviderTransport.json(body)
    }

    /// The HTTP request for `request`, signed (or bearer-authorized) as sent
    /// at `date`: `Host`, `Content-Type`, `Accept` and the authorization
    /// headers, with ``requestBody(_:)`` as its body.
    public func makeHTTPRequest(_ request: ChatRequest, date: Date = Date()) throws -> HTTPClientRequest {
        guard let url = URLComponents(string: self.endpoint), let scheme = url.scheme?.lowercased(),
            let hostName = url.host, !hostName.isEmpty
        else {
            throw ProviderError(.badRequest(status: 0), "not an endpoint URL: \(self.endpoint)")
        }
        var host = hostName.lowercased()
        if let port = url.port, port != (scheme == "https" ? 443 : 80) { host += ":\(port)" }
        let path = url.percentEncodedPath + "/model/" + SigV4Signer.percentEncode(request.model) + "/converse-stream"
        let body = try self.requestBody(request)
        let headers: [(name: String, value: String)] = [
            ("Content-Type", "application/json"), ("Accept", "application/vnd.amazon.eventstream"),
        ]
        let signed = SigV4Signer.Request(method: "POST", host: host, path: path, headers: headers)
        let authorization = self.credentials.authorizationHeaders(
            for: signed, payload: .bytes(body), region: self.region, date: date)

        var origin = "\(scheme)://\(hostName)"
        if let port = url.port { origin += ":\(port)" }
        var http = HTTPClientRequest(url: origin + path)
        http.method = .POST
        // The Host that was signed, not one AsyncHTTPClient derives.
        http.headers.add(name: "Host", value: host)
        for (name, value) in headers + authorization { http.headers.add(name: name, value: value) }
        http.body = .bytes(ByteBuffer(bytes: body))
        return http
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
        var decoder = EventStreamDecoder()
        let jsonDecoder = JSONDecoder()
        var stopped = false

        /// Ends the stream normally and reads the rest of the body, so that
        /// the connection can be reused.
        func finish() async {
            continuation.finish()
            await body.drain()
        }

        while true {
            guard let buffer = try await body.next() else {
                do {
                    try decoder.finish()
                } catch {
                    throw ProviderError(.truncated, "the stream ended inside a frame: \(error)")
                }
                if stopped { return }
                throw ProviderError(.truncated, "the stream ended without messageStop")
            }
            let messages: [EventStreamMessage]
            do {
                messages = try decoder.feed(buffer.readableBytesView)
            } catch {
                throw ProviderError(.malformed, "undecodable event stream: \(error)")
            }
            for message in messages {
                switch message.messageType {
                case .event:
                    break
                case .exception:
                    throw self.exceptionError(message)
                case .error:
                    let code = message.errorCode
                    let text = self.redact(message.errorMessage ?? "an error message without text")
                    throw ProviderError(.inBand(code: code), "in-band error\(code.map { " \($0)" } ?? ""): \(text)")
                case nil:
                    throw ProviderError(
                        .malformed, "a frame without a known :message-type: \(message.headers[":message-type"]?.description ?? "none")")
                }
                let eventType = message.eventType ?? ""
                func decode<T: Decodable>(_ type: T.Type) throws -> T {
                    do {
                        return try jsonDecoder.decode(T.self, from: Data(message.payload))
                    } catch {
                        let text = self.excerpt(self.redact(String(decoding: message.payload, as: UTF8.self)))
                        throw ProviderError(.malformed, "a \(eventType) event that is not a ConverseStream event: \(text)")
                    }
                }
                switch eventType {
                case "contentBlockDelta":
                    guard let delta = try decode(WireDeltaEvent.self).delta else {
                        throw ProviderError(.malformed, "contentBlockDelta without a delta")
                    }
                    if let text = delta.text, !text.isEmpty { continuation.yield(.text(text)) }
                    if let reasoning = delta.reasoningContent?.text, !reasoning.isEmpty {
                        continuation.yield(.reasoning(reasoning))
                    }
                case "messageStop":
                    let stop = try decode(WireStopEvent.self)
                    continuation.yield(.finished(reason: stop.stopReason ?? "end_turn"))
                    stopped = true
                    if !includeUsage {
                        await finish()
                        return
                    }
                case "metadata":
                    let metadata = try decode(WireMetadataEvent.self)
                    if includeUsage, let usage = metadata.usage {
                        continuation.yield(
                            .usage(ChatUsage(inputTokens: usage.inputTokens ?? 0, outputTokens: usage.outputTokens ?? 0)))
                    }
                    if stopped {
                        await finish()
                        return
                    }
                default:
                    break  // messageStart, contentBlockStart, contentBlockStop, and event types added later
                }
            }
        }
    }

    // MARK: - Errors

    /// An exception frame inside a 200 stream.
    private func exceptionError(_ message: EventStreamMessage) -> ProviderError {
        let type = message.exceptionType ?? "unknownException"
        let wire = try? JSONDecoder().decode(WireException.self, from: Data(message.payload))
        var text = wire?.message ?? wire?.Message ?? self.excerpt(String(decoding: message.payload, as: UTF8.self))
        if let original = wire?.originalStatusCode { text += " (original status \(original))" }
        if let original = wire?.originalMessage { text += ": \(original)" }
        let label = "in-band \(type): \(self.redact(text))"
        switch type {
        case "throttlingException": return ProviderError(.rateLimited(retryAfter: nil), label)
        case "serviceUnavailableException": return ProviderError(.serverError(status: 503), label)
        case "internalServerException": return ProviderError(.serverError(status: 500), label)
        case "validationException": return ProviderError(.badRequest(status: 400), label)
        default: return ProviderError(.inBand(code: type), label)  // modelStreamErrorException
        }
    }

    /// Classifies a non-2xx Bedrock response by its error name (from
    /// `x-amzn-ErrorType` or the body), then its status:
    /// - `ThrottlingException` (429): ``ProviderError/Kind/rateLimited(retryAfter:)``,
    ///   with `Retry-After` when sent;
    /// - `ModelNotReadyException` (429, the model is being loaded):
    ///   ``ProviderError/Kind/overloaded``, retryable but not a rate limit;
    /// - `ServiceUnavailableException` (503), `InternalServerException` (500),
    ///   `ModelErrorException` (424, the model failed on this try):
    ///   ``ProviderError/Kind/serverError(status:)``;
    /// - `ModelTimeoutException` (408): ``ProviderError/Kind/timeout``;
    /// - `ValidationException` (400), `ResourceNotFoundException` (404):
    ///   ``ProviderError/Kind/badRequest(status:)``;
    /// - `AccessDeniedException`, `UnrecognizedClientException`,
    ///   `InvalidSignatureException`, `ExpiredTokenException` and the other
    ///   credential errors (403): ``ProviderError/Kind/unauthorized(status:)``;
    /// - `ServiceQuotaExceededException` (the account's quota, e.g. tokens
    ///   per day): ``ProviderError/Kind/spendLimit``;
    /// - anything else by its status alone.
    public static func classify(status: Int, type: String?, message: String, retryAfter: Duration?) -> ProviderError {
        let text = "HTTP \(status): \(message)" + (type.map { " (\($0))" } ?? "")
        let credentialErrors: Set<String> = [
            "AccessDeniedException", "UnrecognizedClientException", "InvalidSignatureException", "ExpiredTokenException",
            "MissingAuthenticationTokenException", "IncompleteSignatureException", "InvalidClientTokenId",
        ]
        let kind: ProviderError.Kind
        switch type {
        case "ThrottlingException"?: kind = .rateLimited(retryAfter: retryAfter)
        case "ModelNotReadyException"?: kind = .overloaded
        case "ServiceUnavailableException"?, "InternalServerException"?, "ModelErrorException"?:
            kind = .serverError(status: status)
        case "ModelTimeoutException"?: kind = .timeout
        case "ValidationException"?, "ResourceNotFoundException"?: kind = .badRequest(status: status)
        case "ServiceQuotaExceededException"?: kind = .spendLimit
        case let type? where credentialErrors.contains(type): kind = .unauthorized(status: status)
        default:
            return ProviderError.fromStatus(
                status, type: type, code: nil, message: message + (type.map { " (\($0))" } ?? ""), retryAfter: retryAfter)
        }
        return ProviderError(kind, text, status: status, retryAfter: retryAfter)
    }

    /// `ThrottlingException` out of `ThrottlingException:http://internal…`
    /// or `com.amazon.coral#ThrottlingException`, as botocore reads it.
    static func errorName(_ raw: String) -> String? {
        let name = String(raw.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)[0])
            .split(separator: "#").last.map(String.init)?.trimmingCharacters(in: .whitespaces)
        return name?.isEmpty == false ? name : nil
    }

    private func statusError(_ response: ProviderTransport.ErrorResponse) -> ProviderError {
        let wire = try? JSONDecoder().decode(WireException.self, from: response.body)
        let type = response.headers.first(name: "x-amzn-ErrorType").flatMap(Self.errorName)
            ?? (wire?.__type ?? wire?.code ?? wire?.Code).flatMap(Self.errorName)
        var message: String
        if let text = wire?.message ?? wire?.Message {
            message = text
        } else {
            message = response.bodyExcerptOrReason
        }
        message = self.redact(message)
        return Self.classify(status: response.status, type: type, message: message, retryAfter: response.retryAfter)
    }

    private func transportError(_ error: any Error, afterHead: Bool) -> any Error {
        ProviderTransport.error(
            error, afterHead: afterHead, terminator: "messageStop", baseURL: self.endpoint, redact: self.redact)
    }

    private func excerpt(_ text: String) -> String { ProviderTransport.excerpt(text) }

    /// Removes the secret access key, the session token and the API key
    /// from text that came from the upstream or from the transport.
    func redact(_ text: String) -> String {
        switch self.credentials {
        case .aws(let credentials):
            ProviderTransport.redact(text, secrets: [credentials.secretAccessKey, credentials.sessionToken ?? ""])
        case .apiKey(let key):
            ProviderTransport.redact(text, secrets: [key])
        }
    }
}

// MARK: - Wire format

private struct WireRequest: Encodable {
    struct Text: Encodable {
        var text: String
    }

    struct Message: Encodable {
        var role: String
        var content: [Text]
    }

    struct InferenceConfig: Encodable {
        var maxTokens: Int?
        var temperature: Double?
        var stopSequences: [String]?

        var isEmpty: Bool { self.maxTokens == nil && self.temperature == nil && self.stopSequences == nil }
    }

    struct Thinking: Encodable {
        var type: String
        var budget_tokens: Int
    }

    struct Additional: Encodable {
        var thinking: Thinking
    }

    var messages: [Message]
    var system: [Text]?
    var inferenceConfig: InferenceConfig?
    var additionalModelRequestFields: Additional?
}

/// `{"contentBlockIndex": 0, "delta": {"text": …} | {"reasoningContent": {"text": …}}}`
private struct WireDeltaEvent: Decodable {
    struct Reasoning: Decodable {
        var text: String?
    }

    struct Delta: Decodable {
        var text: String?
        var reasoningContent: Reasoning?
    }

    var delta: Delta?
}

/// `{"stopReason": "end_turn"}`
private struct WireStopEvent: Decodable {
    var stopReason: String?
}

/// `{"usage": {"inputTokens", "outputTokens", "totalTokens"}, "metrics": {"latencyMs"}}`
private struct WireMetadataEvent: Decodable {
    struct Usage: Decodable {
        var inputTokens: Int?
        var outputTokens: Int?
    }

    var usage: Usage?
}

/// An exception's payload, in a frame or an HTTP error body.
private struct WireException: Decodable {
    var message: String?
    var Message: String?
    var __type: String?
    var code: String?
    var Code: String?
    var originalStatusCode: Int?
    var originalMessage: String?
}
