import Foundation
import Hummingbird
import KeelCore

/// `/api/documents` and `/api/search`. A document belongs to the session
/// that made it; to any other session it does not exist (404).
struct DocumentsController: Sendable {
    let documents: any DocumentStore
    let analyses: any AnalysisStore
    let jobs: any JobQueue
    let submitter: JobSubmitter
    let sessions: SessionAccess
    let ingestion: DocumentIngestion
    let settings: DocumentSettings
    let maxBodyBytes: Int
    let resultTTL: Duration
    let clock: any KeelClock

    static let defaultPageSize = 20
    static let maxPageSize = 100
    static let defaultSearchResults = 10
    static let maxQueryCharacters = 1000
    static let maxSearchDocuments = 20
    /// A processing document whose job is not in the queue this long after
    /// it was assigned lost its ingest (the request that started it died).
    static let lostIngestAfter: TimeInterval = 60

    func register(in app: inout KeelModuleBuilder) {
        app.route("/api/documents", .post, self.create)
        app.route("/api/documents", .get, self.list)
        app.route("/api/documents/:id", .get, self.read)
        app.route("/api/documents/:id", .delete, self.delete)
        app.route("/api/documents/:id/sections/:index", .get, self.section)
        app.route("/api/search", .get, self.search)
    }

    @Sendable func create(_ request: Request, context: KeelRequestContext) async throws -> Response {
        var request = request
        let session = try await self.sessions.session(for: request)
        guard case .object(let members)? = try await request.jsonBody(limit: self.maxBodyBytes) else {
            throw KeelError(.invalidInput, #"Send a JSON object {"upload_id": "…"} naming a finished upload."#)
        }
        if let unknown = members.keys.sorted().first(where: { $0 != "upload_id" }) {
            throw KeelError(.invalidInput, "Unknown field '\(unknown)'.", hint: #"A document is made from {"upload_id": "…"}."#)
        }
        guard case .string(let uploadID)? = members["upload_id"], !uploadID.isEmpty, uploadID.utf8.count <= 128 else {
            throw KeelError(.invalidInput, "upload_id must be the id of a finished upload (tus or /api/files).")
        }
        guard let upload = try await self.ingestion.uploads.upload(id: uploadID), upload.sessionID == session.id,
            upload.status == .complete || upload.status == .uploading
        else {
            throw KeelError(.notFound, "No upload '\(uploadID)' for this session.")
        }
        let started = try await self.ingestion.start(upload: upload)
        var json = JSONWriter()
        json.object { json in
            Self.write(started.document, to: &json)
            if let job = started.job { json.field("job", rawJSON: job.jsonRepresentation()) }
        }
        return .json(
            json.text, status: started.accepted ? .accepted : .ok,
            headers: [.location: "/api/documents/\(started.document.id)", .cacheControl: "no-store"]
        )
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
        var after: DocumentCursor?
        if let text = query["cursor"].map(String.init), !text.isEmpty {
            guard let cursor = DocumentCursor(text: text) else {
                throw KeelError(.invalidCursor, "This cursor is not one Keel gave out.", hint: "Pass next_cursor from the previous page unchanged.")
            }
            after = cursor
        }
        let page = try await self.documents.documents(sessionID: session.id, after: after, limit: limit)
        var reconciled: [Document] = []
        for document in page.documents { reconciled.append(try await self.reconcile(document)) }
        return .json(headers: [.cacheControl: "no-store"]) { json in
            json.field("documents") { json in
                json.array { json in
                    for document in reconciled { json.object { Self.write(document, to: &$0) } }
                }
            }
            json.field("next_cursor", page.next?.text)
        }
    }

    @Sendable func read(_ request: Request, context: KeelRequestContext) async throws -> Response {
        let session = try await self.sessions.session(for: request)
        let document = try await self.reconcile(try await self.owned(context, session: session))
        let outline = document.status == .ready ? try await self.documents.outline(documentID: document.id) : []
        return .json(headers: [.cacheControl: "no-store"]) { json in
            Self.write(document, to: &json)
            json.field("sections") { json in
                json.array { json in
                    for section in outline { json.object { Self.write(section, to: &$0) } }
                }
            }
        }
    }

    @Sendable func section(_ request: Request, context: KeelRequestContext) async throws -> Response {
        let session = try await self.sessions.session(for: request)
        let document = try await self.owned(context, session: session)
        guard let text = context.parameters.get("index"), let index = Int(text), index >= 0 else {
            throw KeelError(.invalidInput, "A section index is a whole number from 0.")
        }
        guard document.status == .ready else {
            throw KeelError(
                .documentNotReady, "Document '\(document.id)' is \(document.status.rawValue); its sections are readable once it is ready.",
                hint: "Follow its ingest job (job_id), or GET the document until status is ready.")
        }
        guard let section = try await self.documents.section(documentID: document.id, index: index) else {
            throw KeelError(.notFound, "Document '\(document.id)' has \(document.sectionCount) sections (0 to \(document.sectionCount - 1)).")
        }
        return .json(headers: [.cacheControl: "no-store"]) { json in
            json.field("document_id", document.id)
            Self.write(section, to: &json)
            json.field("text", section.text)
        }
    }

    @Sendable func delete(_ request: Request, context: KeelRequestContext) async throws -> Response {
        let session = try await self.sessions.session(for: request)
        let document = try await self.owned(context, session: session)
        guard try await self.documents.deleteDocument(id: document.id, sessionID: session.id) else {
            throw KeelError(.notFound, "No document '\(document.id)' for this session.")
        }
        // A running ingest finds the document gone and stops writing.
        if document.status == .processing, let jobID = document.jobID {
            _ = try? await self.submitter.cancel(id: jobID, resultTTL: self.resultTTL)
        }
        // Its analyses go with it; a running one is cancelled.
        let analyses = (try? await self.analyses.analyses(documentID: document.id, sessionID: session.id)) ?? []
        for analysis in analyses where analysis.status == .running {
            _ = try? await self.submitter.cancel(id: analysis.jobID, resultTTL: self.resultTTL)
        }
        try await self.analyses.deleteAnalyses(documentID: document.id)
        return Response(status: .noContent, headers: [.cacheControl: "no-store"])
    }

    @Sendable func search(_ request: Request, context: KeelRequestContext) async throws -> Response {
        let session = try await self.sessions.session(for: request)
        // As a browser form (or Python's urlencode) sends them: `+` is a space.
        let query = Self.formParameters(request.uri.query)
        let text = query.first { $0.name == "q" }?.value ?? ""
        guard !text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
            throw KeelError(.invalidInput, "Search needs q, the words to look for.", hint: #"GET /api/search?q=quarterly+revenue ("phrases", or, -excluded work too)."#)
        }
        guard text.count <= Self.maxQueryCharacters else {
            throw KeelError(.invalidInput, "q may be at most \(Self.maxQueryCharacters) characters.")
        }
        var limit = min(Self.defaultSearchResults, self.settings.searchMaxResults)
        if let value = query.first(where: { $0.name == "limit" })?.value {
            guard let parsed = Int(value), (1...self.settings.searchMaxResults).contains(parsed) else {
                throw KeelError(.invalidInput, "limit must be an integer from 1 to \(self.settings.searchMaxResults).", hint: "The most is --search-max-results.")
            }
            limit = parsed
        }
        var documentIDs: [String] = []
        for value in query.filter({ $0.name == "document" }).map(\.value) {
            for id in value.split(separator: ",") where !id.isEmpty {
                guard documentIDs.count < Self.maxSearchDocuments else {
                    throw KeelError(.invalidInput, "A search may name at most \(Self.maxSearchDocuments) documents.", hint: "Leave document out to search them all.")
                }
                guard id.utf8.count <= 64, try await self.documents.document(id: String(id), sessionID: session.id) != nil else {
                    throw KeelError(.notFound, "No document '\(id)' for this session.")
                }
                documentIDs.append(String(id))
            }
        }
        let hits = try await self.documents.search(DocumentSearch(text: text, sessionID: session.id, documentIDs: documentIDs, limit: limit))
        return .json(headers: [.cacheControl: "no-store"]) { json in
            json.field("results") { json in
                json.array { json in
                    for hit in hits {
                        json.object { json in
                            json.field("document_id", hit.documentID)
                            json.field("document_title", hit.documentTitle)
                            json.field("filename", hit.filename)
                            json.field("section_index", Int64(hit.sectionIndex))
                            json.field("section_title", hit.sectionTitle)
                            json.field("heading", hit.heading)
                            json.field("snippet", hit.snippet)
                            json.field("text", hit.text)
                            json.field("score", hit.score)
                        }
                    }
                }
            }
        }
    }

    /// A query string decoded as `application/x-www-form-urlencoded`: `+` is
    /// a space, `%XX` a byte (a malformed escape is kept as written).
    static func formParameters(_ query: String?) -> [(name: String, value: String)] {
        guard let query, !query.isEmpty else { return [] }
        func decode(_ text: Substring) -> String {
            let spaced = text.replacingOccurrences(of: "+", with: " ")
            return spaced.removingPercentEncoding ?? spaced
        }
        return query.split(separator: "&").map { pair in
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            return (decode(parts[0]), parts.count > 1 ? decode(parts[1]) : "")
        }
    }

    private func owned(_ context: KeelRequestContext, session: Session) async throws -> Document {
        guard let id = context.parameters.get("id"), id.utf8.count <= 64,
            let document = try await self.documents.document(id: id, sessionID: session.id)
        else {
            throw KeelError(.notFound, "No document '\(context.parameters.get("id") ?? "")' for this session.")
        }
        return document
    }

    /// A processing document whose ingest job ended without finishing it
    /// (cancelled by its owner, or failed outside the handler), or whose job
    /// never reached the queue, is failed: asking for the document again
    /// (`POST /api/documents`) starts a new ingest.
    private func reconcile(_ document: Document) async throws -> Document {
        guard document.status == .processing, let jobID = document.jobID else { return document }
        let code: String
        let message: String
        if let job = try await self.jobs.job(id: jobID) {
            guard job.status == .failed || job.status == .cancelled else { return document }
            code = job.status == .cancelled ? "ingest_cancelled" : (job.error?.code ?? "ingest_failed")
            message = job.status == .cancelled ? "The ingest job was cancelled." : (job.error?.message ?? "The ingest job failed.")
        } else {
            guard self.clock.now().timeIntervalSince(document.updatedAt) > Self.lostIngestAfter else { return document }
            code = "ingest_lost"
            message = "The ingest job was never queued; ask for the document again."
        }
        _ = try await self.documents.failIngest(documentID: document.id, jobID: jobID, attempt: nil, code: code, message: message, now: self.clock.now())
        return try await self.documents.document(id: document.id, sessionID: document.sessionID) ?? document
    }

    static func write(_ document: Document, to json: inout JSONWriter) {
        json.field("id", document.id)
        json.field("status", document.status.rawValue)
        json.field("title", document.title)
        json.field("filename", document.filename)
        json.field("format", document.format)
        json.field("media_type", document.mediaType)
        json.field("bytes", document.byteSize)
        json.field("upload_id", document.uploadID)
        json.field("job_id", document.jobID)
        json.field("section_count", Int64(document.sectionCount))
        json.field("passage_count", Int64(document.passageCount))
        json.field("chars", Int64(document.characterCount))
        json.field("pages", rawJSON: document.pageCount.map { String($0) })
        if let code = document.errorCode {
            json.field("error") { json in
                json.object { json in
                    json.field("code", code)
                    json.field("message", document.errorMessage ?? code)
                }
            }
        } else {
            json.field("error", rawJSON: nil)
        }
        json.field("created_at", document.createdAt)
        json.field("updated_at", document.updatedAt)
    }

    static func write(_ section: DocumentSection, to json: inout JSONWriter) {
        json.field("index", Int64(section.index))
        json.field("title", section.title)
        json.field("level", Int64(section.level))
        json.field("path") { json in
            json.array { json in
                for title in section.path { json.element(rawJSON: JSONValue.string(title).serialized()) }
            }
        }
        json.field("chars", Int64(section.characterCount))
        json.field("first_page", rawJSON: section.firstPage.map { String($0) })
        json.field("last_page", rawJSON: section.lastPage.map { String($0) })
    }
}
