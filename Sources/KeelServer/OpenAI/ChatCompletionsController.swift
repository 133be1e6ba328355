import Foundation
import Hummingbird
import KeelCore
import KeelModels
import NIOCore

/// `POST /v1/chat/completions` and `GET /v1/models`: OpenAI's chat API in
/// front of the router, so the `openai` client (and anything built on it)
/// gets Keel's chains, fallback and shared cooldowns unchanged. A
/// completion is answered within its request (it is not a job: a client of
/// this API retries a request itself); `/v1/responses` is the durable form.
struct ChatCompletionsController: Sendable {
    let router: ModelRouter?
    let keys: APIKeyAccess
    let maxBodyBytes: Int
    let clock: any KeelClock
    /// When this process loaded the models file: the models' `created`.
    let loadedAt: Date

    func register(in app: inout KeelModuleBuilder) {
        app.route("/v1/models", .get, openAIRoute(self.models))
        app.route("/v1/models/:id", .get, openAIRoute(self.model))
        app.route("/v1/chat/completions", .post, openAIRoute(self.complete))
    }

    // MARK: - Models

    func modelJSON(_ name: String) -> JSONValue {
        .object(["id": .string(name), "object": .string("model"), "created": .int(Int64(self.loadedAt.timeIntervalSince1970)), "owned_by": .string("keel")])
    }

    /// Every chain, then every model, by name.
    @Sendable func models(_ request: Request, context: KeelRequestContext) async throws -> Response {
        _ = try await self.keys.authenticate(request)
        let names = self.router.map { $0.catalog.chainOrder + $0.catalog.modelOrder } ?? []
        return .json(JSONValue.object(["object": .string("list"), "data": .array(names.map(self.modelJSON))]).serialized())
    }

    @Sendable func model(_ request: Request, context: KeelRequestContext) async throws -> Response {
        _ = try await self.keys.authenticate(request)
        let name = context.parameters.get("id") ?? ""
        guard let router = self.router, router.catalog.route(name) != nil else {
            throw OpenAIError(.notFound, "The model '\(name)' does not exist.", code: "model_not_found", param: "model")
        }
        return .json(self.modelJSON(name).serialized())
    }

    // MARK: - Completions

    struct Input {
        var model: String
        var router: ModelRouter
        var request: RoutedRequest
        var stream: Bool
        var includeUsage: Bool
    }

    func input(_ body: JSONValue?) throws -> Input {
        let members = try OpenAIRequests.object(body)
        try OpenAIRequests.refuseUnsupported(members)
        let (model, router) = try OpenAIRequests.model(members, router: self.router)
        guard case .array(let items)? = members["messages"], !items.isEmpty else {
            throw OpenAIError.invalid("messages must be a non-empty list of messages.", param: "messages")
        }
        let messages = try items.enumerated().map { try OpenAIRequests.message($0.element, param: "messages[\($0.offset)]") }
        let stream = try OpenAIRequests.bool(members, "stream")
        var includeUsage = false
        if let options = members["stream_options"], options != .null {
            guard case .object(let o) = options else { throw OpenAIError.invalid("stream_options must be an object.", param: "stream_options") }
            guard stream else {
                throw OpenAIError.invalid("stream_options is only allowed when stream is true.", param: "stream_options")
            }
            includeUsage = try OpenAIRequests.bool(o, "include_usage")
        }
        let request = RoutedRequest(
            route: model, messages: messages, maxTokens: try OpenAIRequests.positiveInt(members, ["max_completion_tokens", "max_tokens"]),
            temperature: try OpenAIRequests.temperature(members), stop: try OpenAIRequests.stop(members),
            // A client that waits for the whole answer: an upstream that can answer whole is asked to.
            stream: stream)
        return Input(model: model, router: router, request: request, stream: stream, includeUsage: includeUsage)
    }

