/// What `pdftohtml -xml` says about a PDF: text lines with position and font
/// size, and the outline.
struct PopplerLayout {
    struct Line {
        var page: Int
        var top: Double
        var left: Double
        var height: Double
        var size: Double
        var text: String
        /// `text.count`, kept as pieces are added: recounting is quadratic.
        var characters = 0
    }

    /// Outline items beyond this are ignored: each is searched for among the
    /// lines of its page, so a huge outline would be slow for nothing.
    static let maxOutlineItems = 5000

    struct OutlineItem {
        var title: String
        var level: Int
        var page: Int
    }

    var lines: [Line] = []
    var outline: [OutlineItem] = []

    static func parse(_ xml: [UInt8], deadline: Deadline) throws(DocumentExtractionError) -> PopplerLayout {
        var layout = PopplerLayout()
        var tokenizer = MarkupTokenizer(xml)
        var fonts: [String: Double] = [:]
        var page = 0
        var line: Line?
        var outlineDepth = 0
        var item: OutlineItem?
        var tokens = 0

        while let token = tokenizer.next() {
            tokens += 1
            if tokens % 4096 == 0 { try deadline.check() }
            switch token {
            case .startTag(let name, let attributes, _):
                switch name {
                case "page": page = attributes["number"].flatMap { Int($0) } ?? page + 1
                case "fontspec":
                    if let id = attributes["id"], let size = attributes["size"].flatMap(Double.init) { fonts[id] = size }
                case "text":
                    line = Line(
                        page: page, top: attributes["top"].flatMap(Double.init) ?? 0, left: attributes["left"].flatMap(Double.init) ?? 0,
                        height: attributes["height"].flatMap(Double.init) ?? 0, size: attributes["font"].flatMap { fonts[$0] } ?? 0, text: "")
                case "outline": outlineDepth += 1
                case "item": item = OutlineItem(title: "", level: max(1, outlineDepth), page: attributes["page"].flatMap { Int($0) } ?? 0)
                default: break
                }
            case .endTag(let name):
                switch name {
                case "text":
                    if let finished = line { layout.append(finished) }
                    line = nil
                case "outline": outlineDepth -= 1
                case "item":
                    if var finished = item {
                        finished.title = SectionAssembler.collapseWhitespace(finished.title)
                        if !finished.title.isEmpty && layout.outline.count < Self.maxOutlineItems { layout.outline.append(finished) }
                    }
                    item = nil
                default: break
                }
            case .text(let text):
                if line != nil {
                    line!.text += text
                    line!.characters += text.count
                } else if item != nil {
                    item!.title += text
                }
            case .declaration: break
            }
        }
        return layout
    }

    /// Pieces of one visual line (a bold word, a change of font) share a top;
    /// join them so headings and sentences stay whole.
    private mutating func append(_ line: Line) {
        if var last = self.lines.last, last.page == line.page, abs(last.top - line.top) < 2 {
            let lastCount = last.characters, count = line.characters
            let separator = last.text.last?.isWhitespace == false && line.text.first?.isWhitespace == false ? " " : ""
            last.text += separator + line.text
            last.characters = lastCount + separator.count + count
            if count > lastCount { last.size = line.size }
            last.height = max(last.height, line.height)
            self.lines[self.lines.count - 1] = last
        } else {
            self.lines.append(line)
        }
    }

    private enum Event {
        case heading(String, level: Int, page: Int)
        case paragraph(String, firstPage: Int, lastPage: Int)
    }

    /// Feeds headings and paragraphs to the assembler.
    func emit(into assembler: inout SectionAssembler, deadline: Deadline) throws(DocumentExtractionError) {
        for event in try self.events(deadline: deadline) {
            switch event {
            case .heading(let title, let level, let page): try assembler.heading(title, level: level, page: page)
            case .paragraph(let text, let first, let last): try assembler.paragraph(text, firstPage: first, lastPage: last)
            }
        }
    }

