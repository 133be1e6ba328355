import Foundation

/// Sections of a Markdown document from its ATX (`## Title`) and setext
/// (`Title` over `===` or `---`) headings. Lines inside fenced code blocks are
/// body text whatever they look like. The body keeps its Markdown source:
/// search works fine on it, and stripping inline syntax would lose code.
/// The title is YAML front matter's `title:`, else the first level-1 heading.
struct MarkdownReader {
    let maxCharacters: Int
    let deadline: Deadline
    var maxSections = DocumentLimits.default.maxSections

    func read(_ text: String) throws(DocumentExtractionError) -> ExtractedDocument {
        var assembler = SectionAssembler(maxCharacters: self.maxCharacters, maxSections: self.maxSections)
        var lines = text.documentLines[...]
        let frontMatterTitle = Self.skipFrontMatter(&lines)
        var paragraph: [Substring] = []
        var fence: (character: Character, length: Int)?

        func flush() throws(DocumentExtractionError) {
            if !paragraph.isEmpty { try assembler.paragraph(paragraph.joined(separator: "\n")) }
            paragraph.removeAll()
        }

        for (index, line) in lines.enumerated() {
            if index % 4096 == 0 { try self.deadline.check() }
            if let open = fence {
                paragraph.append(line)
                if let close = Self.fence(line), close.character == open.character, close.length >= open.length, close.info.isEmpty { fence = nil }
                continue
            }
            if let open = Self.fence(line) {
                fence = (open.character, open.length)
                paragraph.append(line)
                continue
            }
            if line.isBlank {
                try flush()
                continue
            }
            if let (level, title) = Self.atxHeading(line) {
                try flush()
                try assembler.heading(title, level: level)
                continue
            }
            if line.indentation < 4, let level = Self.setextLevel(line) {
                if !paragraph.isEmpty && paragraph.last.map({ $0.indentation < 4 }) == true {
                    let title = paragraph.map { String($0.trimmed) }.joined(separator: " ")
                    paragraph.removeAll()
                    try assembler.heading(title, level: level)
                }
                // Otherwise `---` is a thematic break and `===` is text no one needs.
                else if level == 1 { paragraph.append(line) }
                continue
            }
            paragraph.append(line)
        }
        try flush()
        let title = frontMatterTitle ?? assembler.firstTopHeading
        return ExtractedDocument(format: .markdown, title: title, sections: try assembler.sections(documentTitle: title))
    }

    /// `#` to `######`, then a space or the end of line; an optional closing run of `#` is dropped.
    static func atxHeading(_ line: Substring) -> (Int, String)? {
        guard line.indentation < 4 else { return nil }
        let content = line.drop(while: { $0 == " " })
        let hashes = content.prefix(while: { $0 == "#" }).count
        guard (1...6).contains(hashes) else { return nil }
        var rest = content.dropFirst(hashes)
        guard rest.isEmpty || rest.first == " " || rest.first == "\t" else { return nil }
        rest = rest.trimmed
        if let closing = rest.lastIndex(where: { $0 != "#" }) {
            let after = rest[rest.index(after: closing)...]
            if !after.isEmpty && rest[closing].isWhitespace { rest = rest[...closing].trimmed }
        } else {
            rest = ""
        }
        return (hashes, String(rest))
    }

    static func setextLevel(_ line: Substring) -> Int? {
        let content = line.trimmed
        guard let first = content.first, first == "=" || first == "-", content.allSatisfy({ $0 == first }) else { return nil }
        return first == "=" ? 1 : 2
    }

    static func fence(_ line: Substring) -> (character: Character, length: Int, info: Substring)? {
        guard line.indentation < 4 else { return nil }
        let content = line.drop(while: { $0 == " " })
        guard let first = content.first, first == "`" || first == "~" else { return nil }
        let length = content.prefix(while: { $0 == first }).count
        guard length >= 3 else { return nil }
        let info = content.dropFirst(length).trimmed
        if first == "`" && info.contains("`") { return nil }
        return (first, length, info)
    }

    /// Drops a leading `---` … `---` block and returns its `title:` if any.
    static func skipFrontMatter(_ lines: inout ArraySlice<Substring>) -> String? {
        guard lines.first?.trimmed == "---" else { return nil }
        guard let end = lines.dropFirst().firstIndex(where: { $0.trimmed == "---" || $0.trimmed == "..." }) else { return nil }
        var title: String?
        for line in lines[(lines.startIndex + 1)..<end] where line.hasPrefix("title:") {
            var value = line.dropFirst("title:".count).trimmed
            if value.count >= 2, let quote = value.first, quote == "\"" || quote == "'", value.last == quote { value = value.dropFirst().dropLast() }
            if !value.isEmpty { title = String(value) }
        }
        lines = lines[(end + 1)...]
        return title
    }
}
