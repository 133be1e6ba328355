import Foundation

/// A conversation of one session.
public struct Chat: Sendable, Equatable {
    public var id: String
    public var sessionID: String
    public var title: String
    public var messageCount: Int
    public var createdAt: Date
    /// When the last message was added (or the chat created).
    public var updatedAt: Date

    public init(id: String, sessionID: String, title: String, messageCount: Int = 0, createdAt: Date, updatedAt: Date? = nil) {
        self.id = id
        self.sessionID = sessionID
        self.title = title
        self.messageCount = messageCount
        self.createdAt = createdAt
        self.updatedAt = updatedAt ?? createdAt
    }
}

/// Where an assistant message stands. A user message is always `complete`.
public enum ChatMessageStatus: String, Sendable, CaseIterable {
    /// The whole answer.
    case complete
    /// The user stopped the answer: the text is what was produced until then.
    case stopped
    /// The reply failed (every model failed, say): the text is what was
    /// produced before, possibly nothing; `error` says why.
    case failed
}

/// One message of a chat.
public struct ChatMessageRecord: Sendable, Equatable {
    public var id: String
    public var chatID: String
    /// `user` or `assistant`.
    public var role: String
    public var content: String
    public var status: ChatMessageStatus
    /// The `chat.reply` job that wrote an assistant message (nil for a user
    /// message); unique per chat.
    public var jobID: String?
    /// The attempt of that job that wrote it: a later attempt's write
    /// replaces an earlier one's, never the reverse (fencing).
    public var attempt: Int
    /// Free-form JSON written by the reply: `sources` (document and section
    /// of each passage in the prompt), `models`, `fallbacks`, `usage`,
    /// `error`, `documents` (for a user message, those it named). Stored and
    /// returned as given.
    public var metadata: [String: JSONValue]
    public var createdAt: Date

    public init(
        id: String, chatID: String, role: String, content: String, status: ChatMessageStatus = .complete, jobID: String? = nil, attempt: Int = 0,
        metadata: [String: JSONValue] = [:], createdAt: Date
    ) {
        self.id = id
        self.chatID = chatID
        self.role = role
        self.content = content
        self.status = status
        self.jobID = jobID
        self.attempt = attempt
        self.metadata = metadata
        self.createdAt = createdAt
    }
}

/// Conversations and their messages. Every read and write names the session:
/// another session's chat is not found.
public protocol ChatStore: Sendable {
    func createChat(_ chat: Chat) async throws

    /// The session's chats, most recently updated first; `before` is the
    /// `updatedAt`/`id` of the last chat of the previous page.
    func chats(sessionID: String, limit: Int, before: (Date, String)?) async throws -> [Chat]

    func chat(id: String, sessionID: String) async throws -> Chat?

    /// The chat's messages, oldest first.
    func messages(chatID: String, sessionID: String) async throws -> [ChatMessageRecord]

    /// Deletes the chat and its messages; false when the session has no such chat.
    func deleteChat(id: String, sessionID: String) async throws -> Bool

    /// Appends a user message; updates the chat's `updatedAt` and count,
    /// and returns the message. When the chat already holds a message with
    /// this id, nothing is written and that stored message is returned: two
    /// requests racing with one `Idempotency-Key` store one question, and
    /// the second learns the first one's reply job from it. Throws
    /// ``KeelError/Code/notFound`` when the session has no such chat, and
    /// ``KeelError/Code/internalError`` when the id belongs to another chat.
    @discardableResult
    func appendMessage(_ message: ChatMessageRecord, sessionID: String) async throws -> ChatMessageRecord

    /// Writes a reply's assistant message, keyed by its `jobID`: the first
    /// write inserts it (and bumps the chat's count and `updatedAt`); a
    /// later write with a higher or equal `attempt` replaces its content,
    /// status and metadata; a write with a lower attempt changes nothing
    /// and returns false. A chat deleted meanwhile: false, nothing written.
    @discardableResult
    func recordReply(_ message: ChatMessageRecord) async throws -> Bool