    private func events(deadline: Deadline) throws(DocumentExtractionError) -> [Event] {
        let headings = try self.outline.isEmpty ? self.headingsBySize(deadline: deadline) : self.headingsFromOutline(deadline: deadline)
        let covered = Set(headings.flatMap(\.coveredLines) + headings.compactMap(\.line))
        var events: [Event] = []
        var paragraph = ""
        var firstPage = 0
        var previous: Line?
        var nextHeading = 0

        for (index, line) in self.lines.enumerated() {
            if index % 4096 == 0 { try deadline.check() }
            // Headings due before this line: matched to an earlier line, or
            // (outline items that matched no line) starting on an earlier page or this one.
            while nextHeading < headings.count {
                let heading = headings[nextHeading]
                let due = heading.line.map { $0 <= index } ?? (heading.page <= line.page)
                guard due else { break }
                if !paragraph.isEmpty { events.append(.paragraph(paragraph, firstPage: firstPage, lastPage: previous?.page ?? firstPage)) }
                paragraph = ""
                previous = nil
                events.append(.heading(heading.title, level: heading.level, page: heading.page))
                nextHeading += 1
            }
            if covered.contains(index) { continue }
            let text = SectionAssembler.collapseWhitespace(line.text)
            if text.isEmpty { continue }
            if let last = previous {
                let newParagraph: Bool
                if last.page != line.page {
                    // A paragraph runs on over a page break unless its last line ended a sentence.
                    newParagraph = paragraph.last.map { ".!?:".contains($0) } ?? true
                } else {
                    newParagraph = line.top < last.top || line.top - (last.top + last.height) > max(last.height, line.height) * 0.9
                }
                if newParagraph {
                    events.append(.paragraph(paragraph, firstPage: firstPage, lastPage: last.page))
                    paragraph = ""
                } else if !paragraph.hasSuffix("-") {
                    paragraph += " "
                }
            }
            if paragraph.isEmpty { firstPage = line.page }
            paragraph += text
            previous = line
        }
        if !paragraph.isEmpty { events.append(.paragraph(paragraph, firstPage: firstPage, lastPage: previous?.page ?? firstPage)) }
        for heading in headings[nextHeading...] {
            events.append(.heading(heading.title, level: heading.level, page: heading.page))
        }
        return events
    }

    private struct Heading {
        var title: String
        var level: Int
        var page: Int
        /// The line holding the heading, if one was found.
        var line: Int?
        /// Further lines the heading wrapped onto.
        var coveredLines: [Int] = []
    }

    private static func normalized(_ text: String) -> String {
        SectionAssembler.collapseWhitespace(text).lowercased()
    }

    /// Each outline item matched, in order, to the first unused line on its
    /// page that spells it (possibly over several lines).
    private func headingsFromOutline(deadline: Deadline) throws(DocumentExtractionError) -> [Heading] {
        var result: [Heading] = []
        var cursor = 0
        var normalizedLines: [String?] = Array(repeating: nil, count: self.lines.count)
        func normalizedLine(_ index: Int) -> String {
            if let known = normalizedLines[index] { return known }
            let value = Self.normalized(self.lines[index].text)
            normalizedLines[index] = value
            return value
        }
        var firstLineOfPage: [Int: Int] = [:]
        for (index, line) in self.lines.enumerated() where firstLineOfPage[line.page] == nil { firstLineOfPage[line.page] = index }
        var steps = 0
        for item in self.outline {
            try deadline.check()
            let wanted = Self.normalized(item.title)
            var heading = Heading(title: item.title, level: item.level, page: item.page)
            var start = max(cursor, firstLineOfPage[item.page] ?? self.lines.count)
            search: while start < self.lines.count, self.lines[start].page == item.page {
                steps += 1
                if steps % 4096 == 0 { try deadline.check() }
                var combined = normalizedLine(start)
                var end = start
                while !combined.isEmpty, wanted.hasPrefix(combined) {
                    if combined == wanted {
                        heading.line = start
                        heading.coveredLines = Array((start + 1)..<(end + 1))
                        cursor = end + 1
                        break search
                    }
                    end += 1
                    guard end < self.lines.count, self.lines[end].page == item.page else { break }
                    combined += " " + normalizedLine(end)
                }
                start += 1
            }
            result.append(heading)
        }
        // Unmatched items go before the first line of their page, in outline order.
        return result
    }

    /// Lines larger than the body text, levels by distinct size descending.
    private func headingsBySize(deadline: Deadline) throws(DocumentExtractionError) -> [Heading] {
        var characters: [Double: Int] = [:]
        for line in self.lines { characters[line.size.rounded(), default: 0] += line.text.count }
        guard let body = characters.max(by: { $0.value < $1.value || ($0.value == $1.value && $0.key > $1.key) })?.key else { return [] }
        let isHeading: (Line) -> Bool = { $0.size.rounded() > body && $0.text.count < 200 && !$0.text.allSatisfy(\.isWhitespace) }
        let sizes = Set(self.lines.filter(isHeading).map { $0.size.rounded() }).sorted(by: >)
        var result: [Heading] = []
        var index = 0
        while index < self.lines.count {
            if index % 4096 == 0 { try deadline.check() }
            let line = self.lines[index]
            guard isHeading(line) else { index += 1; continue }
            var heading = Heading(title: line.text, level: (sizes.firstIndex(of: line.size.rounded()) ?? 0) + 1, page: line.page, line: index)
            // A heading wrapped over lines of the same size, close together.
            var next = index + 1
            while next < self.lines.count, self.lines[next].page == line.page, self.lines[next].size.rounded() == line.size.rounded(),
                  self.lines[next].top - (self.lines[next - 1].top + self.lines[next - 1].height) < self.lines[next].height * 0.6 {
                heading.title += " " + self.lines[next].text
                heading.coveredLines.append(next)
                next += 1
            }
            heading.title = SectionAssembler.collapseWhitespace(heading.title)
            result.append(heading)
            index = next
        }
        return result
    }
}
