import Foundation

/// Builds sections from a stream of headings and paragraphs, the one shape
/// every format's reader produces. Keeping the rules here (paths, the
/// untitled preamble, the limits) makes all formats agree.
///
/// Heading titles are cut to `maxTitleCharacters`: every section below a
/// heading repeats its title in its path (and every passage in its
/// heading), so a long title would otherwise multiply; cut, a title counts
/// once toward the character limit and its copies are bounded by
/// `maxSections` × depth × 300. U+0000 is dropped from titles and text
/// (PostgreSQL refuses it in text).
struct SectionAssembler {
    static let maxTitleCharacters = 300

    private struct Pending {
        var title: String?  // nil: text before the first heading
        var level: Int
        var path: [String]
        var paragraphs: [String] = []
        var firstPage: Int?
        var lastPage: Int?
    }

    private var finished: [Pending] = []
    private var current = Pending(title: nil, level: 1, path: [])
    private var headingCount = 0
    private var characters = 0
    private let maxCharacters: Int
    private let maxSections: Int
    private var preambleHasText = false
    /// The first level-1 heading, which formats without a title of their own use as one.
    private(set) var firstTopHeading: String?

    init(maxCharacters: Int, maxSections: Int = DocumentLimits.default.maxSections) {
        self.maxCharacters = maxCharacters
        self.maxSections = maxSections
    }

    mutating func heading(_ rawTitle: String, level: Int, page: Int? = nil) throws(DocumentExtractionError) {
        var title = Self.collapseWhitespace(rawTitle)
        guard !title.isEmpty else { return }
        if title.utf8.count > Self.maxTitleCharacters, title.count > Self.maxTitleCharacters {
            title = String(title.prefix(Self.maxTitleCharacters).trimmed)
        }
        // This heading's section, the ones before it, and the preamble if it has text.
        if self.headingCount + 1 + (self.preambleHasText ? 1 : 0) > self.maxSections { throw .tooManySections(self.maxSections) }
        try self.count(title)
        self.finished.append(self.current)
        // The enclosing headings are those on the current path with a lower level.
        var path: [String] = []
        var levels: [Int] = []
        for (ancestor, ancestorLevel) in zip(self.current.path, self.pathLevels) where ancestorLevel < level {
            path.append(ancestor)
            levels.append(ancestorLevel)
        }
        path.append(title)
        self.pathLevels = levels + [level]
        self.current = Pending(title: title, level: level, path: path, firstPage: page, lastPage: page)
        self.headingCount += 1
        if level == 1 && self.firstTopHeading == nil { self.firstTopHeading = title }
    }

    /// Levels of the headings on `current.path`.
    private var pathLevels: [Int] = []

    mutating func paragraph(_ text: String, page: Int? = nil) throws(DocumentExtractionError) {
        try self.paragraph(text, firstPage: page, lastPage: page)
    }

    mutating func paragraph(_ text: String, firstPage: Int?, lastPage: Int?) throws(DocumentExtractionError) {
        let trimmed = Self.trimmingWhitespace(Self.removingNUL(text))
        guard !trimmed.isEmpty else { return }
        try self.count(trimmed)
        if self.headingCount == 0 { self.preambleHasText = true }
        self.current.paragraphs.append(trimmed)
        if let firstPage, self.current.firstPage == nil { self.current.firstPage = firstPage }
        if let lastPage { self.current.lastPage = lastPage }
    }

    /// `text` without leading and trailing whitespace and newlines, read on
    /// Unicode scalars: Foundation's `trimmingCharacters(in:)` goes through
    /// UTF-16 and was a tenth of a 300-page PDF's ingest in a profile.
    static func trimmingWhitespace(_ text: String) -> String {
        func isSpace(_ scalar: Unicode.Scalar) -> Bool {
            switch scalar.value {
            case 0x20, 0x09...0x0D: true
            case 0..<0x80: false
            default: scalar.properties.isWhitespace
            }
        }
        let scalars = text.unicodeScalars
        guard let first = scalars.firstIndex(where: { !isSpace($0) }), let last = scalars.lastIndex(where: { !isSpace($0) }) else { return "" }
        if first == scalars.startIndex && scalars.index(after: last) == scalars.endIndex { return text }
        return String(scalars[first...last])
    }

    private mutating func count(_ text: String) throws(DocumentExtractionError) {
        self.characters += text.count
        if self.characters > self.maxCharacters { throw .tooManyCharacters(self.maxCharacters) }
    }

    /// The sections, or `emptyDocument` when there is no body text at all.
    /// The preamble is titled after the document ("Introduction" without a
    /// title), or "Document" when the document has no headings at all.
    func sections(documentTitle: String?) throws(DocumentExtractionError) -> [ExtractedSection] {
        var sections: [ExtractedSection] = []
        for pending in self.finished + [self.current] {
            let text = pending.paragraphs.joined(separator: "\n\n")
            if pending.title == nil {
                if text.isEmpty { continue }
                let title = documentTitle ?? (self.headingCount == 0 ? "Document" : "Introduction")
                sections.append(ExtractedSection(title: title, level: 1, path: [title], text: text, firstPage: pending.firstPage, lastPage: pending.lastPage))
            } else {
                sections.append(ExtractedSection(title: pending.title!, level: pending.level, path: pending.path, text: text, firstPage: pending.firstPage, lastPage: pending.lastPage))
            }
        }
        guard sections.contains(where: { !$0.text.isEmpty }) else { throw .empty }
        if sections.reduce(0, { $0 + $1.characterCount }) > self.maxCharacters { throw .tooManyCharacters(self.maxCharacters) }
        return sections
    }

    /// `text` without U+0000.
    static func removingNUL(_ text: String) -> String {
        guard text.utf8.contains(0) else { return text }
        var scalars = text.unicodeScalars
        scalars.removeAll { $0 == "\0" }
        return String(scalars)
    }

    /// Unicode's White_Space set, spelled out: the property lookup is slow.
    static func isWhitespace(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0x20, 0x09...0x0D: true
        case 0..<0x85: false
        case 0x85, 0xA0, 0x1680, 0x2000...0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000: true
        default: false
        }
    }

    /// Whitespace runs become one space; none at either end. Works on
    /// scalars, which is several times faster than on characters.
    static func collapseWhitespace(_ text: String) -> String {
        var needsWork = false
        var previousWasSpace = true
        for scalar in text.unicodeScalars {
            if scalar == "\0" { needsWork = true; break }
            let isSpace = Self.isWhitespace(scalar)
            if isSpace && (previousWasSpace || scalar != " ") { needsWork = true; break }
            previousWasSpace = isSpace
        }
        if !needsWork && !previousWasSpace { return text }
        if !needsWork && text.isEmpty { return text }
        var result = String.UnicodeScalarView()
        var pendingSpace = false
        for scalar in text.unicodeScalars {
            if Self.isWhitespace(scalar) {
                pendingSpace = !result.isEmpty
            } else if scalar != "\0" {
                if pendingSpace { result.append(" ") }
                pendingSpace = false
                result.append(scalar)
            }
        }
        return String(result)
    }
}
