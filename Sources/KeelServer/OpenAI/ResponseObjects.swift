import Foundation
import KeelCore
import KeelModels
import NIOCore

/// OpenAI's `response` object and stream events, built from what a
/// `openai.response` job holds: its input, its status and its log.
struct ResponseShape: Sendable {
    var id: String
    var createdAt: Int64
    var model: String
    var instructions: String?
    var background: Bool
    var maxOutputTokens: Int?
    var temperature: Double?
    var metadata: JSONValue

    static func responseID(jobID: String) -> String { "resp_" + jobID }
    static func itemID(jobID: String) -> String { "msg_" + jobID }

    /// The shape from the job's stored input.
    init(jobID: String, input: JSONValue) {
        let o = input.objectValue ?? [:]
        self.id = Self.responseID(jobID: jobID)
        self.createdAt = o["created_at"].flatMap { if case .int(let n) = $0 { n } else { nil } } ?? 0
        self.model = o["model"]?.stringValue ?? ""
        self.instructions = o["instructions"]?.stringValue
        self.background = o["background"]?.boolValue ?? false
        self.maxOutputTokens = o["max_output_tokens"].flatMap { if case .int(let n) = $0 { Int(n) } else { nil } }
        self.temperature = o["temperature"].flatMap {
            switch $0 {
            case .double(let d): d
            case .int(let n): Double(n)
            default: nil
            }
        }
        self.metadata = o["metadata"] ?? .object([:])
    }

    /// The output message: one `output_text` part.
    func item(jobID: String, text: String, status: String) -> JSONValue {
        .object([
            "type": .string("message"), "id": .string(Self.itemID(jobID: jobID)), "status": .string(status), "role": .string("assistant"),
            "content": text.isEmpty && status == "in_progress" ? .array([]) : .array([Self.part(text)]),
        ])
    }

    static func part(_ text: String) -> JSONValue {
        .object(["type": .string("output_text"), "text": .string(text), "annotations": .array([]), "logprobs": .array([])])
    }

    /// The `response` object. `status`: queued, in_progress, completed,
    /// failed, cancelled, incomplete.
    func object(
        jobID: String, status: String, text: String?, usage: ChatUsage? = nil, error: JSONValue = .null, model: String? = nil, completedAt: Int64? = nil
    ) -> JSONValue {
        var output: [JSONValue] = []
        if let text, !(text.isEmpty && ["queued", "failed", "cancelled"].contains(status)) {
            output = [self.item(jobID: jobID, text: text, status: status == "completed" ? "completed" : status == "in_progress" ? "in_progress" : "incomplete")]
        }
        return .object([
            "id": .string(self.id), "object": .string("response"), "created_at": .int(self.createdAt), "status": .string(status),
            "background": .bool(self.background), "error": error, "incomplete_details": .null,
            "instructions": self.instructions.map(JSONValue.string) ?? .null, "max_output_tokens": self.maxOutputTokens.map { .int(Int64($0)) } ?? .null,
            "model": .string(model ?? self.model), "output": .array(output), "parallel_tool_calls": .bool(false),
            "temperature": self.temperature.map(JSONValue.double) ?? .null, "tool_choice": .string("auto"), "tools": .array([]), "top_p": .null,
            "metadata": self.metadata, "completed_at": completedAt.map(JSONValue.int) ?? .null,
            "usage": usage.map {
                .object([
                    "input_tokens": .int(Int64($0.inputTokens)), "input_tokens_details": .object(["cached_tokens": .int(0)]),
                    "output_tokens": .int(Int64($0.outputTokens)), "output_tokens_details": .object(["reasoning_tokens": .int(0)]),
                    "total_tokens": .int(Int64($0.inputTokens + $0.outputTokens)),
                ])
            } ?? .null,
        ])
    }

