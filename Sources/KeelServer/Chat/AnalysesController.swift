import Foundation
import Hummingbird
import KeelCore
import KeelModels

/// `POST /api/documents/{id}/analyses`, `GET /api/documents/{id}/analyses`
/// and `GET /api/analyses/{id}`.
struct AnalysesController: Sendable {
    let analyses: any AnalysisStore
    let documents: any DocumentStore
    let queue: any JobQueue
    let jobs: JobSubmitter
    let sessions: SessionAccess
    let router: ModelRouter?
    let maxAttempts: Int
    let maxActiveJobs: Int
    let maxBodyBytes: Int
    let clock: any KeelClock

    static let maxInstructionCharacters = 4000

    func register(in app: inout KeelModuleBuilder) {
        app.route("/api/documents/:id/analyses", .post, self.create)
        app.route("/api/documents/:id/analyses", .get, self.list)
        app.route("/api/analyses/:id", .get, self.read)
    }

    @Sendable func create(_ request: Request, context: KeelRequestContext) async throws -> Response {
        var request = request
        let session = try await self.sessions.session(for: request)
        guard let documentID = context.parameters.get("id"), documentID.utf8.count <= 64,
            let document = try await self.documents.document(id: documentID, sessionID: session.id)
        else {
            throw KeelError(.notFound, "No document '\(context.parameters.get("id") ?? "")' for this session.")
        }
        let body = try await request.jsonBody(limit: self.maxBodyBytes) ?? .object([:])
        guard case .object(let members) = body else {
            throw KeelError(.invalidInput, #"Send a JSON object, {} or {"instructions": "…", "sections": [0, 2], "chain": "…"}."#)
        }
        if let unknown = members.keys.sorted().first(where: { !["instructions", "sections", "chain"].contains($0) }) {
            throw KeelError(.invalidInput, "Unknown field '\(unknown)'.", hint: "An analysis takes instructions, sections and chain, all optional.")
        }
        guard let router = self.router else {
            throw KeelError(
                .noModelsConfigured, "No models are configured, so there is nothing to analyse with.",
                hint: "Start keel serve and keel worker with --models FILE (see the README's Models section); chat works without models, in retrieval-only mode.")
        }
        guard document.status == .ready else {
            throw KeelError(.documentNotReady, "The document is \(document.status.rawValue), not ready.", hint: "Wait until GET /api/documents/\(document.id) says ready.")
        }
        var instructions = ""
        if let value = members["instructions"] {
            guard case .string(let text) = value, text.count <= Self.maxInstructionCharacters else {
                throw KeelError(.invalidInput, "instructions must be a string of at most \(Self.maxInstructionCharacters) characters.")
            }
            instructions = text.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        var sections = Array(0..<document.sectionCount)
        if let value = members["sections"] {
            guard case .array(let items) = value, !items.isEmpty else {
                throw KeelError(.invalidInput, "sections must be a non-empty list of section indexes.")
            }
            var chosen: [Int] = []
            for item in items {
                guard case .int(let index) = item, index >= 0, index < document.sectionCount else {
                    throw KeelError(.invalidInput, "sections must hold section indexes from 0 to \(document.sectionCount - 1).")
                }
                if !chosen.contains(Int(index)) { chosen.append(Int(index)) }
            }
            sections = chosen
        }
        var chain: String?
        if let value = members["chain"] {
            guard case .string(let name) = value, router.catalog.route(name) != nil else {
                throw KeelError(
                    .invalidInput, "chain must name a chain or model.", hint: "Known: \((router.catalog.chainOrder + router.catalog.modelOrder).joined(separator: ", ")).")
            }
            chain = name
        }
        if self.maxActiveJobs > 0, try await self.queue.activeJobCount(sessionID: session.id) >= self.maxActiveJobs {
            throw KeelError(
                .tooManyJobs, "This session has \(self.maxActiveJobs) jobs queued or running, the most allowed at once.",
                hint: "Wait for one to finish; the limit is --session-max-active-jobs.", retryAfterSeconds: 1)
        }
        let id = "an_" + Identifiers.random(byteCount: 12)
        let jobID = Identifiers.random(byteCount: 16)
        let analysis = Analysis(
            id: id, sessionID: session.id, documentID: document.id, jobID: jobID, instructions: instructions, sections: sections, chain: chain,
            createdAt: self.clock.now())
        try await self.analyses.createAnalysis(analysis)
        let job = try await self.jobs.submit(
            NewJob(
                id: jobID, sessionID: session.id, type: DocumentAnalyzeJob.type, inputJSON: JSONValue.object(["analysis_id": .string(id)]).serialized(),
                maxAttempts: self.maxAttempts))
        var json = JSONWriter()
        json.object { json in
            json.field("analysis", rawJSON: Self.json(analysis).serialized())
            json.field("job", rawJSON: job.jsonRepresentation())
        }
        return .json(json.text, status: .accepted, headers: [.location: "/api/analyses/\(id)", .cacheControl: "no-store"])
    }

    @Sendable func list(_ request: Request, context: KeelRequestContext) async throws -> Response {
        let session = try await self.sessions.session(for: request)
        guard let documentID = context.parameters.get("id"), documentID.utf8.count <= 64,
            try await self.documents.document(id: documentID, sessionID: session.id) != nil
        else {
            throw KeelError(.notFound, "No document '\(context.parameters.get("id") ?? "")' for this session.")
        }
        let analyses = try await self.analyses.analyses(documentID: documentID, sessionID: session.id)
        return .json(headers: [.cacheControl: "no-store"]) { json in
            json.field("analyses") { json in
                json.array { json in
                    for analysis in analyses { json.element(rawJSON: Self.json(analysis).serialized()) }
                }
            }
        }
    }

    @Sendable func read(_ request: Request, context: KeelRequestContext) async throws -> Response {
        let session = try await self.sessions.session(for: request)
        guard let id = context.parameters.get("id"), id.utf8.count <= 64, let analysis = try await self.analyses.analysis(id: id, sessionID: session.id) else {
            throw KeelError(.notFound, "No analysis '\(context.parameters.get("id") ?? "")' for this session.")
        }
        return .json(Self.json(analysis).serialized(), headers: [.cacheControl: "no-store"])
    }

    static func json(_ analysis: Analysis) -> JSONValue {
        var o: [String: JSONValue] = [
            "id": .string(analysis.id), "document_id": .string(analysis.documentID), "job_id": .string(analysis.jobID),
            "instructions": .string(analysis.instructions), "sections": .array(analysis.sections.map { .int(Int64($0)) }),
            "status": .string(analysis.status.rawValue), "results": .array(analysis.results.map(Self.json)),
            "completed_sections": .int(Int64(analysis.results.count)),
            "created_at": .string(JSONWriter.timestamp(analysis.createdAt)), "updated_at": .string(JSONWriter.timestamp(analysis.updatedAt)),
        ]
        if let chain = analysis.chain { o["chain"] = .string(chain) }
        if let code = analysis.errorCode { o["error"] = .object(["code": .string(code), "message": .string(analysis.errorMessage ?? "")]) }
        return .object(o)
    }

    static func json(_ result: AnalysisSectionResult) -> JSONValue {
        var o: [String: JSONValue] = [
            "index": .int(Int64(result.index)), "title": .string(result.title), "content": .string(result.content),
            "completed_at": .string(JSONWriter.timestamp(result.completedAt)),
        ]
        for (key, value) in result.metadata where o[key] == nil { o[key] = value }
        return .object(o)
    }
}
