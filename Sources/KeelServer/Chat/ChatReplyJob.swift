import Foundation
import KeelCore
import KeelModels
import Logging

/// `chat.reply`: answers one user message of a chat, streamed as the job's
/// events (DESIGN.md "Conversations and analysis"):
/// `progress` (`loading_documents` 30 %, `generating_response` 80 %),
/// `sources`, `model`, `fallback`, `reasoning`, `token`, `usage`, then the
/// job's `done` whose `result` is the stored assistant message.
///
/// A retried attempt (its worker died, or drained) continues the same
/// answer: the text earlier attempts streamed is in the job's log, so the
/// router is asked to continue it (``RoutedRequest/continuing``) with the
/// same sources, and the client's text is neither lost nor repeated. The
/// stored message is written with the attempt number: a later attempt's
/// write replaces an earlier one's, never the reverse.
struct ChatReplyJob: JobHandler {
    static let type = "chat.reply"
    var lane: JobLane { .model }
    var type: String { Self.type }

    let chats: any ChatStore
    let documents: any DocumentStore
    let router: ModelRouter?
    let settings: ChatSettings
    let clock: any KeelClock
    let logger: Logger

    struct Input: Sendable {
        var chatID: String
        var messageID: String
        var question: String
        var documents: [String]
        var autoDocuments: Bool
        var chain: String?

        init(_ json: JSONValue) throws {
            guard case .object(let o) = json, case .string(let chat)? = o["chat_id"], case .string(let message)? = o["message_id"],
                case .string(let question)? = o["question"]
            else {
                throw KeelError(.invalidInput, "chat.reply needs chat_id, message_id and question.", hint: "Send a message with POST /api/chats/{id}/messages.")
            }
            self.chatID = chat
            self.messageID = message
            self.question = question
            self.documents = o["documents"]?.arrayValue?.compactMap(\.stringValue) ?? []
            self.autoDocuments = o["auto_documents"]?.boolValue ?? true
            self.chain = o["chain"]?.stringValue
        }

        var json: JSONValue {
            var o: [String: JSONValue] = [
                "chat_id": .string(self.chatID), "message_id": .string(self.messageID), "question": .string(self.question),
                "documents": .array(self.documents.map(JSONValue.string)), "auto_documents": .bool(self.autoDocuments),
            ]
            if let chain = self.chain { o["chain"] = .string(chain) }
            return .object(o)
        }
    }

