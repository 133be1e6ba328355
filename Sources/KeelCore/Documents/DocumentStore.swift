import Foundation

/// Where a document stands: `processing` until its ingest job finishes, then
/// `ready` (sections and passages stored, searchable) or `failed` (nothing
/// stored but the reason).
public enum DocumentStatus: String, Sendable, CaseIterable {
    case processing
    case ready
    case failed
}

/// An upload turned into a document of one session.
public struct Document: Sendable, Equatable {
    public var id: String
    public var sessionID: String
    public var uploadID: String
    /// From the upload's `filename` metadata ("document" when absent).
    public var filename: String
    /// `text`, `markdown`, `html`, `docx` or `pdf`.
    public var format: String
    public var mediaType: String
    public var byteSize: Int64
    public var status: DocumentStatus
    /// The document's own title (its metadata or first heading), once extracted.
    public var title: String?
    /// The ingest job that owns the document's content: only it may write it.
    public var jobID: String?
    /// The attempt of that job allowed to write (earlier ones are fenced off).
    public var ingestAttempt: Int
    public var errorCode: String?
    public var errorMessage: String?
    public var sectionCount: Int
    public var characterCount: Int
    public var passageCount: Int
    /// PDF only.
    public var pageCount: Int?
    public var createdAt: Date
    public var updatedAt: Date

    public init(
        id: String, sessionID: String, uploadID: String, filename: String, format: String, mediaType: String, byteSize: Int64,
        status: DocumentStatus = .processing, title: String? = nil, jobID: String? = nil, ingestAttempt: Int = 0, errorCode: String? = nil,
        errorMessage: String? = nil,
        sectionCount: Int = 0, characterCount: Int = 0, passageCount: Int = 0, pageCount: Int? = nil, createdAt: Date, updatedAt: Date? = nil
    ) {
        self.id = id
        self.sessionID = sessionID
        self.uploadID = uploadID
        self.filename = filename
        self.format = format
        self.mediaType = mediaType
        self.byteSize = byteSize
        self.status = status
        self.title = title
        self.jobID = jobID
        self.ingestAttempt = ingestAttempt
        self.errorCode = errorCode
        self.errorMessage = errorMessage
        self.sectionCount = sectionCount
        self.characterCount = characterCount
        self.passageCount = passageCount
        self.pageCount = pageCount
        self.createdAt = createdAt
        self.updatedAt = updatedAt ?? createdAt
    }
}

/// One section of a document: a heading and the text under it.
public struct DocumentSection: Sendable, Equatable {
    public var index: Int
    public var title: String
    /// 1 for a top-level heading, 2 below it, and so on.
    public var level: Int
    /// The titles of the enclosing headings, then its own.
    public var path: [String]
    /// Empty in an outline (``DocumentStore/outline(documentID:)``).
    public var text: String
    public var characterCount: Int
    public var firstPage: Int?
    public var lastPage: Int?

    public init(index: Int, title: String, level: Int, path: [String], text: String, characterCount: Int? = nil, firstPage: Int? = nil, lastPage: Int? = nil) {
        self.index = index
        self.title = title
        self.level = level
        self.path = path
        self.text = text
        self.characterCount = characterCount ?? text.count
        self.firstPage = firstPage
        self.lastPage = lastPage
    }
}

/// A searchable piece of a section (about a thousand characters).
public struct DocumentPassage: Sendable, Equatable {
    public var sectionIndex: Int
    /// Position within its section, from 0.
    public var ordinal: Int
    /// The section's heading path, joined: searched along with the text.
    public var heading: String
    public var text: String

    public init(sectionIndex: Int, ordinal: Int, heading: String, text: String) {
        self.sectionIndex = sectionIndex
        self.ordinal = ordinal
        self.heading = heading
        self.text = text
    }
}

/// Everything an ingest stores for a document, written at once.
public struct DocumentContent: Sendable, Equatable {
    public var title: String?
    public var pageCount: Int?
    public var sections: [DocumentSection]
    public var passages: [DocumentPassage]

    public init(title: String?, pageCount: Int?, sections: [DocumentSection], passages: [DocumentPassage]) {
        self.title = title
        self.pageCount = pageCount
        self.sections = sections
        self.passages = passages
    }

    public var characterCount: Int { self.sections.reduce(0) { $0 + $1.characterCount } }
}

/// A full-text query over one session's ready documents.
public struct DocumentSearch: Sendable, Equatable {
    /// How the query's words combine.
    public enum Match: String, Sendable {
        /// Web-search syntax: every word (AND), `"quoted phrases"`, `or`, `-excluded`.
        case all
        /// Any word (OR), ranked: for retrieving context for a question.
        case any
    }

    public var text: String
    public var sessionID: String
    /// Restricts the search to these documents (empty: all of the session's).
    public var documentIDs: [String]
    public var limit: Int
    public var match: Match

    public init(text: String, sessionID: String, documentIDs: [String] = [], limit: Int = 10, match: Match = .all) {
        self.text = text
        self.sessionID = sessionID
        self.documentIDs = documentIDs
        self.limit = limit
        self.match = match
    }

    /// Marks around matched words in a snippet (markdown bold).
    public static let highlightStart = "**"
    public static let highlightEnd = "**"
}