    /// Renames a chat (its first question becomes its title); false when
    /// the session has no such chat.
    @discardableResult
    func renameChat(id: String, sessionID: String, title: String, now: Date) async throws -> Bool

    /// Deletes at most `limit` chats whose session no longer exists (it
    /// expired or was deleted), with their messages; returns how many. Safe
    /// to run on every instance at once.
    func removeOrphaned(limit: Int) async throws -> Int
}

/// One section's result of a document analysis.
public struct AnalysisSectionResult: Sendable, Equatable {
    public var index: Int
    public var title: String
    public var content: String
    /// Free-form JSON: `model`, `models`, `fallbacks`, `usage`.
    public var metadata: [String: JSONValue]
    public var completedAt: Date

    public init(index: Int, title: String, content: String, metadata: [String: JSONValue] = [:], completedAt: Date) {
        self.index = index
        self.title = title
        self.content = content
        self.metadata = metadata
        self.completedAt = completedAt
    }
}

/// Where an analysis stands.
public enum AnalysisStatus: String, Sendable, CaseIterable {
    case running
    case complete
    case failed
    case cancelled
}

/// A section-by-section analysis of one document.
public struct Analysis: Sendable, Equatable {
    public var id: String
    public var sessionID: String
    public var documentID: String
    /// The `document.analyze` job.
    public var jobID: String
    public var instructions: String
    /// The section indexes to analyse, in order.
    public var sections: [Int]
    public var chain: String?
    public var status: AnalysisStatus
    public var errorCode: String?
    public var errorMessage: String?
    /// The finished sections, by section index order.
    public var results: [AnalysisSectionResult]
    public var createdAt: Date
    public var updatedAt: Date

    public init(
        id: String, sessionID: String, documentID: String, jobID: String, instructions: String, sections: [Int], chain: String? = nil,
        status: AnalysisStatus = .running, errorCode: String? = nil, errorMessage: String? = nil, results: [AnalysisSectionResult] = [],
        createdAt: Date, updatedAt: Date? = nil
    ) {
        self.id = id
        self.sessionID = sessionID
        self.documentID = documentID
        self.jobID = jobID
        self.instructions = instructions
        self.sections = sections
        self.chain = chain
        self.status = status
        self.errorCode = errorCode
        self.errorMessage = errorMessage
        self.results = results
        self.createdAt = createdAt
        self.updatedAt = updatedAt ?? createdAt
    }
}

/// Document analyses: each finished section is stored at once, so a retried
/// job resumes at the first section not stored.
public protocol AnalysisStore: Sendable {
    /// Stores a new analysis (status `running`, no results).
    func createAnalysis(_ analysis: Analysis) async throws

    /// The analysis with its results; nil for another session's.
    func analysis(id: String, sessionID: String) async throws -> Analysis?

    /// The analysis by id alone, for its job.
    func analysis(id: String) async throws -> Analysis?

    /// Stores one section's result. A section already stored is kept as it
    /// is (the first result wins; returns false). An analysis no longer
    /// `running` takes no more results (returns false).
    @discardableResult
    func recordSection(analysisID: String, _ result: AnalysisSectionResult) async throws -> Bool

    /// Ends a running analysis: `complete`, `failed` or `cancelled`, with an
    /// error for the latter two. An analysis already ended is left as is.
    func finishAnalysis(id: String, status: AnalysisStatus, errorCode: String?, errorMessage: String?, now: Date) async throws

    /// The session's analyses of one document, newest first.
    func analyses(documentID: String, sessionID: String) async throws -> [Analysis]

    /// Deletes a document's analyses (the document is being deleted).
    func deleteAnalyses(documentID: String) async throws

    /// Deletes at most `limit` analyses whose session no longer exists, with
    /// their results; returns how many. Safe to run on every instance at once.
    func removeOrphaned(limit: Int) async throws -> Int
}
