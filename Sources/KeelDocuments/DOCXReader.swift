import Foundation
import ZIPFoundation
#if canImport(FoundationXML)
import FoundationXML
#endif

/// Sections of a Word document from its paragraph outline levels: a
/// paragraph's own `w:outlineLvl`, else its style's (from `word/styles.xml`,
/// following `w:basedOn`), where a style named "heading N" is level N and
/// "Title" is level 1. Text is `w:t`, with `w:tab` as a tab and `w:br`/`w:cr`
/// as line breaks; table cells are ordinary paragraphs. The title is
/// `dc:title` from `docProps/core.xml`, else the first Title paragraph.
///
/// The archive is untrusted: the declared sizes of all entries are summed
/// before anything is inflated, and inflated bytes are counted as they come,
/// so a zip bomb stops at `maxUncompressedBytes` either way. Before that,
/// `ZipPreflight` checks every offset and size in the archive's structure,
/// since ZIPFoundation traps on some absurd ones.
struct DOCXReader {
    let limits: DocumentLimits
    let deadline: Deadline

    func read(_ bytes: [UInt8]) throws(DocumentExtractionError) -> ExtractedDocument {
        try ZipPreflight.check(bytes, deadline: self.deadline)
        let archive: Archive
        do {
            archive = try Archive(data: Data(bytes), accessMode: .read)
        } catch {
            throw .malformed(.docx, "it is not a zip archive")
        }
        var declared: UInt64 = 0
        for (index, entry) in archive.enumerated() {
            if index % 256 == 0 { try self.deadline.check() }
            declared = declared &+ entry.uncompressedSize
            if declared > UInt64(max(0, self.limits.maxUncompressedBytes)) { throw .archiveTooLarge }
        }
        guard let documentEntry = archive["word/document.xml"] else { throw .malformed(.docx, "its main text part is missing") }

        var inflated: Int64 = 0
        func contents(_ entry: Entry) throws(DocumentExtractionError) -> Data {
            var data = Data()
            var failure: DocumentExtractionError?
            do {
                _ = try archive.extract(entry, skipCRC32: true) { chunk in
                    inflated += Int64(chunk.count)
                    if inflated > self.limits.maxUncompressedBytes { failure = .archiveTooLarge }
                    else if self.deadline.hasPassed { failure = .timeout }
                    if let failure { throw failure }
                    data.append(chunk)
                }
            } catch {
                throw failure ?? .malformed(.docx, "an entry of the archive is damaged")
            }
            return data
        }

        let styles = try archive["word/styles.xml"].map { entry throws(DocumentExtractionError) in try StyleTable(contents(entry), deadline: self.deadline) } ?? StyleTable()
        let coreTitle = try archive["docProps/core.xml"].map { entry throws(DocumentExtractionError) in try CoreTitle.read(try contents(entry), deadline: self.deadline) } ?? nil
        let body = BodyParser(styles: styles, limits: self.limits, deadline: self.deadline)
        try body.parse(try contents(documentEntry))
        let title = coreTitle ?? body.firstTitleParagraph
        return ExtractedDocument(format: .docx, title: title, sections: try body.assembler.sections(documentTitle: title))
    }
}

/// The WordprocessingML namespace, transitional and strict.
private let wordNamespaces: Set<String> = [
    "http://schemas.openxmlformats.org/wordprocessingml/2006/main",
    "http://purl.oclc.org/ooxml/wordprocessingml/main",
]

/// Parsers read from a stream: on Linux, `XMLParser(data:)` reports an error
/// at the end of documents over about 10 MB, which real DOCX files reach.
///
/// XMLParser without namespace processing: names stay qualified, so the
/// prefix bound to WordprocessingML is read from the root element.
/// Subclasses declare `XMLParserDelegate` themselves: on Linux the protocol's
/// default methods would otherwise win over theirs.
class WordXMLDelegate: NSObject {
    var prefix = "w:"
    private var sawRoot = false

    func local(_ elementName: String, _ attributes: [String: String]) -> String? {
        if !self.sawRoot {
            self.sawRoot = true
            for (key, value) in attributes where wordNamespaces.contains(value) {
                self.prefix = key == "xmlns" ? "" : String(key.dropFirst("xmlns:".count)) + ":"
            }
        }
        guard elementName.hasPrefix(self.prefix) else { return nil }
        return String(elementName.dropFirst(self.prefix.count))
    }

    func value(_ attributes: [String: String]) -> String? { attributes[self.prefix + "val"] }
}

/// styleId → outline level (1-based) for paragraph styles.
struct StyleTable {
    private var levels: [String: Int] = [:]
    private(set) var titleStyles: Set<String> = []

    init() {}

    /// How many `w:basedOn` steps are followed; a longer chain has no level.
    static let maxChain = 32