    /// The answer's text so far in a job's log: its `response.output_text.delta`s
    /// (a retried attempt continues the text, it never withdraws it).
    static func text(of events: [JobEvent]) -> String {
        var text = ""
        for event in events where event.type == ResponseEvents.textDelta {
            text += (try? JSONValue.parse(Array(event.dataJSON.utf8)))?.objectValue?["delta"]?.stringValue ?? ""
        }
        return text
    }

    /// The response as it stands, for `GET /v1/responses/{id}`.
    static func current(_ job: Job, log: [JobEvent]) -> JSONValue {
        let input = (try? JSONValue.parse(Array(job.inputJSON.utf8))) ?? .null
        let shape = ResponseShape(jobID: job.id, input: input)
        switch job.status {
        case .succeeded:
            if let result = job.resultJSON, let stored = try? JSONValue.parse(Array(result.utf8)) { return stored }
            return shape.object(jobID: job.id, status: "completed", text: Self.text(of: log))
        case .queued:
            return shape.object(jobID: job.id, status: job.attempts == 0 ? "queued" : "in_progress", text: Self.text(of: log))
        case .running:
            return shape.object(jobID: job.id, status: "in_progress", text: Self.text(of: log))
        case .failed:
            let error = JSONValue.object(["code": .string(job.error?.code ?? "server_error"), "message": .string(job.error?.message ?? "The response failed.")])
            return shape.object(jobID: job.id, status: "failed", text: Self.text(of: log), error: error)
        case .cancelled:
            return shape.object(jobID: job.id, status: "cancelled", text: Self.text(of: log))
        }
    }
}

/// The stream events of `/v1/responses`, as job event types.
enum ResponseEvents {
    static let created = "response.created"
    static let inProgress = "response.in_progress"
    static let itemAdded = "response.output_item.added"
    static let partAdded = "response.content_part.added"
    static let textDelta = "response.output_text.delta"
    static let textDone = "response.output_text.done"
    static let partDone = "response.content_part.done"
    static let itemDone = "response.output_item.done"
    static let completed = "response.completed"
    static let failed = "response.failed"
    static let incomplete = "response.incomplete"

    /// One job event as OpenAI's SSE: the `response.*` events the job wrote,
    /// each with its log position as `sequence_number` (so `starting_after`
    /// is `Last-Event-ID`), and, for a job that ended without finishing, a
    /// last `response.failed` (or `response.incomplete` with status
    /// `cancelled`) built from its `done`. Keel's own events (`reset`,
    /// `progress`) are not part of this protocol and are left out.
    @Sendable static func encode(_ event: JobEvent, into buffer: inout ByteBuffer) {
        if event.type.hasPrefix("response."), event.dataJSON.hasPrefix("{"), event.dataJSON.count > 2 {
            buffer.writeString("id: \(event.sequence)\nevent: \(event.type)\ndata: {\"sequence_number\":\(event.sequence),")
            buffer.writeString(String(event.dataJSON.dropFirst()))
            buffer.writeString("\n\n")
            return
        }
        guard event.type == JobEventType.done, let job = (try? JSONValue.parse(Array(event.dataJSON.utf8)))?.objectValue,
            let jobID = job["id"]?.stringValue, let status = job["status"]?.stringValue, status != "succeeded"
        else { return }
        let shape = ResponseShape(jobID: jobID, input: job["input"] ?? .null)
        let type: String
        let response: JSONValue
        if status == "cancelled" {
            type = Self.incomplete
            response = shape.object(jobID: jobID, status: "cancelled", text: nil)
        } else {
            type = Self.failed
            let error = job["error"]?.objectValue
            response = shape.object(
                jobID: jobID, status: "failed", text: nil,
                error: .object(["code": error?["code"] ?? .string("server_error"), "message": error?["message"] ?? .string("The response failed.")]))
        }
        let data = JSONValue.object(["type": .string(type), "sequence_number": .int(event.sequence), "response": response])
        buffer.writeString("id: \(event.sequence)\nevent: \(type)\ndata: \(data.serialized())\n\n")
    }
}
