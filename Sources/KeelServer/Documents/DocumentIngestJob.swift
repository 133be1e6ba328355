import Foundation
import KeelCore
import KeelDocuments
import Logging

/// `document.ingest {document_id}`: reads the document's upload, extracts
/// its sections, cuts them into passages and stores it all at once.
///
/// Stages: `extracting`, `sections`, `indexing`. A worker killed mid-ingest
/// has written nothing (the content is one transaction at the end), so the
/// retry simply starts over; a stale attempt cannot write over a newer
/// ingest (the store checks the document is still this job's). Extraction
/// failures are the input's fault: they fail the job at once, not retried,
/// and the document's `status` becomes `failed` with the code.
struct DocumentIngestJob: JobHandler {
    static let type = "document.ingest"
    var type: String { Self.type }

    let store: any DocumentStore
    let uploads: UploadContents
    let extractor: DocumentExtractor
    let passageCharacters: Int
    let clock: any KeelClock
    let logger: Logger

    func validate(_ input: JSONValue) throws -> JSONValue {
        guard case .object(let members) = input, members.count == 1, case .string(let id)? = members["document_id"], !id.isEmpty, id.utf8.count <= 64
        else {
            throw KeelError(.invalidInput, #"document.ingest takes {"document_id": "…"}."#, hint: "POST /api/documents starts it for you.")
        }
        return .object(["document_id": .string(id)])
    }

    func run(_ job: JobContext) async throws -> JSONValue {
        guard case .string(let id)? = job.input.objectValue?["document_id"] else {
            throw JobHandlerFailure(code: "invalid_input", message: "document.ingest has no document_id.", retryable: false)
        }
        // Another session's document does not exist for this job.
        guard let document = try await self.store.document(id: id, sessionID: job.sessionID) else {
            throw JobHandlerFailure(code: "not_found", message: "No document '\(id)' for this session (deleted?).", retryable: false)
        }
        guard document.jobID == job.id else {
            throw JobHandlerFailure(code: "superseded", message: "A newer ingest owns this document.", retryable: false)
        }
        // An earlier attempt committed the content and died before the job
        // was marked done: nothing left to do.
        if document.status == .ready { return Self.result(document) }
        // Fence off earlier attempts of this job (a worker presumed dead may
        // still be running): from here, only this attempt writes.
        guard try await self.store.claimIngest(documentID: id, jobID: job.id, attempt: job.attempt, now: self.clock.now()) else {
            throw JobHandlerFailure(code: "superseded", message: "A later attempt or a newer ingest owns this document.", retryable: false)
        }
        do {
            return try await self.ingest(document, job: job)
        } catch let failure as DocumentExtractionError where failure.retryable && job.attempt < job.maxAttempts {
            // The machine, not the document (no process could be started): another attempt may do better.
            throw JobHandlerFailure(code: failure.code.rawValue, message: failure.message, retryable: true)
        } catch let failure as DocumentExtractionError {
            try await self.fail(document, job: job, code: failure.code.rawValue, message: failure.message)
            throw JobHandlerFailure(code: failure.code.rawValue, message: failure.message, retryable: false)
        } catch let failure as JobHandlerFailure where !failure.retryable {
            try await self.fail(document, job: job, code: failure.code, message: failure.message)
            throw failure
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            // Store trouble and the like: retried while attempts remain; the
            // last attempt leaves the document failed rather than processing.
            if job.attempt >= job.maxAttempts {
                try? await self.fail(document, job: job, code: "ingest_failed", message: "The document could not be stored; try again.")
            }
            throw error
        }
    }

    private func ingest(_ document: Document, job: JobContext) async throws -> JSONValue {
        try await job.progress(stage: "extracting", percent: 0)
        guard let upload = try await self.uploads.upload(id: document.uploadID), upload.sessionID == job.sessionID, upload.status == .complete else {
            throw JobHandlerFailure(code: "upload_not_found", message: "The document's upload is gone (expired or deleted).", retryable: false)
        }
        guard let format = DocumentFormat(rawValue: document.format) else {
            throw JobHandlerFailure(code: DocumentExtractionError.Code.unsupportedDocumentType.rawValue, message: "Unknown format.", retryable: false)
        }
        let bytes = try await self.uploads.bytes(of: upload)
        let extracted = try await self.extractor.extract(bytes, format: format)
        try await job.progress(stage: "sections", percent: 60, message: "\(extracted.sections.count) sections")
        let sections = extracted.sections.enumerated().map { index, section in
            DocumentSection(
                index: index, title: section.title, level: section.level, path: section.path, text: section.text, characterCount: section.characterCount,
                firstPage: section.firstPage, lastPage: section.lastPage
            )
        }
        let passages = Chunker.passages(of: extracted.sections, target: self.passageCharacters).map {
            DocumentPassage(sectionIndex: $0.sectionIndex, ordinal: $0.ordinal, heading: $0.heading, text: $0.text)
        }
        try Task.checkCancellation()
        try await job.progress(stage: "indexing", percent: 80, message: "\(passages.count) passages")
        let content = DocumentContent(title: extracted.title, pageCount: extracted.pageCount, sections: sections, passages: passages)
        guard try await self.store.completeIngest(documentID: document.id, jobID: job.id, attempt: job.attempt, content: content, now: self.clock.now()) else {
            throw JobHandlerFailure(code: "superseded", message: "The document was deleted or handed to a newer ingest.", retryable: false)
        }
        var done = document
        done.sectionCount = sections.count
        done.passageCount = passages.count
        done.characterCount = content.characterCount
        done.pageCount = extracted.pageCount
        return Self.result(done)
    }

    static func result(_ document: Document) -> JSONValue {
        .object([
            "document_id": .string(document.id), "status": .string(DocumentStatus.ready.rawValue), "sections": .int(Int64(document.sectionCount)),
            "passages": .int(Int64(document.passageCount)), "characters": .int(Int64(document.characterCount)),
            "pages": document.pageCount.map { .int(Int64($0)) } ?? .null,
        ])
    }

    private func fail(_ document: Document, job: JobContext, code: String, message: String) async throws {
        guard code != "superseded" else { return }
        _ = try await self.store.failIngest(documentID: document.id, jobID: job.id, attempt: job.attempt, code: code, message: message, now: self.clock.now())
    }
}
