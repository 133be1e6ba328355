import AsyncHTTPClient
import Foundation
import KeelCore
import NIOCore
import NIOHTTP1

/// A streaming client for OpenAI's chat completions API and the servers that
/// speak it (vLLM, Ollama's `/v1`, llama.cpp, LiteLLM).
///
/// `POST {baseURL}/chat/completions` with `stream: true`; the body is read as
/// it arrives through ``SSEDecoder``. `choices[0].delta.content` becomes
/// ``ChatStreamEvent/text(_:)``, `delta.reasoning_content` or
/// `delta.reasoning` becomes ``ChatStreamEvent/reasoning(_:)``,
/// `finish_reason` becomes ``ChatStreamEvent/finished(reason:)``, a
/// top-level `usage` (in the last chunk, whose `choices` is empty) becomes
/// ``ChatStreamEvent/usage(_:)``, and `data: [DONE]` ends the stream. A body
/// that ends, or a connection that breaks, before `[DONE]` throws
/// ``ProviderError/Kind/truncated``; `data: {"error": …}` throws
/// ``ProviderError/Kind/inBand(code:)``.
///
/// A request with ``ChatRequest/stream`` false (a client that waits for the
/// whole answer) sends `stream: false` and reads one `chat.completion`
/// body (at most ``maximumAnswerSize`` bytes) into the same events: there is
/// no stream to parse chunk by chunk, and the upstream does less work too.
/// Such a request has no idle limit here (the head comes only once the
/// answer is complete): the router's total limit bounds it.
public struct OpenAICompatibleProvider: SinkDrivenProvider {
    public let baseURL: String
    private let apiKey: String?
    private let httpClient: HTTPClient
    private let headers: [(String, String)]
    /// The longest wait for the next bytes of the response (its head, then
    /// each body chunk); SSE comments (keep-alives) count as bytes. Past it
    /// the request is cancelled and the stream throws `.timeout`.
    public let idleTimeout: Duration
    /// The largest error body read from a non-2xx response.
    public let maximumErrorBodySize: Int
    /// The largest whole answer (a non-streaming response's body) read;
    /// a larger one fails as malformed.
    public let maximumAnswerSize: Int

    public var answersWhole: Bool { true }

    /// - Parameters:
    ///   - baseURL: up to and including the version, e.g.
    ///     `https://api.openai.com/v1` or `http://127.0.0.1:11434/v1`.
    ///   - apiKey: sent as `Authorization: Bearer`; `nil` sends none (local servers).
    ///   - headers: added to every request (e.g. `OpenAI-Organization`).
    ///     Values of headers whose names mention a key, token, secret or
    ///     auth are redacted from error messages like the API key.
    public init(
        baseURL: String, apiKey: String?, httpClient: HTTPClient, headers: [(String, String)] = [],
        idleTimeout: Duration = .seconds(60), maximumErrorBodySize: Int = 64 * 1024, maximumAnswerSize: Int = 16 * 1024 * 1024
    ) {
        self.baseURL = ProviderTransport.trimmingTrailingSlashes(baseURL)
        self.apiKey = apiKey
        self.httpClient = httpClient
        self.headers = headers
        self.idleTimeout = idleTimeout
        self.maximumErrorBodySize = maximumErrorBodySize
        self.maximumAnswerSize = maximumAnswerSize
    }


    // MARK: - Request

    func makeHTTPRequest(_ request: ChatRequest) throws -> HTTPClientRequest {
        let body = WireRequest(
            model: request.model,
            messages: request.messages.map { WireRequest.Message(role: $0.role.rawValue, content: $0.content) },
            stream: request.stream,
            // OpenAI refuses stream_options without a stream; a whole answer carries its usage.
            stream_options: request.stream && request.includeUsage ? WireRequest.StreamOptions(include_usage: true) : nil,
            max_tokens: request.maxTokens,
            temperature: request.temperature,
            stop: request.stop.isEmpty ? nil : request.stop)
        let authorization = self.apiKey.map { [("Authorization", "Bearer \($0)")] } ?? []
        return try ProviderTransport.jsonPOST(
            url: self.baseURL + "/chat/completions", accept: request.stream ? "text/event-stream" : "application/json",
            headers: authorization + self.headers, body: body)
    }

    // MARK: - Streaming

    func drive(_ request: ChatRequest, _ continuation: EventSink)
        async throws
    {
        let http = try ProviderTransport.request { try self.makeHTTPRequest(request) }
        guard request.stream else {
            try await self.readWhole(http, continuation)
            return
        }
        try await withIdleWatchdog(idleTimeout: self.idleTimeout) { activity in
            try await self.read(http, activity: activity, continuation)
        }
    }

