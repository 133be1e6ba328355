import Foundation

/// Sections of a plain-text file, found by the habits people use to mark
/// headings when they have no markup. A line is a heading when it
///
/// - starts the file or follows a blank line, has text after it, is under
///   80 characters and does not end in `.,;:!?`, and
/// - is underlined (`===` level 1, `---` level 2), or numbered (`1.`, `2.3`,
///   `IV.`: the level is the number's depth and the number is dropped from
///   the title), or in ALL CAPS, or in Title Case.
///
/// Unnumbered headings get levels by style, strongest first (`===` or ALL
/// CAPS, then `---`, then Title Case), counting only the styles the file
/// uses: a file whose only headings are Title Case has them at level 1.
/// The title is the first level-1 heading. Line breaks in the body are kept.
struct PlainTextReader {
    let maxCharacters: Int
    let deadline: Deadline
    var maxSections = DocumentLimits.default.maxSections

    private enum Style: Int, Comparable {
        case strong = 0, underlinedDash, titleCase
        static func < (a: Style, b: Style) -> Bool { a.rawValue < b.rawValue }
    }

    private enum Block {
        case heading(String, depth: Int?, style: Style?)
        case paragraph(String)
    }

    func read(_ text: String) throws(DocumentExtractionError) -> ExtractedDocument {
        let lines = text.documentLines
        var blocks: [Block] = []
        var paragraph: [Substring] = []
        func flush() {
            if !paragraph.isEmpty { blocks.append(.paragraph(paragraph.joined(separator: "\n"))) }
            paragraph.removeAll()
        }
        let hasTextAfter: [Bool] = {
            var result = [Bool](repeating: false, count: lines.count)
            var seen = false
            for index in lines.indices.reversed() {
                result[index] = seen
                if !lines[index].isBlank { seen = true }
            }
            return result
        }()

        var index = 0
        while index < lines.count {
            if index % 4096 == 0 { try self.deadline.check() }
            let line = lines[index]
            if line.isBlank {
                flush()
                index += 1
                continue
            }
            let startsBlock = paragraph.isEmpty
            let content = line.trimmed
            if startsBlock, content.count < 80, index + 1 < lines.count, let underline = Self.underline(lines[index + 1]),
               underline.count >= min(3, content.count), hasTextAfter[index + 1] {
                blocks.append(.heading(String(content), depth: nil, style: underline.first == "=" ? .strong : .underlinedDash))
                index += 2
                continue
            }
            if startsBlock, hasTextAfter[index], let heading = Self.heading(content) {
                blocks.append(heading)
                index += 1
                continue
            }
            paragraph.append(line)
            index += 1
        }
        flush()

        let stylesUsed = Set(blocks.compactMap { block -> Style? in
            if case .heading(_, nil, let style) = block { return style }
            return nil
        }).sorted()
        var assembler = SectionAssembler(maxCharacters: self.maxCharacters, maxSections: self.maxSections)
        for (number, block) in blocks.enumerated() {
            if number % 4096 == 0 { try self.deadline.check() }
            switch block {
            case .paragraph(let text):
                try assembler.paragraph(text)
            case .heading(let title, let depth, let style):
                let level = depth ?? (style.flatMap { stylesUsed.firstIndex(of: $0) }.map { $0 + 1 } ?? 1)
                try assembler.heading(title, level: level)
            }
        }
        let title = assembler.firstTopHeading
        return ExtractedDocument(format: .text, title: title, sections: try assembler.sections(documentTitle: title))
    }

    private static func underline(_ line: Substring) -> Substring? {
        let content = line.trimmed
        guard let first = content.first, first == "=" || first == "-", content.allSatisfy({ $0 == first }) else { return nil }
        return content
    }

    private static func heading(_ line: Substring) -> Block? {
        guard line.count < 80, let last = line.last, !".,;:!?".contains(last) else { return nil }
        if let (depth, title) = Self.numbered(line) {
            return .heading(String(title), depth: depth, style: nil)
        }
        let letters = line.filter(\.isLetter)
        guard letters.count >= 2 else { return nil }
        if letters.allSatisfy({ !$0.isLowercase }) && letters.contains(where: \.isUppercase) {
            return .heading(String(line), depth: nil, style: .strong)
        }
        if Self.isTitleCase(line) { return .heading(String(line), depth: nil, style: .titleCase) }
        return nil
    }

    /// "1.", "2.3", "2.3.1" or a Roman numeral with a dot, a space, then a
    /// capitalised title. Parts of more than three digits look like years,
    /// not section numbers.
    private static func numbered(_ line: Substring) -> (Int, Substring)? {
        guard let space = line.firstIndex(where: { $0 == " " || $0 == "\t" }) else { return nil }
        let number = line[..<space]
        let title = line[space...].trimmed
        guard let initial = title.first, initial.isUppercase else { return nil }
        if number.count >= 2, number.last == ".", number.dropLast().allSatisfy({ "IVXLC".contains($0) }) {
            return (1, title)
        }
        let parts = (number.last == "." ? number.dropLast() : number).split(separator: ".", omittingEmptySubsequences: false)
        guard !parts.isEmpty, parts.allSatisfy({ !$0.isEmpty && $0.count <= 3 && $0.allSatisfy(\.isASCII) && $0.allSatisfy(\.isNumber) }) else { return nil }
        // A bare "3 Apples" is too easily a sentence; require a dot somewhere.
        guard number.contains(".") else { return nil }
        return (parts.count, title)
    }

    private static let minorWords: Set<String> = ["a", "an", "the", "and", "or", "nor", "but", "of", "in", "on", "at", "to", "for", "by", "with", "from", "as", "via", "vs", "per", "into", "over"]

    /// Every word capitalised except short function words after the first;
    /// at most twelve words, since longer lines are rarely headings.
    private static func isTitleCase(_ line: Substring) -> Bool {
        let words = line.split(whereSeparator: { $0.isWhitespace })
        guard !words.isEmpty, words.count <= 12 else { return false }
        for (position, word) in words.enumerated() {
            guard let first = word.first(where: { $0.isLetter || $0.isNumber }) else { continue }
            if first.isNumber { continue }
            if first.isUppercase { continue }
            if position > 0 && Self.minorWords.contains(word.lowercased()) { continue }
            return false
        }
        return words.first?.first(where: \.isLetter)?.isUppercase == true
    }
}