    init(_ data: Data, deadline: Deadline) throws(DocumentExtractionError) {
        final class Delegate: WordXMLDelegate, XMLParserDelegate {
            struct Style { var name: String?; var basedOn: String?; var outline: Int? }
            var styles: [String: Style] = [:]
            var current: String?
            var depth = 0
            let deadline: Deadline
            var elements = 0
            var timedOut = false
            init(deadline: Deadline) { self.deadline = deadline }
            func parser(_ parser: XMLParser, didStartElement elementName: String, namespaceURI: String?, qualifiedName: String?, attributes: [String: String] = [:]) {
                self.elements += 1
                if self.elements % 4096 == 0, self.deadline.hasPassed {
                    self.timedOut = true
                    return parser.abortParsing()
                }
                guard let name = self.local(elementName, attributes) else { return }
                switch name {
                case "style":
                    self.current = attributes[self.prefix + "type"] ?? "paragraph" == "paragraph" ? attributes[self.prefix + "styleId"] : nil
                    if let id = self.current { self.styles[id] = Style() }
                case "name": if let id = self.current { self.styles[id]?.name = self.value(attributes) }
                case "basedOn": if let id = self.current { self.styles[id]?.basedOn = self.value(attributes) }
                case "outlineLvl": if let id = self.current, let level = self.value(attributes).flatMap(Int.init) { self.styles[id]?.outline = level }
                default: break
                }
            }
            func parser(_ parser: XMLParser, didEndElement elementName: String, namespaceURI: String?, qualifiedName: String?) {
                if elementName == self.prefix + "style" { self.current = nil }
            }
        }
        let delegate = Delegate(deadline: deadline)
        let parser = XMLParser(stream: InputStream(data: data))
        parser.delegate = delegate
        let ok = parser.parse()
        if delegate.timedOut { throw .timeout }
        guard ok else { throw .malformed(.docx, "its styles are not valid XML") }

        /// A style's own level, or nil when it inherits from `basedOn`.
        func own(_ style: Delegate.Style) -> Int?? {
            // Outline level 9 is "body text".
            if let outline = style.outline { return .some(outline < 9 ? outline + 1 : nil) }
            if let name = style.name?.lowercased() {
                if name == "title" { return .some(1) }
                if name.hasPrefix("heading "), let n = Int(name.dropFirst("heading ".count)), (1...9).contains(n) { return .some(n) }
            }
            return nil
        }
        // Each chain is followed once: every style on it gets the result.
        var resolved: [String: Int?] = [:]
        for (index, (id, style)) in delegate.styles.enumerated() {
            if index % 1024 == 0 { try deadline.check() }
            if style.name?.lowercased() == "title" { self.titleStyles.insert(id) }
            var chain: [String] = []
            var current = id
            var result: Int?
            var truncated = false
            while true {
                if let known = resolved[current] { result = known; break }
                guard let style = delegate.styles[current], !chain.contains(current) else { break }
                guard chain.count < Self.maxChain else { truncated = true; break }
                chain.append(current)
                if let level = own(style) { result = level; break }
                guard let base = style.basedOn else { break }
                current = base
            }
            // A chain cut short says nothing about the styles further along it.
            for member in truncated ? [id] : chain { resolved[member] = .some(result) }
        }
        self.levels = resolved.compactMapValues { $0 }
    }

    func level(of styleID: String?) -> Int? { styleID.flatMap { self.levels[$0] } }
}

/// `dc:title` of `docProps/core.xml`.
enum CoreTitle {
    static func read(_ data: Data, deadline: Deadline) throws(DocumentExtractionError) -> String? {
        final class Delegate: NSObject, XMLParserDelegate {
            var inTitle = false
            var title = ""
            let deadline: Deadline
            var elements = 0
            var timedOut = false
            init(deadline: Deadline) { self.deadline = deadline }
            func parser(_ parser: XMLParser, didStartElement elementName: String, namespaceURI: String?, qualifiedName: String?, attributes: [String: String] = [:]) {
                self.elements += 1
                if self.elements % 4096 == 0, self.deadline.hasPassed {
                    self.timedOut = true
                    return parser.abortParsing()
                }
                self.inTitle = elementName == "title" && namespaceURI == "http://purl.org/dc/elements/1.1/"
            }
            func parser(_ parser: XMLParser, didEndElement elementName: String, namespaceURI: String?, qualifiedName: String?) {
                self.inTitle = false
            }
            func parser(_ parser: XMLParser, foundCharacters string: String) {
                // A title longer than any heading may be is cut (and stops growing).
                if self.inTitle, self.title.utf8.count < 4 * SectionAssembler.maxTitleCharacters { self.title += string }
            }
        }
        let delegate = Delegate(deadline: deadline)
        let parser = XMLParser(stream: InputStream(data: data))
        parser.shouldProcessNamespaces = true
        parser.delegate = delegate
        _ = parser.parse()  // a damaged core.xml only loses the title
        if delegate.timedOut { throw .timeout }
        var title = SectionAssembler.collapseWhitespace(delegate.title)
        if title.count > SectionAssembler.maxTitleCharacters { title = String(title.prefix(SectionAssembler.maxTitleCharacters).trimmed) }
        return title.isEmpty ? nil : title
    }
}

