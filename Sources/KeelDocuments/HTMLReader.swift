import Foundation

/// Sections of an HTML page from its `h1`–`h6` headings. Block elements end
/// paragraphs, `<br>` breaks lines, table cells are separated by tabs, and
/// whitespace collapses as a browser would (except in `<pre>`). Script,
/// style and template contents and the `<head>` are skipped; `<title>` gives
/// the title (else the first `h1`). Bytes with no tag at all are not HTML.
struct HTMLReader {
    let maxCharacters: Int
    let deadline: Deadline
    var maxSections = DocumentLimits.default.maxSections

    private static let blocks: Set<String> = [
        "p", "div", "section", "article", "header", "footer", "nav", "aside", "main", "blockquote", "pre", "ul", "ol", "li",
        "dl", "dt", "dd", "table", "thead", "tbody", "tfoot", "tr", "caption", "figure", "figcaption", "form", "fieldset",
        "legend", "address", "hr", "body", "html", "details", "summary", "center", "menu",
    ]
    private static let skipped: Set<String> = ["script", "style", "template", "noscript", "svg", "math", "iframe", "object", "select"]

    func read(_ text: String) throws(DocumentExtractionError) -> ExtractedDocument {
        var tokenizer = MarkupTokenizer(Array(text.utf8), rawTextElements: ["script", "style", "textarea", "title", "xmp", "plaintext"])
        var assembler = SectionAssembler(maxCharacters: self.maxCharacters, maxSections: self.maxSections)
        var sawMarkup = false
        var title: String?
        var inTitle = false
        var inHead = false
        var skipping: [String] = []  // open skipped elements, innermost last
        var preDepth = 0
        var heading: (level: Int, text: String)?
        var paragraph = ""
        var tokens = 0

        func endParagraph() throws(DocumentExtractionError) {
            if let open = heading {
                heading = nil
                try assembler.heading(open.text, level: open.level)
            }
            try assembler.paragraph(paragraph)
            paragraph = ""
        }
        func append(_ text: String) {
            if heading != nil { heading!.text += text } else { paragraph += text }
        }

        while let token = tokenizer.next() {
            tokens += 1
            if tokens % 4096 == 0 { try self.deadline.check() }
            switch token {
            case .declaration:
                sawMarkup = true
            case .startTag(let name, _, let selfClosing):
                sawMarkup = true
                if !skipping.isEmpty {
                    if name == skipping.last && !selfClosing { skipping.append(name) }
                    continue
                }
                if Self.skipped.contains(name) && !selfClosing { skipping.append(name); continue }
                switch name {
                case "head": inHead = true
                case "body": inHead = false; try endParagraph()
                case "title": inTitle = true
                case "br": if !inHead { append("\n") }
                case "td", "th": append("\t")
                case "pre": preDepth += 1; try endParagraph()
                default:
                    if name.count == 2, name.first == "h", let level = Int(name.dropFirst()), (1...6).contains(level) {
                        inHead = false
                        try endParagraph()
                        heading = (level, "")
                    } else if Self.blocks.contains(name) {
                        inHead = false
                        try endParagraph()
                    }
                }
            case .endTag(let name):
                sawMarkup = true
                if !skipping.isEmpty {
                    if name == skipping.last { skipping.removeLast() }
                    continue
                }
                switch name {
                case "head": inHead = false
                case "title": inTitle = false
                case "pre": preDepth = max(0, preDepth - 1); try endParagraph()
                default:
                    if name.count == 2, name.first == "h", let level = Int(name.dropFirst()), (1...6).contains(level) {
                        try endParagraph()
                    } else if Self.blocks.contains(name) {
                        try endParagraph()
                    }
                }
            case .text(let text):
                if !skipping.isEmpty { continue }
                if inTitle {
                    let value = SectionAssembler.collapseWhitespace(text)
                    if title == nil && !value.isEmpty { title = value }
                    inTitle = false
                    continue
                }
                if inHead { continue }
                append(preDepth > 0 ? text.replacingOccurrences(of: "\u{A0}", with: " ") : Self.collapse(text, after: heading?.text ?? paragraph))
            }
        }
        try endParagraph()
        guard sawMarkup else { throw .malformed(.html, "it contains no HTML markup") }
        let documentTitle = title ?? assembler.firstTopHeading
        return ExtractedDocument(format: .html, title: documentTitle, sections: try assembler.sections(documentTitle: documentTitle))
    }

    /// Whitespace runs become one space; no space at the start of a line or after one already there.
    private static func collapse(_ text: String, after previous: String) -> String {
        var result = ""
        var lastWasSpace = previous.isEmpty || previous.last?.isWhitespace == true
        for character in text {
            if character.isWhitespace {
                if !lastWasSpace { result.append(" ") }
                lastWasSpace = true
            } else {
                result.append(character)
                lastWasSpace = false
            }
        }
        return result
    }
}
