import Foundation
import KeelCore
import KeelDocuments
import Logging
import ServiceLifecycle

/// Documents: uploads turned into sections and searchable passages
/// (`/api/documents`, `/api/search`, the `document.ingest` job, the
/// `Upload-Metadata: document 1` hook and the orphan sweep). Built only on
/// the module seam, like any feature an application adds.
public struct DocumentsModule: KeelModule {
    public init() {}

    public func register(in app: inout KeelModuleBuilder) throws {
        let settings = app.configuration.documents
        let ingest = DocumentIngestion(
            store: app.store.documents, jobs: app.jobs, queue: app.store.jobs, uploads: app.uploads, settings: settings,
            maxAttempts: app.configuration.jobs.maxAttempts, maxActiveJobs: app.configuration.quotas.activeJobsPerSession, clock: app.clock
        )
        let controller = DocumentsController(
            documents: app.store.documents, analyses: app.store.analyses, jobs: app.store.jobs, submitter: app.jobs, sessions: app.sessions, ingestion: ingest, settings: settings,
            maxBodyBytes: app.configuration.maxBodyBytes, resultTTL: app.configuration.jobs.resultTTL, clock: app.clock
        )
        controller.register(in: &app)
        let extractor = DocumentExtractor(limits: settings.limits, popplerDirectory: settings.popplerDirectory)
        // PDFs copied to temporary files by a process that was killed mid-ingest.
        DocumentExtractor.sweepTemporaryFiles(olderThan: .seconds(3600))
        if !extractor.pdfSupportAvailable {
            app.logger.warning(
                "Poppler's pdfinfo and pdftohtml are not found: PDF documents will fail with pdf_support_missing (install Debian's poppler-utils, or set --poppler-path)")
        }
        app.jobType(
            DocumentIngestJob(
                store: app.store.documents, uploads: app.uploads, extractor: extractor,
                passageCharacters: settings.passageCharacters, clock: app.clock, logger: app.logger
            )
        )
        let logger = app.logger
        app.onUploadCompletion { upload in
            guard Self.asksForDocument(upload) else { return }
            do {
                _ = try await ingest.start(upload: upload)
            } catch let error as KeelError where [.unsupportedDocumentType, .documentTooLarge].contains(error.code) {
                // The upload stays an upload; asking again would not change the answer.
                logger.notice("upload asked for a document but cannot be one", metadata: ["keel.upload": "\(upload.id)", "keel.error": "\(error.code.rawValue)"])
            }
        }
        let documents = app.store.documents
        app.service(
            OrphanSweeper(what: "documents", remove: { try await documents.removeOrphaned(limit: $0) }, interval: app.configuration.jobs.janitorInterval, logger: app.logger))
    }

    /// `Upload-Metadata: document 1` (or `document` with no value, or `true`).
    static func asksForDocument(_ upload: Upload) -> Bool {
        guard let pair = upload.metadataPairs.first(where: { $0.key == "document" }) else { return false }
        guard let value = pair.value?.lowercased() else { return true }
        return ["1", "true", "yes"].contains(value)
    }
}

extension DocumentSettings {
    var limits: DocumentLimits {
        DocumentLimits(
            maxBytes: self.maxBytes, maxPages: self.maxPages, maxCharacters: self.maxCharacters, maxUncompressedBytes: self.maxArchiveBytes,
            timeLimit: self.extractTimeout, maxSections: self.maxSections
        )
    }

    var popplerDirectory: String? { self.popplerPath.isEmpty ? nil : self.popplerPath }
}

/// Starting (or restarting) a document's ingest, for the API and the upload hook alike.
struct DocumentIngestion: Sendable {
    let store: any DocumentStore
    let jobs: JobSubmitter
    let queue: any JobQueue
    let uploads: UploadContents
    let settings: DocumentSettings
    let maxAttempts: Int
    let maxActiveJobs: Int
    let clock: any KeelClock

    /// What `start` did.
    struct Started {
        var document: Document
        /// The ingest job, when one was started (or found) by this call.
        var job: Job?
        /// Whether this call made the document or restarted a failed one.
        var accepted: Bool
    }