    /// One `chat.completion` body: its message's reasoning and text, its
    /// finish reason and its usage, in the order a stream gives them.
    private func readWhole(_ http: HTTPClientRequest, _ continuation: EventSink) async throws {
        var body = try await ProviderTransport.open(
            http, client: self.httpClient, activity: Activity(), maximumErrorBodySize: self.maximumErrorBodySize,
            transportError: self.transportError(_:afterHead:), statusError: self.statusError)
        var bytes = ByteBuffer()
        while let chunk = try await body.next() {
            guard bytes.readableBytes + chunk.readableBytes <= self.maximumAnswerSize else {
                throw ProviderError(.malformed, "the answer is larger than \(self.maximumAnswerSize) bytes")
            }
            bytes.writeImmutableBuffer(chunk)
        }
        guard let parsed = try? JSONValue.parse(bytes.readableBytesView), let completion = WireChunk(parsed, whole: true) else {
            throw ProviderError(
                .malformed, "the answer is not a chat completion: \(self.excerpt(String(decoding: bytes.readableBytesView, as: UTF8.self)))")
        }
        if let error = completion.error { throw self.inBandError(error) }
        guard let choice = completion.choices?.first(where: { ($0.index ?? 0) == 0 }) else {
            throw ProviderError(.malformed, "the chat completion has no choice")
        }
        self.emit(choice, usage: completion.usage, continuation)
        continuation.finish()
    }

    /// A choice's events: reasoning, text, finish reason; then the usage.
    private func emit(_ choice: WireChunk.Choice?, usage: WireChunk.Usage?, _ continuation: EventSink) {
        if let choice {
            if let reasoning = choice.delta?.reasoning_content ?? choice.delta?.reasoning, !reasoning.isEmpty {
                continuation.yield(.reasoning(reasoning))
            }
            if let content = choice.delta?.content, !content.isEmpty {
                continuation.yield(.text(content))
            }
            if let reason = choice.finish_reason {
                continuation.yield(.finished(reason: reason))
            }
        }
        if let usage {
            continuation.yield(.usage(ChatUsage(inputTokens: usage.prompt_tokens ?? 0, outputTokens: usage.completion_tokens ?? 0)))
        }
    }

    /// An error the upstream sent in a 2xx body (a stream's event or a whole answer).
    private func inBandError(_ error: WireError) -> ProviderError {
        let code = error.code?.text ?? error.type
        let message = self.redact(error.message ?? "an error event without a message")
        if let code, ["insufficient_quota", "billing_hard_limit_reached"].contains(code) {
            return ProviderError(.spendLimit, "in-band error \(code): \(message)")
        }
        if code == "overloaded_error" || error.type == "overloaded_error" {
            return ProviderError(.overloaded, "in-band error \(code ?? "overloaded_error"): \(message)")
        }
        return ProviderError(.inBand(code: code), "in-band error\(code.map { " \($0)" } ?? ""): \(message)")
    }

    private func read(
        _ http: HTTPClientRequest, activity: Activity,
        _ continuation: EventSink
    ) async throws {
        var body = try await ProviderTransport.open(
            http, client: self.httpClient, activity: activity, maximumErrorBodySize: self.maximumErrorBodySize,
            transportError: self.transportError(_:afterHead:), statusError: self.statusError)
        var decoder = SSEDecoder()
        while true {
            guard let buffer = try await body.next() else {
                throw ProviderError(.truncated, "the stream ended without [DONE]")
            }
            let events: [SSEEvent]
            do {
                events = try decoder.feed(buffer.readableBytesView)
            } catch {
                throw ProviderError(.malformed, "undecodable event stream: \(error)")
            }
            for event in events {
                let data = event.data
                if data == "[DONE]" {
                    continuation.finish()
                    // The rest is normally only the end of the chunked body.
                    await body.drain()
                    return
                }
                // Keel's one-pass JSON parser, not Codable: decoding every
                // chunk with JSONDecoder was 44 % of a non-streaming
                // completion's CPU (bench/openai-proxy.sh, PERF=1).
                guard let parsed = try? JSONValue.parse(data.utf8), let chunk = WireChunk(parsed) else {
                    throw ProviderError(.malformed, "a stream event is not a chat completion chunk: \(self.excerpt(data))")
                }
                if let error = chunk.error { throw self.inBandError(error) }
                self.emit(chunk.choices?.first(where: { ($0.index ?? 0) == 0 }), usage: chunk.usage, continuation)
            }
        }
    }

    // MARK: - Errors

    private func statusError(_ response: ProviderTransport.ErrorResponse) -> ProviderError {
        var type: String?
        var code: String?
        var message: String
        if let envelope = try? JSONDecoder().decode(WireErrorEnvelope.self, from: response.body),
            let error = envelope.error
        {
            type = error.type
            code = error.code?.text
            message = error.message ?? response.bodyExcerpt
        } else {
            message = response.bodyExcerptOrReason
        }
        if let code { message += " (\(code))" } else if let type { message += " (\(type))" }
        return ProviderError.fromStatus(
            response.status, type: type, code: code, message: self.redact(message), retryAfter: response.retryAfter)
    }

