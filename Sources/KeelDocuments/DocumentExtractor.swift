/// Turns an uploaded document into sections, within `limits`.
///
/// Errors are `DocumentExtractionError`, or `CancellationError` when the
/// caller's task is cancelled. Past `timeLimit` the work stops (a running
/// Poppler process is killed) and `extractionTimeout` is thrown.
public struct DocumentExtractor: Sendable {
    public let limits: DocumentLimits
    private let tools: PopplerTools?

    /// - Parameter popplerDirectory: where `pdfinfo` and `pdftohtml` are;
    ///   nil searches `PATH`.
    public init(limits: DocumentLimits = .default, popplerDirectory: String? = nil) {
        self.limits = limits
        self.tools = PopplerTools.locate(in: popplerDirectory)
    }

    /// Whether Poppler's tools were found, so PDFs can be extracted.
    public var pdfSupportAvailable: Bool { self.tools != nil }

    public func extract(_ bytes: [UInt8], format: DocumentFormat) async throws -> ExtractedDocument {
        guard Int64(bytes.count) <= self.limits.maxBytes else {
            throw DocumentExtractionError(.documentTooLarge, "The document is larger than the \(Self.describe(bytes: self.limits.maxBytes)) allowed.")
        }
        if format == .pdf && self.tools == nil { throw DocumentExtractionError.pdfSupportMissing }
        try Task.checkCancellation()
        let deadline = Deadline(after: self.limits.timeLimit)
        do {
            if format == .pdf { return try await self.extractPDF(bytes, deadline: deadline) }
            // The parsers block: they run on a Dispatch thread, and past the
            // deadline (or on cancellation) this returns without waiting for them.
            return try await BlockingWork.run(deadline: deadline) { try self.read(bytes, format: format, deadline: deadline) }
        } catch let error as DocumentExtractionError {
            if error.code == .extractionTimeout && ContinuousClock.now < deadline.instant && Task.isCancelled { throw CancellationError() }
            throw error
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            throw DocumentExtractionError.malformed(format)
        }
    }

    private func extractPDF(_ bytes: [UInt8], deadline: Deadline) async throws -> ExtractedDocument {
        guard let tools = self.tools else { throw DocumentExtractionError.pdfSupportMissing }
        let outcome = await withTaskGroup(of: Result<ExtractedDocument, any Error>?.self) { group in
            group.addTask {
                do { return .success(try await PDFReader(limits: self.limits, deadline: deadline, tools: tools).read(bytes)) } catch { return .failure(error) }
            }
            group.addTask {
                // Ends early (cancelled) when the work finishes first.
                try? await Task.sleep(until: deadline.instant, clock: .continuous)
                return nil
            }
            // The first to finish decides; cancelling the rest kills Poppler
            // or makes the parsers' deadline checks fire.
            let first = await group.next() ?? nil
            group.cancelAll()
            deadline.stop()
            return first
        }
        switch outcome {
        case .success(let document)?:
            return document
        case .failure(let error)?:
            throw error
        case nil:
            if Task.isCancelled && ContinuousClock.now < deadline.instant { throw CancellationError() }
            throw DocumentExtractionError.timeout
        }
    }

    /// Deletes temporary PDFs older than `age` that an earlier process left
    /// behind (killed while Poppler was reading them). Call at start-up;
    /// files of extractions still running are younger than their time limit.
    public static func sweepTemporaryFiles(olderThan age: Duration) {
        TemporaryFile.sweep(olderThan: age)
    }

    private func read(_ bytes: [UInt8], format: DocumentFormat, deadline: Deadline) throws(DocumentExtractionError) -> ExtractedDocument {
        let limits = self.limits
        switch format {
        case .text:
            return try PlainTextReader(maxCharacters: limits.maxCharacters, deadline: deadline, maxSections: limits.maxSections).read(TextDecoding.decode(bytes, deadline: deadline))
        case .markdown:
            return try MarkdownReader(maxCharacters: limits.maxCharacters, deadline: deadline, maxSections: limits.maxSections).read(TextDecoding.decode(bytes, deadline: deadline))
        case .html:
            let text: String
            do {
                text = try TextDecoding.decode(bytes, deadline: deadline)
            } catch where error.code == .unsupportedDocumentType {
                throw DocumentExtractionError.malformed(.html, "it is binary data")
            }
            return try HTMLReader(maxCharacters: limits.maxCharacters, deadline: deadline, maxSections: limits.maxSections).read(text)
        case .docx:
            return try DOCXReader(limits: limits, deadline: deadline).read(bytes)
        case .pdf:
            throw DocumentExtractionError.pdfSupportMissing  // extractPDF's
        }
    }

    private static func describe(bytes: Int64) -> String {
        bytes >= 1 << 20 && bytes % (1 << 20) == 0 ? "\(bytes >> 20) MiB" : "\(bytes) bytes"
    }
}
