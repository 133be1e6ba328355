import Crypto
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
            store: app.store.documents, jobs: app.jobs, activeJobs: app.store.jobs, uploads: app.uploads, settings: settings,
            maxAttempts: app.configuration.jobs.maxAttempts, maxActiveJobs: app.configuration.quotas.activeJobsPerSession, clock: app.clock
        )
        let controller = DocumentsController(
            documents: app.store.documents, jobs: app.store.jobs, sessions: app.sessions, ingestion: ingest, settings: settings,
            maxBodyBytes: app.configuration.maxBodyBytes, resultTTL: app.configuration.jobs.resultTTL, clock: app.clock
        )
        controller.register(in: &app)
        let extractor = DocumentExtractor(limits: settings.limits, popplerDirectory: settings.popplerDirectory)
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
        app.service(DocumentSweeper(store: app.store.documents, interval: app.configuration.jobs.janitorInterval, logger: app.logger))
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
            timeLimit: self.extractTimeout
        )
    }

    var popplerDirectory: String? { self.popplerPath.isEmpty ? nil : self.popplerPath }
}

/// Starting (or restarting) a document's ingest, for the API and the upload hook alike.
struct DocumentIngestion: Sendable {
    let store: any DocumentStore
    let jobs: JobSubmitter
    let activeJobs: any JobQueue
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

    /// A job id derived from the ingest's idempotency key (the key holds the
    /// document's random id, so ids never collide across sessions).
    static func jobID(forKey key: String) -> String {
        Identifiers.base64URL(SHA256.hash(data: Array(key.utf8)).prefix(16))
    }

    /// The upload's document: created and handed to a new `document.ingest`
    /// job, or the existing one (restarted if it failed, or if an earlier
    /// attempt died before its job was queued). Idempotent.
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
        let (document, created) = try await self.store.createDocument(
            Document(
                id: Identifiers.random(byteCount: 12), sessionID: upload.sessionID, uploadID: upload.id, filename: upload.filename ?? "document",
                format: format.rawValue, mediaType: format.mediaType, byteSize: length, createdAt: now
            )
        )
        let needsJob = created || document.jobID == nil || document.status == .failed
        guard needsJob else { return Started(document: document, job: nil, accepted: false) }
        if self.maxActiveJobs > 0, try await self.activeJobs.activeJobCount(sessionID: upload.sessionID) >= self.maxActiveJobs {
            if created { _ = try? await self.store.deleteDocument(id: document.id, sessionID: document.sessionID) }
            throw KeelError(
                .tooManyJobs, "This session has \(self.maxActiveJobs) jobs queued or running, the most allowed at once.",
                hint: "Wait for one to finish; the limit is --session-max-active-jobs.", retryAfterSeconds: 1)
        }
        // One job per document and attempt to ingest it: a retried request or
        // hook finds the job it already queued. The job's id follows from that
        // key, so the document names its job before the job exists: a worker
        // that claims it at once already finds the document waiting for it.
        let key = document.status == .failed ? "document.ingest:\(document.id):\(Int64(document.updatedAt.timeIntervalSince1970 * 1000))" : "document.ingest:\(document.id)"
        let jobID = Self.jobID(forKey: key)
        guard let assigned = try await self.store.assignIngest(documentID: document.id, jobID: jobID, now: self.clock.now()) else {
            throw KeelError(.notFound, "The document was deleted while its ingest started.")
        }
        let job: Job
        do {
            job = try await self.jobs.submit(
                NewJob(
                    id: jobID, sessionID: upload.sessionID, type: DocumentIngestJob.type,
                    inputJSON: JSONValue.object(["document_id": .string(document.id)]).serialized(), maxAttempts: self.maxAttempts,
                    idempotencyKey: key
                )
            )
        } catch {
            if created { _ = try? await self.store.deleteDocument(id: document.id, sessionID: document.sessionID) }
            throw error
        }
        return Started(document: assigned, job: job, accepted: true)
    }
}

/// Deletes documents whose session has ended, on every instance (the
/// deletes are idempotent and skip rows another instance holds).
struct DocumentSweeper: Service {
    let store: any DocumentStore
    let interval: Duration
    let logger: Logger

    func run() async throws {
        while !Task.isShuttingDownGracefully, !Task.isCancelled {
            do {
                var removed = 0
                repeat {
                    removed = try await self.store.removeOrphaned(limit: 10)
                    if removed > 0 { self.logger.info("removed documents of ended sessions", metadata: ["keel.documents": "\(removed)"]) }
                } while removed == 10 && !Task.isCancelled
            } catch {
                self.logger.warning("document sweep failed; retrying later", metadata: ["keel.error": "\(error)"])
            }
            try? await gracefulShutdownOrCancellation(sleep: max(self.interval, .seconds(60)))
        }
    }
}

extension DocumentSweeper {
    /// Sleeps, returning early when the process shuts down.
    private func gracefulShutdownOrCancellation(sleep duration: Duration) async throws {
        try await cancelWhenGracefulShutdown {
            try await Task.sleep(for: duration)
        }
    }
}