    /// A reply is started by sending a message, which stores the question
    /// and checks it (length, documents, chain); `POST /api/jobs` cannot.
    func validate(_ input: JSONValue) throws -> JSONValue {
        throw KeelError(.invalidInput, "chat.reply jobs are started by sending a message.", hint: #"POST /api/chats/{id}/messages {"content": "…"}."#)
    }

    func run(_ job: JobContext) async throws -> JSONValue {
        let input = try Input(job.input)
        guard try await self.chats.chat(id: input.chatID, sessionID: job.sessionID) != nil else {
            throw JobHandlerFailure(code: "not_found", message: "The chat was deleted.", retryable: false)
        }
        // What earlier attempts already streamed: the answer so far, the
        // sources it was built on, the models it used. Keel appends a
        // `reset` before a retried attempt (clients drop what they showed
        // since the previous one), so the retry first replays the answer so
        // far as one `token`, then continues it: a client that honours
        // `reset` ends with the whole answer once.
        let logged = try await job.loggedEvents()
        let delivered = Self.answerSoFar(logged)
        var loggedSources: [ChatSource]?
        var modelsSoFar: [String] = []
        for event in logged {
            let data = (try? JSONValue.parse(Array(event.dataJSON.utf8))) ?? .null
            switch event.type {
            case "sources": loggedSources = data.objectValue?["sources"]?.arrayValue?.compactMap(ChatSource.init(json:)) ?? []
            case "model":
                if let name = data.objectValue?["name"]?.stringValue, modelsSoFar.last != name { modelsSoFar.append(name) }
            default: break
            }
        }

        let sources: [ChatSource]
        if let loggedSources {
            sources = loggedSources
            // The retried attempt's own stream starts over: its sources, and
            // the answer so far.
            try await job.emit("sources", .object(["sources": .array(sources.map(\.json))]))
            if !delivered.isEmpty { try await job.token(delivered) }
        } else {
            try await job.progress(stage: "loading_documents", percent: 30)
            sources = try await self.retrieve(input, sessionID: job.sessionID)
            try await job.emit("sources", .object(["sources": .array(sources.map(\.json))]))
        }
        let everything = try await self.chats.messages(chatID: input.chatID, sessionID: job.sessionID)
        let earlier = Array(everything.prefix { $0.id != input.messageID })
        let history = ChatPrompts.history(earlier, tokens: self.settings.historyTokens)
        try await job.progress(stage: "generating_response", percent: 80)

        var reply = ChatMessageRecord(
            id: "msg_" + job.id, chatID: input.chatID, role: "assistant", content: delivered, status: .complete, jobID: job.id, attempt: job.attempt,
            metadata: ["sources": .array(sources.map(\.json))], createdAt: self.clock.now())

        guard let router = self.router else {
            return try await self.retrievalOnly(job, input: input, sources: sources, delivered: delivered, reply: reply)
        }
        var models = modelsSoFar
        // The model now answering: it counts as used from its first text (so
        // a stopped or failed answer names who wrote it, as a finished one does).
        var answering: String?
        var finished = false
        var fallbacks: [JSONValue] = []
        var usage: [String: JSONValue] = [:]
        do {
            let request = RoutedRequest(
                route: input.chain, messages: ChatPrompts.reply(question: input.question, history: history, sources: sources), continuing: delivered)
            // One log write per batch: under load an answer's tokens share writes.
            try await forEachBatch(of: router.stream(request)) { batch in
                for event in batch {
                    switch event {
                    case .model(let name, let provider):
                        answering = name
                        try await job.emit("model", .object(["name": .string(name), "provider": .string(provider)]))
                    case .fallback(let fallback):
                        let json = Self.json(fallback)
                        fallbacks.append(json)
                        try await job.emit("fallback", json)
                    case .text(let piece):
                        if let answering, models.last != answering { models.append(answering) }
                        reply.content += piece
                        try await job.token(piece)
                    case .reasoning(let piece):
                        try await job.emit("reasoning", .object(["text": .string(piece)]))
                    case .usage(let model, let tokens):
                        let json = JSONValue.object([
                            "model": .string(model), "input_tokens": .int(Int64(tokens.inputTokens)), "output_tokens": .int(Int64(tokens.outputTokens)),
                        ])
                        usage[model] = json
                        try await job.emit("usage", json)
                    case .finished(let summary):
                        // The models that wrote text are in already; the one
                        // that finished may have written none.
                        if models.last != summary.answeredBy { models.append(summary.answeredBy) }
                        reply.metadata["finish_reason"] = .string(summary.finishReason)
                        finished = true
                    }
                }
            }
            // A cancelled task ends the stream early without an error.
            try Task.checkCancellation()
            guard finished else { throw RouterError(.modelsUnavailable, "the answer ended before it finished") }
        } catch let error as RouterError {
            reply.status = .failed
            reply.metadata.merge(Self.metadata(models: models, fallbacks: fallbacks + error.fallbacks.map(Self.json), usage: usage)) { $1 }
            reply.metadata["error"] = .object(["code": .string(error.code.rawValue), "message": .string(error.message)])
            // A retry continues the answer; only the last attempt's failure is stored.
            let retryable = (error.code == .modelsUnavailable || error.code == .timeout) && job.attempt < job.maxAttempts
            if !retryable { try await self.chats.recordReply(reply) }
            throw JobHandlerFailure(code: error.code.rawValue, message: error.message, retryable: retryable)
        } catch {
            // Cancelled: by the user (then the partial answer stays, marked
            // stopped), or the lease was lost or the process drains (then a
            // retry continues it). The task is cancelled, so the store is
            // asked from a task of its own, which is not.
            guard Task.isCancelled || error is CancellationError else { throw error }
            var stopped = reply
            stopped.status = .stopped
            stopped.metadata.merge(Self.metadata(models: models, fallbacks: fallbacks, usage: usage)) { $1 }
            let chats = self.chats
            await Task {
                if await job.cancelRequested() { _ = try? await chats.recordReply(stopped) }
            }.value
            throw error
        }
        reply.metadata.merge(Self.metadata(models: models, fallbacks: fallbacks, usage: usage)) { $1 }
        try await self.chats.recordReply(reply)
        return ChatsController.json(reply)
    }

    /// The answer so far in a job's log: the text of the latest attempt
    /// that streamed any. Each attempt's stream (the events after a
    /// `reset`) starts with the answer so far as one `token` and goes on
    /// from there, so that attempt's text is the whole answer so far. The
    /// attempt just before may have streamed none (killed, or failed,
    /// between its claim and its replay): the text is further back.
    static func answerSoFar(_ logged: [JobEvent]) -> String {
        var attempts: [String] = [""]
        for event in logged {
            switch event.type {
            case JobEventType.reset: attempts.append("")
            case JobEventType.token:
                attempts[attempts.count - 1] += (try? JSONValue.parse(Array(event.dataJSON.utf8)))?.objectValue?["text"]?.stringValue ?? ""
            default: break
            }
        }
        return attempts.last { !$0.isEmpty } ?? ""
    }

    /// Without models: the passages themselves, streamed like an answer and
    /// labelled as not a model's (`model: "retrieval-only"`).
    func retrievalOnly(_ job: JobContext, input: Input, sources: [ChatSource], delivered: String, reply: ChatMessageRecord) async throws -> JSONValue {
        var reply = reply
        try await job.emit("model", .object(["name": .string("retrieval-only"), "provider": .string("none")]))
        let text = ChatPrompts.retrievalOnly(question: input.question, sources: sources)
        // A retry has replayed the answer so far: only the rest is new.
        let rest = text.hasPrefix(delivered) ? String(text.dropFirst(delivered.count)) : ""
        var chunk = ""
        for character in rest {
            chunk.append(character)
            if chunk.count >= 64 && (character == " " || character == "\n") {
                try await job.token(chunk)
                chunk = ""
            }
        }
        if !chunk.isEmpty { try await job.token(chunk) }
        reply.content = text
        reply.metadata["models"] = .array([.string("retrieval-only")])
        reply.metadata["retrieval_only"] = .bool(true)
        try await self.chats.recordReply(reply)
        return ChatsController.json(reply)
    }

    /// The passages the prompt cites: explicit documents restrict the search;
    /// otherwise, with `auto_documents`, every ready document of the session.
    func retrieve(_ input: Input, sessionID: String) async throws -> [ChatSource] {
        guard self.settings.passages > 0, !input.documents.isEmpty || input.autoDocuments else { return [] }
        let hits = try await self.documents.search(
            DocumentSearch(text: input.question, sessionID: sessionID, documentIDs: input.documents, limit: self.settings.passages, match: .any))
        return hits.enumerated().map { offset, hit in
            ChatSource(
                number: offset + 1, documentID: hit.documentID, documentName: hit.documentTitle ?? hit.filename, sectionIndex: hit.sectionIndex,
                sectionTitle: hit.sectionTitle, heading: hit.heading, snippet: hit.snippet, text: hit.text)
        }
    }

    static func json(_ fallback: ModelFallback) -> JSONValue {
        .object([
            "from": .string(fallback.from), "to": .string(fallback.to), "reason": .string(fallback.reason), "detail": .string(fallback.detail),
            "after_first_token": .bool(fallback.afterFirstToken),
        ])
    }

    static func metadata(models: [String], fallbacks: [JSONValue], usage: [String: JSONValue]) -> [String: JSONValue] {
        ["models": .array(models.map(JSONValue.string)), "fallbacks": .array(fallbacks), "usage": .array(usage.keys.sorted().map { usage[$0]! })]
    }
}
