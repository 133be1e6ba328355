/// One heading of a document with the text under it, up to the next heading.
public struct ExtractedSection: Sendable, Equatable {
    public var title: String
    /// 1 for the outermost headings; deeper headings count up.
    public var level: Int
    /// Titles of the enclosing headings, outermost first, ending with `title`.
    public var path: [String]
    /// The body under the heading (not the heading itself), trimmed;
    /// paragraphs are separated by a blank line.
    public var text: String
    /// PDF only: the 1-based pages the section starts and ends on.
    public var firstPage: Int?
    public var lastPage: Int?

    public var characterCount: Int { self.text.count }

    public init(title: String, level: Int, path: [String], text: String, firstPage: Int? = nil, lastPage: Int? = nil) {
        self.title = title
        self.level = level
        self.path = path
        self.text = text
        self.firstPage = firstPage
        self.lastPage = lastPage
    }
}

/// A document reduced to its sections, ready for chunking and indexing.
public struct ExtractedDocument: Sendable, Equatable {
    public var format: DocumentFormat
    public var title: String?
    public var sections: [ExtractedSection]
    /// PDF only.
    public var pageCount: Int?
    /// The sum of the sections' character counts.
    public var characterCount: Int

    public init(format: DocumentFormat, title: String?, sections: [ExtractedSection], pageCount: Int? = nil) {
        self.format = format
        // U+0000 is not allowed in PostgreSQL text; readers drop it from sections already.
        self.title = title.map(SectionAssembler.removingNUL)
        self.sections = sections
        self.pageCount = pageCount
        self.characterCount = sections.reduce(0) { $0 + $1.characterCount }
    }
}
