import Foundation
import KeelCore
import KeelModels
import Logging

/// `openai.response`: one `/v1/responses` answer as a durable job. Its log
/// is the response's stream: `response.created`, `response.in_progress`,
/// the output item and part, one `response.output_text.delta` per piece,
/// then the `done`s and `response.completed` (whose response is also the
/// job's result). A retried attempt (its worker died) continues the text
/// the log already holds, through the router's continuation, so a client
/// resuming with `starting_after` reads it whole and once.
struct ResponseJob: JobHandler {
    static let type = "openai.response"
    var lane: JobLane { .model }
    var type: String { Self.type }

    let router: ModelRouter?
    let keys: any APIKeyStore
    let clock: any KeelClock
    let logger: Logger

    /// Only `POST /v1/responses` starts one (it checks the key and the input).
    func validate(_ input: JSONValue) throws -> JSONValue {
        throw KeelError(.invalidInput, "openai.response jobs are started by POST /v1/responses.", hint: "Use the OpenAI-compatible API with an API key.")
    }

    func run(_ job: JobContext) async throws -> JSONValue {
        let shape = ResponseShape(jobID: job.id, input: job.input)
        let o = job.input.objectValue ?? [:]
        let messages = try (o["messages"]?.arrayValue ?? []).enumerated().map { try OpenAIRequests.message($0.element, param: "input[\($0.offset)]") }
        let logged = try await job.loggedEvents()
        if let completed = logged.last(where: { $0.type == ResponseEvents.completed }),
            let response = (try? JSONValue.parse(Array(completed.dataJSON.utf8)))?.objectValue?["response"]
        {
            // An earlier attempt finished the answer and died before the job did.
            return response
        }
        guard let router = self.router else {
            throw JobHandlerFailure(code: "no_models_configured", message: "No models are configured on the instance that ran the response.", retryable: false)
        }
        let types = Set(logged.map(\.type))
        let delivered = ResponseShape.text(of: logged)
        let itemID = ResponseShape.itemID(jobID: job.id)
        let start: [(String, [String: JSONValue])] = [
            (ResponseEvents.created, ["response": shape.object(jobID: job.id, status: "in_progress", text: nil)]),
            (ResponseEvents.inProgress, ["response": shape.object(jobID: job.id, status: "in_progress", text: nil)]),
            (ResponseEvents.itemAdded, ["output_index": .int(0), "item": shape.item(jobID: job.id, text: "", status: "in_progress")]),
            (
                ResponseEvents.partAdded,
                ["item_id": .string(itemID), "output_index": .int(0), "content_index": .int(0), "part": ResponseShape.part("")]
            ),
        ]
        for (type, data) in start where !types.contains(type) {
            try await job.emit(type, .object(data.merging(["type": .string(type)]) { $1 }))
        }

        var text = delivered
        var summary: RoutingSummary?
        do {
            let request = RoutedRequest(
                route: shape.model, messages: messages, maxTokens: shape.maxOutputTokens, temperature: shape.temperature, continuing: delivered)
            // One log write per batch: under load an answer's pieces share writes.
            try await forEachBatch(of: router.stream(request)) { batch in
                for event in batch {
                    switch event {
                    case .text(let piece):
                        text += piece
                        try await job.emit(
                            ResponseEvents.textDelta,
                            .object([
                                "type": .string(ResponseEvents.textDelta), "item_id": .string(itemID), "output_index": .int(0), "content_index": .int(0),
                                "delta": .string(piece), "logprobs": .array([]),
                            ]))
                    case .finished(let done): summary = done
                    case .model, .fallback, .reasoning, .usage: break
                    }
                }
            }
            try Task.checkCancellation()
            guard summary != nil else { throw RouterError(.modelsUnavailable, "the answer ended before it finished") }
        } catch let error as RouterError {
            let retryable = (error.code == .modelsUnavailable || error.code == .timeout) && job.attempt < job.maxAttempts
            throw JobHandlerFailure(code: error.code.rawValue, message: error.message, retryable: retryable)
        }
        guard let summary else { throw CancellationError() }
        let finishedAt = Int64(self.clock.now().timeIntervalSince1970)
        let response = shape.object(
            jobID: job.id, status: "completed", text: text, usage: summary.totalUsage, model: summary.answeredBy, completedAt: finishedAt)
        let item = shape.item(jobID: job.id, text: text, status: "completed")
        let end: [(String, [String: JSONValue])] = [
            (
                ResponseEvents.textDone,
                ["item_id": .string(itemID), "output_index": .int(0), "content_index": .int(0), "text": .string(text), "logprobs": .array([])]
            ),
            (
                ResponseEvents.partDone,
                ["item_id": .string(itemID), "output_index": .int(0), "content_index": .int(0), "part": ResponseShape.part(text)]
            ),
            (ResponseEvents.itemDone, ["output_index": .int(0), "item": item]),
            (ResponseEvents.completed, ["response": response]),
        ]
        for (type, data) in end {
            try await job.emit(type, .object(data.merging(["type": .string(type)]) { $1 }))
        }
        if let keyID = o["key_id"]?.stringValue {
            let now = self.clock.now()
            for (model, tokens) in summary.usageByModel {
                do {
                    try await self.keys.recordUsage(keyID: keyID, model: model, inputTokens: tokens.inputTokens, outputTokens: tokens.outputTokens, now: now)
                } catch {
                    self.logger.warning("could not record an API key's usage", metadata: ["keel.job": "\(job.id)", "keel.error": "\(error)"])
                }
            }
        }
        return response
    }
}