    private func transportError(_ error: any Error, afterHead: Bool) -> any Error {
        ProviderTransport.error(error, afterHead: afterHead, terminator: "[DONE]", baseURL: self.baseURL, redact: self.redact)
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

    struct StreamOptions: Encodable {
        var include_usage: Bool
    }

    var model: String
    var messages: [Message]
    var stream: Bool
    var stream_options: StreamOptions?
    var max_tokens: Int?
    var temperature: Double?
    var stop: [String]?
}

/// A code that OpenAI sends as a string and some compatible servers as a number.
private struct WireCode: Decodable {
    var text: String

    init(text: String) {
        self.text = text
    }

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let string = try? container.decode(String.self) {
            self.text = string
        } else {
            self.text = String(try container.decode(Int.self))
        }
    }
}

private struct WireError: Decodable {
    var message: String?
    var type: String?
    var code: WireCode?

    init(message: String?, type: String? = nil, code: WireCode? = nil) {
        self.message = message
        self.type = type
        self.code = code
    }

    enum CodingKeys: String, CodingKey { case message, type, code }

    init(from decoder: any Decoder) throws {
        // Some servers send the error as a bare string.
        if let text = try? decoder.singleValueContainer().decode(String.self) {
            self.message = text
            return
        }
        let container = try decoder.container(keyedBy: CodingKeys.self)
        self.message = try? container.decodeIfPresent(String.self, forKey: .message)
        self.type = try? container.decodeIfPresent(String.self, forKey: .type)
        self.code = try? container.decodeIfPresent(WireCode.self, forKey: .code)
    }
}

private struct WireErrorEnvelope: Decodable {
    var error: WireError?
}

private struct WireChunk {
    struct Choice {
        struct Delta {
            var content: String?
            var reasoning_content: String?
            var reasoning: String?
        }

        var index: Int?
        var delta: Delta?
        var finish_reason: String?
    }

    struct Usage {
        var prompt_tokens: Int?
        var completion_tokens: Int?
    }

    var choices: [Choice]?
    var usage: Usage?
    var error: WireError?

    /// A chunk from its JSON; nil when it is not an object or its fields
    /// have the wrong types (as Codable refused them). `whole` reads a
    /// `chat.completion` instead: each choice's `message` in place of its
    /// `delta`.
    init?(_ json: JSONValue, whole: Bool = false) {
        guard case .object(let o) = json else { return nil }
        if let value = o["choices"], value != .null {
            guard case .array(let items) = value else { return nil }
            var choices: [Choice] = []
            for item in items {
                guard case .object(let c) = item else { return nil }
                var choice = Choice()
                guard let index = Self.int(c["index"]), let reason = Self.string(c["finish_reason"]) else { return nil }
                choice.index = index
                choice.finish_reason = reason
                if let delta = c[whole ? "message" : "delta"], delta != .null {
                    guard case .object(let d) = delta, let content = Self.string(d["content"]),
                        let reasoningContent = Self.string(d["reasoning_content"]), let reasoning = Self.string(d["reasoning"])
                    else { return nil }
                    choice.delta = Choice.Delta(content: content, reasoning_content: reasoningContent, reasoning: reasoning)
                }
                choices.append(choice)
            }
            self.choices = choices
        }
        if let value = o["usage"], value != .null {
            guard case .object(let u) = value, let prompt = Self.int(u["prompt_tokens"]), let completion = Self.int(u["completion_tokens"]) else {
                return nil
            }
            self.usage = Usage(prompt_tokens: prompt, completion_tokens: completion)
        }
        if let value = o["error"], value != .null {
            switch value {
            case .string(let text): self.error = WireError(message: text)
            case .object(let e):
                var code: WireCode?
                switch e["code"] {
                case .string(let text)?: code = WireCode(text: text)
                case .int(let number)?: code = WireCode(text: String(number))
                default: break
                }
                self.error = WireError(message: e["message"]?.stringValue, type: e["type"]?.stringValue, code: code)
            default: self.error = WireError(message: value.serialized())
            }
        }
    }

    /// An optional string field: `.some(nil)` when absent or null, nil when of another type.
    private static func string(_ value: JSONValue?) -> String?? {
        switch value {
        case nil, .null?: .some(nil)
        case .string(let text)?: .some(text)
        default: nil
        }
    }

    private static func int(_ value: JSONValue?) -> Int?? {
        switch value {
        case nil, .null?: .some(nil)
        case .int(let number)?: .some(Int(number))
        default: nil
        }
    }
}
