/// Why a document could not be extracted. The code is for programs (it goes
/// into API error bodies); the message is for the person who uploaded the
/// file, so it never names a path or a tool's raw output.
public struct DocumentExtractionError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Code: String, Sendable {
        case unsupportedDocumentType = "unsupported_document_type"
        case documentTooLarge = "document_too_large"
        case tooManyPages = "too_many_pages"
        case tooManyCharacters = "too_many_characters"
        /// A DOCX whose archive would inflate past the limit: a zip bomb.
        case archiveTooLarge = "archive_too_large"
        /// A PDF without text, usually a scan.
        case noTextLayer = "no_text_layer"
        /// Poppler's tools are not installed on the server.
        case pdfSupportMissing = "pdf_support_missing"
        case extractionTimeout = "extraction_timeout"
        case malformedDocument = "malformed_document"
        case emptyDocument = "empty_document"
        /// More sections (headings) than `DocumentLimits.maxSections`.
        case tooManySections = "too_many_sections"
        /// The server could not run the extraction right now (no process
        /// could be started: out of file descriptors, memory or processes).
        /// Not the document's fault: worth retrying later.
        case extractionUnavailable = "extraction_unavailable"
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(self.code.rawValue): \(self.message)" }

    /// Whether trying again later may succeed: true only for `extractionUnavailable`;
    /// every other code is about the document and fails the same way again.
    public var retryable: Bool { self.code == .extractionUnavailable }

    static func malformed(_ format: DocumentFormat, _ detail: String? = nil) -> Self {
        let name = switch format {
        case .text: "text file"
        case .markdown: "Markdown file"
        case .html: "HTML file"
        case .docx: "Word document"
        case .pdf: "PDF"
        }
        return Self(.malformedDocument, "The \(name) could not be read\(detail.map { ": \($0)" } ?? ""); it may be damaged or not really a \(name).")
    }

    static let timeout = Self(.extractionTimeout, "Extracting the text took too long; try a smaller document.")
    static let empty = Self(.emptyDocument, "The document contains no text.")
    static let noTextLayer = Self(.noTextLayer, "The PDF has no text layer (it may be a scan); run it through OCR first.")
    static let pdfSupportMissing = Self(.pdfSupportMissing, "PDF support needs Poppler's command-line tools (Debian package poppler-utils), which are not installed on this server.")
    static let unsupported = Self(.unsupportedDocumentType, "The file is not text, Markdown, HTML, DOCX or PDF.")
    static let archiveTooLarge = Self(.archiveTooLarge, "The Word document expands to more data than allowed; it may be a zip bomb.")

    static let unavailable = Self(.extractionUnavailable, "The server could not start the PDF reader right now; try again later.")

    static func tooManySections(_ limit: Int) -> Self {
        Self(.tooManySections, "The document has more than \(limit) sections.")
    }

    static func tooManyCharacters(_ limit: Int) -> Self {
        Self(.tooManyCharacters, "The document has more than \(limit) characters of text.")
    }
}