/// Walks `word/document.xml`, turning paragraphs into headings and body text.
private final class BodyParser: WordXMLDelegate, XMLParserDelegate {
    private let styles: StyleTable
    private let deadline: Deadline
    var assembler: SectionAssembler
    var firstTitleParagraph: String?
    private var failure: DocumentExtractionError?

    /// Open paragraphs: text boxes nest paragraphs inside a paragraph's run.
    private var paragraphs: [(text: String, style: String?, outline: Int?)] = []
    private var runDepth = 0
    private var inText = false
    private var elements = 0
    private let maxCharacters: Int
    /// Characters in the open paragraphs, checked as text arrives: one
    /// paragraph could otherwise grow far past the limit before it ends.
    /// Summed per piece of text, so a grapheme split between pieces counts twice.
    private var openCharacters = 0
    private var appends = 0

    init(styles: StyleTable, limits: DocumentLimits, deadline: Deadline) {
        self.styles = styles
        self.deadline = deadline
        self.maxCharacters = limits.maxCharacters
        self.assembler = SectionAssembler(maxCharacters: limits.maxCharacters, maxSections: limits.maxSections)
    }

    func parse(_ data: Data) throws(DocumentExtractionError) {
        let parser = XMLParser(stream: InputStream(data: data))
        parser.delegate = self
        let ok = parser.parse()
        if let failure { throw failure }
        guard ok else { throw .malformed(.docx, "its text is not valid XML") }
    }

    private func fail(_ parser: XMLParser, _ error: DocumentExtractionError) {
        if self.failure == nil { self.failure = error }
        parser.abortParsing()
    }

    func parser(_ parser: XMLParser, didStartElement elementName: String, namespaceURI: String?, qualifiedName: String?, attributes: [String: String] = [:]) {
        self.elements += 1
        if self.elements % 4096 == 0, self.deadline.hasPassed { return self.fail(parser, .timeout) }
        guard let name = self.local(elementName, attributes) else { return }
        switch name {
        case "p": self.paragraphs.append(("", nil, nil))
        case "pStyle": if !self.paragraphs.isEmpty { self.paragraphs[self.paragraphs.count - 1].style = self.value(attributes) }
        case "outlineLvl": if !self.paragraphs.isEmpty { self.paragraphs[self.paragraphs.count - 1].outline = self.value(attributes).flatMap(Int.init) }
        case "r": self.runDepth += 1
        case "t": self.inText = self.runDepth > 0
        case "tab" where self.runDepth > 0: self.append("\t", parser)
        case "br", "cr": if self.runDepth > 0 { self.append("\n", parser) }
        default: break
        }
    }

    func parser(_ parser: XMLParser, didEndElement elementName: String, namespaceURI: String?, qualifiedName: String?) {
        guard elementName.hasPrefix(self.prefix) else { return }
        switch elementName.dropFirst(self.prefix.count) {
        case "t": self.inText = false
        case "r": self.runDepth = max(0, self.runDepth - 1)
        case "p":
            guard let paragraph = self.paragraphs.popLast() else { return }
            self.openCharacters = self.paragraphs.isEmpty ? 0 : max(0, self.openCharacters - paragraph.text.count)
            do {
                let level = paragraph.outline.map { $0 < 9 ? $0 + 1 : nil } ?? self.styles.level(of: paragraph.style)
                if let level {
                    try self.assembler.heading(paragraph.text, level: level)
                    if self.firstTitleParagraph == nil, let style = paragraph.style, self.styles.titleStyles.contains(style) {
                        let title = SectionAssembler.collapseWhitespace(paragraph.text)
                        if !title.isEmpty { self.firstTitleParagraph = title }
                    }
                } else {
                    try self.assembler.paragraph(paragraph.text)
                }
            } catch {
                self.fail(parser, error)
            }
        default: break
        }
    }

    func parser(_ parser: XMLParser, foundCharacters string: String) {
        if self.inText { self.append(string, parser) }
    }

    private func append(_ text: String, _ parser: XMLParser) {
        guard !self.paragraphs.isEmpty else { return }
        self.paragraphs[self.paragraphs.count - 1].text += text
        self.openCharacters += text.count
        if self.openCharacters > self.maxCharacters { return self.fail(parser, .tooManyCharacters(self.maxCharacters)) }
        self.appends += 1
        if self.appends % 4096 == 0, self.deadline.hasPassed { self.fail(parser, .timeout) }
    }
}