/// A ranked passage.
public struct DocumentSearchHit: Sendable, Equatable {
    public var documentID: String
    public var documentTitle: String?
    public var filename: String
    public var sectionIndex: Int
    public var sectionTitle: String
    public var heading: String
    /// The passage with the matched words highlighted, cut around them.
    public var snippet: String
    /// The whole passage.
    public var text: String
    /// Higher is more relevant; comparable only within one result list.
    public var score: Double

    public init(
        documentID: String, documentTitle: String?, filename: String, sectionIndex: Int, sectionTitle: String, heading: String, snippet: String, text: String,
        score: Double
    ) {
        self.documentID = documentID
        self.documentTitle = documentTitle
        self.filename = filename
        self.sectionIndex = sectionIndex
        self.sectionTitle = sectionTitle
        self.heading = heading
        self.snippet = snippet
        self.text = text
        self.score = score
    }
}

/// A page of a session's documents, newest first.
public struct DocumentPage: Sendable, Equatable {
    public var documents: [Document]
    /// Pass as `after` for the next page; `nil` on the last.
    public var next: DocumentCursor?

    public init(documents: [Document], next: DocumentCursor?) {
        self.documents = documents
        self.next = next
    }
}

/// A position in a session's document list (creation time, then id).
public struct DocumentCursor: Sendable, Equatable {
    public var createdAt: Int64
    public var id: String

    public init(createdAt: Int64, id: String) {
        self.createdAt = createdAt
        self.id = id
    }

    public var text: String { "\(self.createdAt).\(self.id)" }

    public init?(text: String) {
        guard let dot = text.firstIndex(of: "."), let millis = Int64(text[..<dot]) else { return nil }
        let id = text[text.index(after: dot)...]
        guard !id.isEmpty, id.utf8.count <= 64 else { return nil }
        self.init(createdAt: millis, id: String(id))
    }
}

/// Documents, their sections and passages, and full-text search over them,
/// always within one session.
///
/// An ingest writes a document's whole content in one transaction and only
/// while it still owns the document (its job id matches): a document is
/// either fully searchable or not at all, and a stale worker cannot
/// overwrite a newer ingest.
public protocol DocumentStore: Sendable {
    /// Stores a new document, or returns the session's existing document for
    /// the same upload (`created: false`) untouched.
    func createDocument(_ document: Document) async throws -> (document: Document, created: Bool)

    /// The document, if it belongs to `sessionID`.
    func document(id: String, sessionID: String) async throws -> Document?

    /// The session's documents, newest first.
    func documents(sessionID: String, after: DocumentCursor?, limit: Int) async throws -> DocumentPage

    /// Hands the document to the ingest job `jobID` and marks it
    /// `processing`, if it is still as the caller saw it: owned by
    /// `previousJobID` (`nil`: by no job yet), and, when that job exists,
    /// failed. A compare-and-set, so two requests racing to start an ingest
    /// pick one job, and a ready document is never handed to another.
    /// Returns the updated document, or `nil` when it changed or is gone.
    func assignIngest(documentID: String, jobID: String, replacing previousJobID: String?, now: Date) async throws -> Document?

    /// Fences off earlier attempts of the owning job: records `attempt` as
    /// the one allowed to write, if `jobID` owns the document and no later
    /// attempt has claimed it. Returns whether this attempt may go on.
    func claimIngest(documentID: String, jobID: String, attempt: Int, now: Date) async throws -> Bool

    /// Replaces the document's sections and passages with `content` and marks
    /// it `ready`, atomically, if `jobID`'s `attempt` still owns it. Returns whether it did.
    func completeIngest(documentID: String, jobID: String, attempt: Int, content: DocumentContent, now: Date) async throws -> Bool

    /// Marks the document `failed` with the reason, removing any content, if
    /// `jobID` (and its `attempt`, when given) still owns it and it is not
    /// `ready`. Returns whether it did.
    func failIngest(documentID: String, jobID: String, attempt: Int?, code: String, message: String, now: Date) async throws -> Bool

    /// The section outline (texts empty), in order.
    func outline(documentID: String) async throws -> [DocumentSection]

    /// One section with its text.
    func section(documentID: String, index: Int) async throws -> DocumentSection?

    /// Deletes the document and everything stored for it. Returns whether it existed.
    func deleteDocument(id: String, sessionID: String) async throws -> Bool

    /// Ranked passages of the session's ready documents. (Term statistics
    /// for ranking are the index's, across sessions; only the session's
    /// passages are returned.)
    func search(_ query: DocumentSearch) async throws -> [DocumentSearchHit]

    /// Deletes up to `limit` documents whose session no longer exists; returns how many.
    func removeOrphaned(limit: Int) async throws -> Int
}

extension DocumentSection {
    /// The heading path as a JSON array, as drivers store it.
    public static func encodePath(_ path: [String]) -> String {
        JSONValue.array(path.map(JSONValue.string)).serialized()
    }

    public static func decodePath(_ text: String) -> [String] {
        guard case .array(let items)? = try? JSONValue.parse(Array(text.utf8)) else { return [] }
        return items.compactMap(\.stringValue)
    }
}