    @Sendable func complete(_ request: Request, context: KeelRequestContext) async throws -> Response {
        var request = request
        let key = try await self.keys.authenticate(request)
        let input = try self.input(try await request.jsonBody(limit: self.maxBodyBytes))
        let id = "chatcmpl-" + Identifiers.random(byteCount: 12)
        let created = Int64(self.clock.now().timeIntervalSince1970)
        let events = RoutedEvents(input.router.stream(input.request))
        if !input.stream {
            return try await self.whole(events, id: id, created: created, input: input, key: key)
        }
        // The status is sent with the first byte: a request every model
        // refuses before answering is an HTTP error, not a broken stream.
        var early: [RouterEvent] = []
        var current = input.model
        while let event = try await events.next() {
            early.append(event)
            if case .model(let name, _) = event { current = name }
            if case .fallback = event { continue }
            if case .model = event { continue }
            break
        }
        let chunks = Chunks(id: id, created: created, includeUsage: input.includeUsage)
        let keys = self.keys
        var headers = HTTPFields()
        headers[.contentType] = "text/event-stream; charset=utf-8"
        headers[.cacheControl] = "no-cache"
        headers[.xAccelBuffering] = "no"
        let first = early
        let firstModel = current
        return Response(
            status: .ok, headers: headers,
            body: ResponseBody { writer in
                var model = firstModel
                var buffer = ByteBuffer()
                chunks.delta(&buffer, model: model, ["role": .string("assistant"), "content": .string("")])
                var summary: RoutingSummary?
                func handle(_ event: RouterEvent) {
                    switch event {
                    case .model(let name, _): model = name
                    case .fallback: break
                    case .text(let piece): chunks.delta(&buffer, model: model, ["content": .string(piece)])
                    case .reasoning(let piece): chunks.delta(&buffer, model: model, ["reasoning_content": .string(piece)])
                    case .usage: break
                    case .finished(let done): summary = done
                    }
                }
                do {
                    for event in first { handle(event) }
                    try await writer.write(buffer)
                    buffer.clear()
                    while let event = try await events.next() {
                        handle(event)
                        if buffer.readableBytes > 0 {
                            try await writer.write(buffer)
                            buffer.clear()
                        }
                    }
                    guard let summary else { throw RouterError(.modelsUnavailable, "the answer ended before it finished") }
                    chunks.finish(&buffer, model: summary.answeredBy, reason: OpenAIRequests.finishReason(summary.finishReason))
                    if input.includeUsage { chunks.usage(&buffer, model: summary.answeredBy, summary.totalUsage) }
                    buffer.writeString("data: [DONE]\n\n")
                    try await writer.write(buffer)
                    try await writer.finish(nil)
                    await Self.record(summary, key: key, keys: keys)
                } catch let error as RouterError {
                    // After the first byte: an error event, which the official
                    // client raises as an APIError.
                    buffer.clear()
                    let failure = OpenAIError(HTTPResponse.Status(code: error.status), error.message, code: error.code.rawValue)
                    buffer.writeString("data: \(JSONValue.object(["error": failure.json]).serialized())\n\n")
                    try await writer.write(buffer)
                    try await writer.finish(nil)
                }
            })
    }

    /// The whole answer as one `chat.completion`.
    func whole(_ events: RoutedEvents, id: String, created: Int64, input: Input, key: APIKey) async throws -> Response {
        var text = ""
        var reasoning = ""
        var summary: RoutingSummary?
        while let event = try await events.next() {
            switch event {
            case .text(let piece): text += piece
            case .reasoning(let piece): reasoning += piece
            case .finished(let done): summary = done
            case .model, .fallback, .usage: break
            }
        }
        guard let summary else { throw RouterError(.modelsUnavailable, "the answer ended before it finished") }
        var message: [String: JSONValue] = ["role": .string("assistant"), "content": .string(text), "refusal": .null]
        if !reasoning.isEmpty { message["reasoning_content"] = .string(reasoning) }
        let usage = summary.totalUsage
        let body = JSONValue.object([
            "id": .string(id), "object": .string("chat.completion"), "created": .int(created), "model": .string(summary.answeredBy),
            "system_fingerprint": .null,
            "choices": .array([
                .object([
                    "index": .int(0), "message": .object(message), "logprobs": .null,
                    "finish_reason": .string(OpenAIRequests.finishReason(summary.finishReason)),
                ])
            ]),
            "usage": Chunks.usageJSON(usage),
        ])
        await Self.record(summary, key: key, keys: self.keys)
        return .json(body.serialized(), headers: [.cacheControl: "no-store"])
    }

    /// Counts the request and its tokens against the key, by model.
    static func record(_ summary: RoutingSummary, key: APIKey, keys: APIKeyAccess) async {
        for (model, usage) in summary.usageByModel {
            await keys.recordUsage(key, model: model, usage: (usage.inputTokens, usage.outputTokens))
        }
    }

    /// `chat.completion.chunk` events.
    struct Chunks: Sendable {
        let id: String
        let created: Int64
        let includeUsage: Bool

        static func usageJSON(_ usage: ChatUsage) -> JSONValue {
            .object([
                "prompt_tokens": .int(Int64(usage.inputTokens)), "completion_tokens": .int(Int64(usage.outputTokens)),
                "total_tokens": .int(Int64(usage.inputTokens + usage.outputTokens)),
            ])
        }

        private func write(_ buffer: inout ByteBuffer, model: String, choices: [JSONValue], usage: JSONValue?) {
            var o: [String: JSONValue] = [
                "id": .string(self.id), "object": .string("chat.completion.chunk"), "created": .int(self.created), "model": .string(model),
                "system_fingerprint": .null, "choices": .array(choices),
            ]
            if self.includeUsage { o["usage"] = usage ?? .null }
            buffer.writeString("data: ")
            buffer.writeString(JSONValue.object(o).serialized())
            buffer.writeString("\n\n")
        }

        func delta(_ buffer: inout ByteBuffer, model: String, _ delta: [String: JSONValue]) {
            self.write(
                &buffer, model: model,
                choices: [.object(["index": .int(0), "delta": .object(delta), "logprobs": .null, "finish_reason": .null])], usage: nil)
        }

        func finish(_ buffer: inout ByteBuffer, model: String, reason: String) {
            self.write(
                &buffer, model: model,
                choices: [.object(["index": .int(0), "delta": .object([:]), "logprobs": .null, "finish_reason": .string(reason)])], usage: nil)
        }

        func usage(_ buffer: inout ByteBuffer, model: String, _ usage: ChatUsage) {
            self.write(&buffer, model: model, choices: [], usage: Self.usageJSON(usage))
        }
    }
}
