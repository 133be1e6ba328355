import Crypto
import Foundation
import Hummingbird
import KeelCore
import KeelModels

/// `/api/chats`: conversations of the session, and the messages that start
/// `chat.reply` jobs. A chat belongs to its session; to any other it does
/// not exist (404).
struct ChatsController: Sendable {
    let chats: any ChatStore
    let documents: any DocumentStore
    let queue: any JobQueue
    let jobs: JobSubmitter
    let streams: JobStreams
    let sessions: SessionAccess
    let router: ModelRouter?
    let settings: ChatSettings
    let maxAttempts: Int
    let maxActiveJobs: Int
    let maxBodyBytes: Int
    let resultTTL: Duration
    let clock: any KeelClock

    static let defaultPageSize = 20
    static let maxPageSize = 100
    static let maxTitleCharacters = 200
    static let maxDocuments = 20

    func register(in app: inout KeelModuleBuilder) {
        app.route("/api/chats", .post, self.create)
        app.route("/api/chats", .get, self.list)
        app.route("/api/chats/:id", .get, self.read)
        app.route("/api/chats/:id", .delete, self.delete)
        app.route("/api/chats/:id/messages", .post, self.send)
    }

    // MARK: - Chats

    @Sendable func create(_ request: Request, context: KeelRequestContext) async throws -> Response {
        var request = request
        let session = try await self.sessions.session(for: request)
        let body = try await request.jsonBody(limit: self.maxBodyBytes) ?? .object([:])
        guard case .object(let members) = body else { throw KeelError(.invalidInput, #"Send a JSON object, {} or {"title": "…"}."#) }
        if let unknown = members.keys.sorted().first(where: { $0 != "title" }) {
            throw KeelError(.invalidInput, "Unknown field '\(unknown)'.", hint: #"A chat is created from {} or {"title": "…"}."#)
        }
        var title = ""
        if let value = members["title"] {
            guard case .string(let text) = value, text.count <= Self.maxTitleCharacters else {
                throw KeelError(.invalidInput, "title must be a string of at most \(Self.maxTitleCharacters) characters.")
            }
            title = text.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        let now = self.clock.now()
        let chat = Chat(id: "chat_" + Identifiers.random(byteCount: 12), sessionID: session.id, title: title, createdAt: now)
        try await self.chats.createChat(chat)
        return .json(status: .created, headers: [.location: "/api/chats/\(chat.id)", .cacheControl: "no-store"]) { Self.write(chat, to: &$0) }
    }

    @Sendable func list(_ request: Request, context: KeelRequestContext) async throws -> Response {
        let session = try await self.sessions.session(for: request)
        let query = request.uri.queryParameters
        var limit = Self.defaultPageSize
        if let text = query["limit"].map(String.init) {
            guard let parsed = Int(text), (1...Self.maxPageSize).contains(parsed) else {
                throw KeelError(.invalidInput, "limit must be an integer from 1 to \(Self.maxPageSize).")
            }
            limit = parsed
        }
        var before: (Date, String)?
        if let text = query["cursor"].map(String.init), !text.isEmpty {
            guard let cursor = Self.cursor(text) else {
                throw KeelError(.invalidCursor, "This cursor is not one Keel gave out.", hint: "Pass next_cursor from the previous page unchanged.")
            }
            before = cursor
        }
        let page = try await self.chats.chats(sessionID: session.id, limit: limit + 1, before: before)
        let shown = Array(page.prefix(limit))
        let next = page.count > limit ? shown.last.map { "\(Int64(($0.updatedAt.timeIntervalSince1970 * 1000).rounded())).\($0.id)" } : nil
        return .json(headers: [.cacheControl: "no-store"]) { json in
            json.field("chats") { json in
                json.array { json in
                    for chat in shown { json.object { Self.write(chat, to: &$0) } }
                }
            }
            json.field("next_cursor", next)
        }
    }

    static func cursor(_ text: String) -> (Date, String)? {
        let parts = text.split(separator: ".", maxSplits: 1)
        guard parts.count == 2, let milliseconds = Int64(parts[0]), milliseconds >= 0, parts[1].utf8.count <= 64, !parts[1].isEmpty else { return nil }
        return (Date(timeIntervalSince1970: Double(milliseconds) / 1000), String(parts[1]))
    }

    @Sendable func read(_ request: Request, context: KeelRequestContext) async throws -> Response {
        let session = try await self.sessions.session(for: request)
        let chat = try await self.owned(context, session: session)
        let messages = try await self.chats.messages(chatID: chat.id, sessionID: session.id)
        return .json(headers: [.cacheControl: "no-store"]) { json in
            Self.write(chat, to: &json)
            json.field("messages") { json in
                json.array { json in
                    for message in messages { json.element(rawJSON: Self.json(message).serialized()) }
                }
            }
        }
    }

    @Sendable func delete(_ request: Request, context: KeelRequestContext) async throws -> Response {
        let session = try await self.sessions.session(for: request)
        let chat = try await self.owned(context, session: session)
        // Replies still being written: each question names its reply's job,
        // and a finished reply is stored under that job.
        let messages = try await self.chats.messages(chatID: chat.id, sessionID: session.id)
        let answered = Set(messages.compactMap(\.jobID))
        let unanswered = messages.compactMap { $0.metadata["reply_job_id"]?.stringValue }.filter { !answered.contains($0) }
        guard try await self.chats.deleteChat(id: chat.id, sessionID: session.id) else {
            throw KeelError(.notFound, "No chat '\(chat.id)' for this session.")
        }
        // They are cancelled (a queued one at once, a running one once its
        // worker hears of it); one still running meanwhile writes nothing,
        // its chat being gone.
        for jobID in unanswered { _ = try? await self.jobs.cancel(id: jobID, resultTTL: self.resultTTL) }
        return Response(status: .noContent)
    }

    private func owned(_ context: KeelRequestContext, session: Session) async throws -> Chat {
        guard let id = context.parameters.get("id"), id.utf8.count <= 64, let chat = try await self.chats.chat(id: id, sessionID: session.id) else {
            throw KeelError(.notFound, "No chat '\(context.parameters.get("id") ?? "")' for this session.")
        }
        return chat
    }

    // MARK: - Messages

    /// Stores the user's message and starts the `chat.reply` job: 202 with
    /// both, or, when the request accepts `text/event-stream`, the job's
    /// event stream at once (`Keel-Job-Id` names the job, to resume it).
    ///
    /// With an `Idempotency-Key` the question's id is derived from the key
    /// (per session and chat), so a repeat of the request, a client's retry
    /// or a balancer resending it after the instance died mid-request, finds
    /// the question the first one stored and answers with its reply (and
    /// submits that reply if the first request died before it could),
    /// rather than asking the question twice. The same key with another
    /// question is 409 `idempotency_key_reused`.
    @Sendable func send(_ request: Request, context: KeelRequestContext) async throws -> Response {
        var request = request
        let session = try await self.sessions.session(for: request)
        let chat = try await self.owned(context, session: session)
        let key = try JobsController.idempotencyKey(request)
        var input = try await self.messageInput(&request, chat: chat, sessionID: session.id)
        // The question names its reply's job (a page reloaded mid-answer
        // finds the stream to resume; deleting the chat cancels it).
        var jobID = Identifiers.random(byteCount: 16)
        var stored: ChatMessageRecord?
        if let key {
            input.messageID = Self.messageID(sessionID: session.id, chatID: chat.id, idempotencyKey: key)
            stored = try await self.chats.messages(chatID: chat.id, sessionID: session.id).first { $0.id == input.messageID }
            if let stored { jobID = try Self.replyJobID(of: stored, repeating: input) }
        }
        var message: ChatMessageRecord
        if let stored {
            message = stored
        } else {
            if self.maxActiveJobs > 0, try await self.queue.activeJobCount(sessionID: session.id) >= self.maxActiveJobs {
                throw KeelError(
                    .tooManyJobs, "This session has \(self.maxActiveJobs) jobs queued or running, the most allowed at once.",
                    hint: "Wait for a reply to finish; the limit is --session-max-active-jobs.", retryAfterSeconds: 1)
            }
            let now = self.clock.now()
            var metadata: [String: JSONValue] = ["reply_job_id": .string(jobID)]
            if !input.documents.isEmpty { metadata["documents"] = .array(input.documents.map(JSONValue.string)) }
            message = ChatMessageRecord(
                id: input.messageID, chatID: chat.id, role: "user", content: input.question, metadata: metadata, createdAt: now)
            let appended = try await self.chats.appendMessage(message, sessionID: session.id)
            if appended != message {
                // A request with the same key stored the question first, between our look and our write.
                jobID = try Self.replyJobID(of: appended, repeating: input)
                message = appended
                stored = appended
            } else if chat.title.isEmpty {
                let words = input.question.split(whereSeparator: \.isWhitespace).joined(separator: " ")
                try await self.chats.renameChat(id: chat.id, sessionID: session.id, title: String(words.prefix(60)), now: now)
            }
        }
        // Keyed by the question: a repeat finds the reply the first request submitted.
        let (job, created) = try await self.jobs.enqueue(
            NewJob(
                id: jobID, sessionID: session.id, type: ChatReplyJob.type, inputJSON: input.json.serialized(), maxAttempts: self.maxAttempts,
                idempotencyKey: key == nil ? nil : "\(ChatReplyJob.type) \(message.id)"))
        guard created || job.id == jobID else {
            throw KeelError(
                .idempotencyKeyReused, "The reply to this message is job \(job.id), not \(jobID).",
                hint: "Use a fresh key for each message; reuse a key only to retry the very same request.")
        }
        let accept = request.headers[.accept]?.lowercased() ?? ""
        if accept.contains("text/event-stream") {
            var response = self.streams.response(jobID: job.id, context: context)
            response.headers[.keelJobID] = job.id
            response.headers[.keelMessageID] = message.id
            if stored != nil { response.headers[.idempotentReplayed] = "true" }
            return response
        }
        var json = JSONWriter()
        json.object { json in
            json.field("message", rawJSON: Self.json(message).serialized())
            json.field("job", rawJSON: job.jsonRepresentation())
        }
        var headers: HTTPFields = [.location: "/api/jobs/\(job.id)", .cacheControl: "no-store"]
        if stored != nil { headers[.idempotentReplayed] = "true" }
        return .json(json.text, status: .accepted, headers: headers)
    }

    /// The reply job a stored question names, when `input` repeats it (the
    /// same question and documents); 409 when the key was used for another.
    private static func replyJobID(of stored: ChatMessageRecord, repeating input: ChatReplyJob.Input) throws -> String {
        let documents = stored.metadata["documents"]?.arrayValue?.compactMap(\.stringValue) ?? []
        guard stored.content == input.question, documents == input.documents, let named = stored.metadata["reply_job_id"]?.stringValue else {
            throw KeelError(
                .idempotencyKeyReused, "This Idempotency-Key was already used for another message of this chat (\(stored.id)).",
                hint: "Use a fresh key for each message; reuse a key only to retry the very same request.")
        }
        return named
    }

    /// The id of the question an `Idempotency-Key` names: the same for the
    /// same session, chat and key.
    static func messageID(sessionID: String, chatID: String, idempotencyKey: String) -> String {
        let digest = SHA256.hash(data: Array("\(sessionID)\n\(chatID)\n\(idempotencyKey)".utf8))
        return "msg_" + Identifiers.base64URL(Array(digest).prefix(12))
    }

    private func messageInput(_ request: inout Request, chat: Chat, sessionID: String) async throws -> ChatReplyJob.Input {
        guard case .object(let members)? = try await request.jsonBody(limit: self.maxBodyBytes) else {
            throw KeelError(.invalidInput, #"Send a JSON object {"content": "…"}."#)
        }
        let known: Set = ["content", "documents", "auto_documents", "chain"]
        if let unknown = members.keys.sorted().first(where: { !known.contains($0) }) {
            throw KeelError(.invalidInput, "Unknown field '\(unknown)'.", hint: "A message has content, and optionally documents, auto_documents and chain.")
        }
        guard case .string(let raw)? = members["content"] else {
            throw KeelError(.invalidInput, "content must be the message's text.")
        }
        let content = raw.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !content.isEmpty, content.count <= self.settings.maxMessageCharacters else {
            throw KeelError(
                .invalidInput, "content must be 1 to \(self.settings.maxMessageCharacters) characters.", hint: "The limit is --chat-max-message-chars.")
        }
        var documents: [String] = []
        if let value = members["documents"] {
            guard case .array(let items) = value, items.count <= Self.maxDocuments, items.allSatisfy({ $0.stringValue != nil }) else {
                throw KeelError(.invalidInput, "documents must be a list of at most \(Self.maxDocuments) document ids.")
            }
            for id in items.compactMap(\.stringValue) where !documents.contains(id) {
                guard id.utf8.count <= 64, let document = try await self.documents.document(id: id, sessionID: sessionID) else {
                    throw KeelError(.notFound, "No document '\(id)' for this session.")
                }
                guard document.status == .ready else {
                    throw KeelError(
                        .documentNotReady, "Document '\(id)' is \(document.status.rawValue), not ready.",
                        hint: "Wait until GET /api/documents/\(id) says ready, or leave it out.")
                }
                documents.append(id)
            }
        }
        var auto = true
        if let value = members["auto_documents"] {
            guard case .bool(let flag) = value else { throw KeelError(.invalidInput, "auto_documents must be true or false.") }
            auto = flag
        }
        var chain: String?
        if let value = members["chain"] {
            guard case .string(let name) = value, !name.isEmpty else { throw KeelError(.invalidInput, "chain must be a chain or model name.") }
            guard let router = self.router else {
                throw KeelError(
                    .noModelsConfigured, "No models are configured, so there is no chain '\(name)'.",
                    hint: "Leave chain out for a retrieval-only reply, or start Keel with --models FILE.")
            }
            guard router.catalog.route(name) != nil else {
                throw KeelError(
                    .invalidInput, "No chain or model is named '\(name)'.",
                    hint: "Known: \((router.catalog.chainOrder + router.catalog.modelOrder).joined(separator: ", ")).")
            }
            chain = name
        }
        var input = try ChatReplyJob.Input(
            .object(["chat_id": .string(chat.id), "message_id": .string("msg_" + Identifiers.random(byteCount: 12)), "question": .string(content)]))
        input.documents = documents
        input.autoDocuments = auto
        input.chain = chain
        return input
    }

    // MARK: - JSON

    static func write(_ chat: Chat, to json: inout JSONWriter) {
        json.field("id", chat.id)
        json.field("title", chat.title)
        json.field("message_count", Int64(chat.messageCount))
        json.field("created_at", chat.createdAt)
        json.field("updated_at", chat.updatedAt)
    }

    /// A message as the API shows it: its fields, then what its reply
    /// recorded (sources, models, fallbacks, usage, error).
    static func json(_ message: ChatMessageRecord) -> JSONValue {
        var o: [String: JSONValue] = [
            "id": .string(message.id), "role": .string(message.role), "content": .string(message.content), "status": .string(message.status.rawValue),
            "created_at": .string(JSONWriter.timestamp(message.createdAt)),
        ]
        if let job = message.jobID { o["job_id"] = .string(job) }
        for (key, value) in message.metadata where o[key] == nil { o[key] = value }
        return .object(o)
    }
}
