/// How much work one extraction may do. Uploads come from users, so every
/// limit here stands between one bad file and the server's memory or time.
public struct DocumentLimits: Sendable, Equatable {
    /// Size of the document as uploaded.
    public var maxBytes: Int64
    /// Pages of a PDF, checked with `pdfinfo` before any text is extracted.
    public var maxPages: Int
    /// Characters of extracted text, all sections together.
    public var maxCharacters: Int
    /// For DOCX: the sum of the archive's declared entry sizes, and separately
    /// the bytes actually inflated, so a zip bomb stops before it fills memory.
    public var maxUncompressedBytes: Int64
    /// Sections (headings, plus the text before the first heading). Every
    /// section carries its path of heading titles, so this bounds the copies.
    public var maxSections: Int
    /// Wall-clock time for the whole extraction, Poppler included.
    public var timeLimit: Duration

    public init(
        maxBytes: Int64 = 50 * 1024 * 1024,
        maxPages: Int = 2000,
        maxCharacters: Int = 20_000_000,
        maxUncompressedBytes: Int64 = 512 * 1024 * 1024,
        timeLimit: Duration = .seconds(120),
        maxSections: Int = 10_000
    ) {
        self.maxBytes = maxBytes
        self.maxPages = maxPages
        self.maxCharacters = maxCharacters
        self.maxUncompressedBytes = maxUncompressedBytes
        self.timeLimit = timeLimit
        self.maxSections = maxSections
    }

    public static let `default` = DocumentLimits()
}
