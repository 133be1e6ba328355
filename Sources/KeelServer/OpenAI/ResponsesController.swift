import Foundation
import Hummingbird
import KeelCore
import KeelModels

/// `/v1/responses`: OpenAI's Responses API, each response a durable
/// `openai.response` job owned by the API key (a key acts as its own
/// session). Streamed, its events are the job's log with their positions
/// as `sequence_number`, so `GET /v1/responses/{id}?stream=true&starting_after=N`
/// resumes on any instance, and a worker's death only moves the answer to
/// another worker.
struct ResponsesController: Sendable {
    let router: ModelRouter?
    let keys: APIKeyAccess
    let queue: any JobQueue
    let events: any EventLog
    let jobs: JobSubmitter
    let streams: JobStreams
    let maxAttempts: Int
    let maxActiveJobs: Int
    let maxBodyBytes: Int
    let resultTTL: Duration
    let clock: any KeelClock
    /// How long a request that neither streams nor runs in the background
    /// waits for its answer (the router's total time limit and a margin).
    let waitLimit: Duration

    func register(in app: inout KeelModuleBuilder) {
        app.route("/v1/responses", .post, openAIRoute(self.create))
        app.route("/v1/responses/:id", .get, openAIRoute(self.read))
        app.route("/v1/responses/:id/cancel", .post, openAIRoute(self.cancel))
    }

    /// The job input: the conversation and the response's fields.
    func input(_ body: JSONValue?, key: APIKey) throws -> (input: JSONValue, stream: Bool, background: Bool) {
        let members = try OpenAIRequests.object(body)
        try OpenAIRequests.refuseUnsupported(members)
        let (model, _) = try OpenAIRequests.model(members, router: self.router)
        var messages: [ChatMessage] = []
        var instructions: String?
        if let value = members["instructions"], value != .null {
            guard case .string(let text) = value else { throw OpenAIError.invalid("instructions must be a string.", param: "instructions") }
            instructions = text
            messages.append(.system(text))
        }
        switch members["input"] {
        case .string(let text)?:
            messages.append(.user(text))
        case .array(let items)? where !items.isEmpty:
            for (index, item) in items.enumerated() {
                if let type = item.objectValue?["type"]?.stringValue, type != "message" {
                    throw OpenAIError.invalid(
                        "input[\(index)] is a '\(type)' item; Keel takes messages only.", param: "input[\(index)]", code: "unsupported_content")
                }
                messages.append(try OpenAIRequests.message(item, param: "input[\(index)]"))
            }
        default:
            throw OpenAIError.invalid("input must be a string or a non-empty list of messages.", param: "input")
        }
        let stream = try OpenAIRequests.bool(members, "stream")
        let background = try OpenAIRequests.bool(members, "background")
        var o: [String: JSONValue] = [
            "model": .string(model), "created_at": .int(Int64(self.clock.now().timeIntervalSince1970)), "background": .bool(background),
            "key_id": .string(key.id),
            "messages": .array(messages.map { .object(["role": .string($0.role.rawValue), "content": .string($0.content)]) }),
        ]
        if let instructions { o["instructions"] = .string(instructions) }
        if let tokens = try OpenAIRequests.positiveInt(members, ["max_output_tokens"]) { o["max_output_tokens"] = .int(Int64(tokens)) }
        if let temperature = try OpenAIRequests.temperature(members) { o["temperature"] = .double(temperature) }
        if let metadata = members["metadata"], metadata != .null {
            guard case .object(let pairs) = metadata, pairs.count <= 16, pairs.values.allSatisfy({ ($0.stringValue?.count ?? 513) <= 512 }),
                pairs.keys.allSatisfy({ $0.count <= 64 })
            else {
                throw OpenAIError.invalid("metadata must be an object of at most 16 string values (keys up to 64 characters, values up to 512).", param: "metadata")
            }
            o["metadata"] = metadata
        }
        return (.object(o), stream, background)
    }