    /// The upload's document: created and handed to a new `document.ingest`
    /// job, or the existing one (restarted if it failed; its job queued if an
    /// earlier request died before queuing it). Idempotent.
    func start(upload: Upload) async throws -> Started {
        guard upload.status == .complete, let length = upload.length else {
            throw KeelError(.uploadIncomplete, "Upload '\(upload.id)' has not finished; a document is made from a finished upload.")
        }
        guard length <= self.settings.maxBytes else {
            throw KeelError(
                .documentTooLarge, "The upload is \(length) bytes; documents may be at most \(self.settings.maxBytes).",
                hint: "The limit is --document-max-bytes.")
        }
        let prefix = try await self.uploads.prefix(of: upload, count: 4096)
        guard let format = DocumentFormat.detect(filename: upload.filename, mediaType: upload.filetype, prefix: prefix) else {
            throw KeelError(
                .unsupportedDocumentType, "This upload is not a document Keel can read.",
                hint: "Documents are plain text, markdown, HTML, DOCX or PDF (by content, file name or filetype metadata).")
        }
        let now = self.clock.now()
        var (document, created) = try await self.store.createDocument(
            Document(
                id: Identifiers.random(byteCount: 12), sessionID: upload.sessionID, uploadID: upload.id, filename: upload.filename ?? "document",
                format: format.rawValue, mediaType: format.mediaType, byteSize: length, createdAt: now
            )
        )
        // Requests and hooks may race here: the store's compare-and-set picks
        // one ingest, and the others see what it did.
        for _ in 0..<4 {
            if document.status == .ready { return Started(document: document, job: nil, accepted: false) }
            if document.status == .processing, let jobID = document.jobID {
                if let job = try await self.queue.job(id: jobID) { return Started(document: document, job: job, accepted: false) }
                // The document names a job that was never queued (its process
                // died in between, or the queue refused): queue it now.
                let job = try await self.submit(jobID: jobID, document: document)
                return Started(document: document, job: job, accepted: true)
            }
            try await self.checkQuota(sessionID: upload.sessionID, created: created ? document : nil)
            // The document names its job before the job exists: a worker that
            // claims the job at once already finds the document waiting for it.
            let jobID = Identifiers.random(byteCount: 16)
            if let assigned = try await self.store.assignIngest(documentID: document.id, jobID: jobID, replacing: document.jobID, now: self.clock.now()) {
                do {
                    return Started(document: assigned, job: try await self.submit(jobID: jobID, document: assigned), accepted: true)
                } catch {
                    if created { _ = try? await self.store.deleteDocument(id: document.id, sessionID: document.sessionID) }
                    throw error
                }
            }
            guard let current = try await self.store.document(id: document.id, sessionID: document.sessionID) else {
                throw KeelError(.notFound, "The document was deleted while its ingest started.")
            }
            document = current
            created = false
        }
        throw KeelError(.versionConflict, "The document kept changing while its ingest started.", hint: "Ask again.")
    }

    private func checkQuota(sessionID: String, created: Document?) async throws {
        guard self.maxActiveJobs > 0, try await self.queue.activeJobCount(sessionID: sessionID) >= self.maxActiveJobs else { return }
        if let created { _ = try? await self.store.deleteDocument(id: created.id, sessionID: created.sessionID) }
        throw KeelError(
            .tooManyJobs, "This session has \(self.maxActiveJobs) jobs queued or running, the most allowed at once.",
            hint: "Wait for one to finish; the limit is --session-max-active-jobs.", retryAfterSeconds: 1)
    }

    /// Queues the ingest job the document names; its idempotency key makes a
    /// second submission (a racing request, a retried hook) find the first.
    private func submit(jobID: String, document: Document) async throws -> Job {
        try await self.jobs.submit(
            NewJob(
                id: jobID, sessionID: document.sessionID, type: DocumentIngestJob.type,
                inputJSON: JSONValue.object(["document_id": .string(document.id)]).serialized(), maxAttempts: self.maxAttempts,
                idempotencyKey: "document.ingest:\(jobID)"
            )
        )
    }
}
