/// Turns uploaded bytes into a string without guessing wildly: UTF-8 when
/// valid, UTF-16 when a byte-order mark says so, else Windows-1252 (which
/// also reads Latin-1 text correctly). Binary data is refused rather than
/// decoded into noise that would end up in the search index.
enum TextDecoding {
    /// Whether bytes look like text in one of the encodings above: no NUL
    /// bytes (unless UTF-16 with a BOM) and almost no other control characters.
    static func looksLikeText(_ bytes: some Collection<UInt8>) -> Bool {
        if bytes.starts(with: [0xFF, 0xFE]) || bytes.starts(with: [0xFE, 0xFF]) { return true }
        var controls = 0
        for byte in bytes {
            if byte == 0 { return false }
            // Tab, line feed, form feed, carriage return and escape occur in real text.
            if (byte < 0x20 && byte != 0x09 && byte != 0x0A && byte != 0x0C && byte != 0x0D && byte != 0x1B) || byte == 0x7F {
                controls += 1
            }
        }
        return controls * 100 <= bytes.count
    }

    /// Decodes, or throws `unsupportedDocumentType` for binary bytes.
    static func decode(_ bytes: [UInt8], deadline: Deadline) throws(DocumentExtractionError) -> String {
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) {
            if let text = String(validating: bytes.dropFirst(3), as: UTF8.self) { return text }
        }
        if bytes.starts(with: [0xFF, 0xFE]) || bytes.starts(with: [0xFE, 0xFF]) {
            guard let text = Self.decodeUTF16(bytes.dropFirst(2), bigEndian: bytes[0] == 0xFE) else { throw .unsupported }
            guard Self.looksLikeText(text.utf8) else { throw .unsupported }
            return text
        }
        // Check the whole document, in slices so a long one still meets its deadline.
        var start = 0
        while start < bytes.count {
            try deadline.check()
            let end = min(start + (1 << 20), bytes.count)
            guard Self.looksLikeText(bytes[start..<end]) else { throw .unsupported }
            start = end
        }
        if let text = String(validating: bytes, as: UTF8.self) { return text }
        return Self.decodeWindows1252(bytes)
    }

    private static func decodeUTF16(_ bytes: ArraySlice<UInt8>, bigEndian: Bool) -> String? {
        guard bytes.count % 2 == 0 else { return nil }
        var units: [UInt16] = []
        units.reserveCapacity(bytes.count / 2)
        var index = bytes.startIndex
        while index < bytes.endIndex {
            let first = UInt16(bytes[index]), second = UInt16(bytes[index + 1])
            units.append(bigEndian ? first << 8 | second : second << 8 | first)
            index += 2
        }
        return String(validating: units, as: UTF16.self)
    }

    static func decodeWindows1252(_ bytes: [UInt8]) -> String {
        var scalars = String.UnicodeScalarView()
        scalars.reserveCapacity(bytes.count)
        for byte in bytes {
            scalars.append(Self.windows1252Scalar(byte))
        }
        return String(scalars)
    }

    /// Windows-1252 differs from Latin-1 only in 0x80–0x9F, where it has
    /// typographic punctuation; its five unassigned bytes stay C1 controls.
    static func windows1252Scalar(_ byte: UInt8) -> Unicode.Scalar {
        guard (0x80...0x9F).contains(byte) else { return Unicode.Scalar(byte) }
        let value = Self.windows1252High[Int(byte) - 0x80]
        return Unicode.Scalar(value) ?? Unicode.Scalar(byte)
    }

    private static let windows1252High: [UInt32] = [
        0x20AC, 0x81, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160, 0x2039, 0x0152, 0x8D, 0x017D, 0x8F,
        0x90, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x9D, 0x017E, 0x0178,
    ]
}
