/// A forgiving tokenizer for HTML and for Poppler's XML: real-world HTML is
/// not XML, so this never fails; it just hands out tags and text. Works on
/// UTF-8 bytes (markup is ASCII) and decodes character references in text
/// and attribute values.
struct MarkupTokenizer {
    enum Token {
        case startTag(name: String, attributes: [String: String], selfClosing: Bool)
        case endTag(name: String)
        case text(String)
        /// A comment, doctype or processing instruction: skipped, but proof of markup.
        case declaration
    }

    private let bytes: [UInt8]
    private var position = 0
    /// Elements whose content is not markup (`script`, `style`): their text
    /// runs to the matching end tag.
    private let rawTextElements: Set<String>
    private var rawTextEnd: String?

    init(_ bytes: [UInt8], rawTextElements: Set<String> = []) {
        self.bytes = bytes
        self.rawTextElements = rawTextElements
    }

    var offset: Int { self.position }

    mutating func next() -> Token? {
        guard self.position < self.bytes.count else { return nil }
        if let end = self.rawTextEnd {
            self.rawTextEnd = nil
            let start = self.position
            let close = self.find(Array("</\(end)".utf8), caseInsensitive: true) ?? self.bytes.count
            self.position = close
            // Title and textarea hold text with character references; script and style hold code.
            return .text(end == "title" || end == "textarea" ? Entities.decode(self.bytes[start..<close]) : String(decoding: self.bytes[start..<close], as: UTF8.self))
        }
        if self.bytes[self.position] == UInt8(ascii: "<"), let token = self.tag() {
            return token
        }
        // Text up to the next "<" that starts a tag (a lone "<" is text).
        let start = self.position
        self.position += 1
        while self.position < self.bytes.count && self.bytes[self.position] != UInt8(ascii: "<") { self.position += 1 }
        return .text(Entities.decode(self.bytes[start..<self.position]))
    }

    private mutating func tag() -> Token? {
        let start = self.position
        guard start + 1 < self.bytes.count else { return nil }
        let next = self.bytes[start + 1]
        if next == UInt8(ascii: "!") {
            if self.matches("<!--", at: start) {
                let end = self.find(Array("-->".utf8), from: start + 4) ?? self.bytes.count
                self.position = min(end + 3, self.bytes.count)
                return .declaration
            }
            if self.matches("<![CDATA[", at: start) {
                let end = self.find(Array("]]>".utf8), from: start + 9) ?? self.bytes.count
                self.position = min(end + 3, self.bytes.count)
                return .text(String(decoding: self.bytes[(start + 9)..<end], as: UTF8.self))
            }
            self.skipPast(UInt8(ascii: ">"), from: start)
            return .declaration
        }
        if next == UInt8(ascii: "?") {
            self.skipPast(UInt8(ascii: ">"), from: start)
            return .declaration
        }
        let isEnd = next == UInt8(ascii: "/")
        var index = start + (isEnd ? 2 : 1)
        guard index < self.bytes.count, Self.isLetter(self.bytes[index]) else { return nil }
        let nameStart = index
        while index < self.bytes.count, Self.isNameByte(self.bytes[index]) { index += 1 }
        let name = String(decoding: self.bytes[nameStart..<index], as: UTF8.self).lowercased()
        var attributes: [String: String] = [:]
        var selfClosing = false
        // Attributes: name, name=value, name="value", name='value'.
        while index < self.bytes.count {
            let byte = self.bytes[index]
            if byte == UInt8(ascii: ">") { index += 1; break }
            if byte == UInt8(ascii: "/") { selfClosing = true; index += 1; continue }
            if Self.isSpace(byte) { index += 1; continue }
            selfClosing = false
            let attributeStart = index
            while index < self.bytes.count, !Self.isSpace(self.bytes[index]), self.bytes[index] != UInt8(ascii: "="), self.bytes[index] != UInt8(ascii: ">") { index += 1 }
            let attributeName = String(decoding: self.bytes[attributeStart..<index], as: UTF8.self).lowercased()
            while index < self.bytes.count, Self.isSpace(self.bytes[index]) { index += 1 }
            var value = ""
            if index < self.bytes.count, self.bytes[index] == UInt8(ascii: "=") {
                index += 1
                while index < self.bytes.count, Self.isSpace(self.bytes[index]) { index += 1 }
                if index < self.bytes.count, self.bytes[index] == UInt8(ascii: "\"") || self.bytes[index] == UInt8(ascii: "'") {
                    let quote = self.bytes[index]
                    let valueStart = index + 1
                    index = valueStart
                    while index < self.bytes.count, self.bytes[index] != quote { index += 1 }
                    value = Entities.decode(self.bytes[valueStart..<index])
                    index = min(index + 1, self.bytes.count)
                } else {
                    let valueStart = index
                    while index < self.bytes.count, !Self.isSpace(self.bytes[index]), self.bytes[index] != UInt8(ascii: ">") { index += 1 }
                    value = Entities.decode(self.bytes[valueStart..<index])
                }
            }
            if !attributeName.isEmpty && attributes[attributeName] == nil { attributes[attributeName] = value }
        }
        self.position = index
        if isEnd { return .endTag(name: name) }
        if !selfClosing && self.rawTextElements.contains(name) { self.rawTextEnd = name }
        return .startTag(name: name, attributes: attributes, selfClosing: selfClosing)
    }

    private func matches(_ literal: String, at index: Int) -> Bool {
        let pattern = Array(literal.utf8)
        return index + pattern.count <= self.bytes.count && self.bytes[index..<(index + pattern.count)].elementsEqual(pattern)
    }

    private mutating func skipPast(_ byte: UInt8, from start: Int) {
        var index = start
        while index < self.bytes.count && self.bytes[index] != byte { index += 1 }
        self.position = min(index + 1, self.bytes.count)
    }

    private func find(_ pattern: [UInt8], from start: Int? = nil, caseInsensitive: Bool = false) -> Int? {
        var index = start ?? self.position
        guard !pattern.isEmpty else { return index }
        while index + pattern.count <= self.bytes.count {
            var matched = true
            for offset in 0..<pattern.count {
                var byte = self.bytes[index + offset]
                if caseInsensitive && byte >= 0x41 && byte <= 0x5A { byte += 0x20 }
                if byte != pattern[offset] { matched = false; break }
            }
            if matched { return index }
            index += 1
        }
        return nil
    }

    private static func isLetter(_ byte: UInt8) -> Bool { (byte | 0x20) >= 0x61 && (byte | 0x20) <= 0x7A }
    private static func isNameByte(_ byte: UInt8) -> Bool {
        Self.isLetter(byte) || (byte >= 0x30 && byte <= 0x39) || byte == UInt8(ascii: "-") || byte == UInt8(ascii: ":") || byte == UInt8(ascii: "_")
    }
    static func isSpace(_ byte: UInt8) -> Bool { byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D || byte == 0x0C }
}