    @Sendable func create(_ request: Request, context: KeelRequestContext) async throws -> Response {
        var request = request
        let key = try await self.keys.authenticate(request)
        let (input, stream, background) = try self.input(try await request.jsonBody(limit: self.maxBodyBytes), key: key)
        if self.maxActiveJobs > 0, try await self.queue.activeJobCount(sessionID: key.sessionID) >= self.maxActiveJobs {
            throw OpenAIError(
                .tooManyRequests, "This API key has \(self.maxActiveJobs) responses queued or in progress, the most allowed at once (--session-max-active-jobs).",
                type: "requests", code: "too_many_responses", retryAfterSeconds: 1)
        }
        let job = try await self.jobs.submit(
            NewJob(sessionID: key.sessionID, type: ResponseJob.type, inputJSON: input.serialized(), maxAttempts: self.maxAttempts))
        if stream {
            return self.stream(job.id, after: 0, context: context)
        }
        if !background {
            _ = try await self.streams.waitUntilDone(jobID: job.id, timeout: self.waitLimit)
        }
        return try await self.current(job.id, key: key)
    }

    func stream(_ jobID: String, after: Int64, context: KeelRequestContext) -> Response {
        self.streams.response(jobID: jobID, after: after, context: context) { event, buffer in
            ResponseEvents.encode(event, into: &buffer)
        }
    }

    /// The key's response job, or 404 in OpenAI's shape.
    func owned(_ context: KeelRequestContext, key: APIKey) async throws -> Job {
        let id = context.parameters.get("id") ?? ""
        guard id.hasPrefix("resp_"), id.utf8.count <= 80, let job = try await self.queue.job(id: String(id.dropFirst(5))),
            job.sessionID == key.sessionID, job.type == ResponseJob.type
        else {
            throw OpenAIError(.notFound, "No response found with id '\(id)'.", code: "not_found", param: "response_id")
        }
        return job
    }

    func current(_ jobID: String, key: APIKey) async throws -> Response {
        guard let job = try await self.queue.job(id: jobID) else {
            throw OpenAIError(.notFound, "No response found with id '\(ResponseShape.responseID(jobID: jobID))'.", code: "not_found")
        }
        let log = job.status == .succeeded ? [] : try await self.events.allEvents(jobID: jobID)
        return .json(ResponseShape.current(job, log: log).serialized(), headers: [.cacheControl: "no-store"])
    }

    /// The response, or with `stream=true` its events after `starting_after`.
    @Sendable func read(_ request: Request, context: KeelRequestContext) async throws -> Response {
        let key = try await self.keys.authenticate(request)
        let job = try await self.owned(context, key: key)
        let query = request.uri.queryParameters
        let streamed = query["stream"].map { $0 == "true" || $0 == "1" } ?? false
        guard streamed else {
            if query["starting_after"] != nil {
                throw OpenAIError.invalid("starting_after is only used with stream=true.", param: "starting_after")
            }
            return try await self.current(job.id, key: key)
        }
        var after: Int64 = 0
        if let text = query["starting_after"].map(String.init) {
            guard let number = Int64(text), number >= 0 else {
                throw OpenAIError.invalid("starting_after must be a sequence number (a non-negative integer).", param: "starting_after")
            }
            after = number
        }
        return self.stream(job.id, after: after, context: context)
    }

    /// Cancels a background response; answers it as it ends (cancelled, or
    /// finished if it finished first).
    @Sendable func cancel(_ request: Request, context: KeelRequestContext) async throws -> Response {
        let key = try await self.keys.authenticate(request)
        let job = try await self.owned(context, key: key)
        let input = (try? JSONValue.parse(Array(job.inputJSON.utf8)))?.objectValue ?? [:]
        guard input["background"]?.boolValue == true else {
            throw OpenAIError.invalid("Only responses created with background=true can be cancelled.", code: "not_background")
        }
        // A running answer stops once its worker hears of it.
        try await self.jobs.cancel(id: job.id, resultTTL: self.resultTTL)
        _ = try await self.streams.waitUntilDone(jobID: job.id, timeout: .seconds(15))
        return try await self.current(job.id, key: key)
    }
}
