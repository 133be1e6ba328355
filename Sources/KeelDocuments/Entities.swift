/// Character references: `&amp;`, `&#233;`, `&#xE9;`. Named references cover
/// XML's five, all of Latin-1 and the punctuation people actually type;
/// an unknown name is left as written, which is what browsers show too.
enum Entities {
    static func decode(_ bytes: ArraySlice<UInt8>) -> String {
        guard bytes.contains(UInt8(ascii: "&")) else { return String(decoding: bytes, as: UTF8.self) }
        var result = ""
        var index = bytes.startIndex
        var plainStart = index
        while index < bytes.endIndex {
            guard bytes[index] == UInt8(ascii: "&") else { index += 1; continue }
            if let (scalars, end) = Self.reference(in: bytes, at: index) {
                result += String(decoding: bytes[plainStart..<index], as: UTF8.self)
                result.unicodeScalars.append(contentsOf: scalars)
                index = end
                plainStart = index
            } else {
                index += 1
            }
        }
        result += String(decoding: bytes[plainStart..<bytes.endIndex], as: UTF8.self)
        return result
    }

    private static func reference(in bytes: ArraySlice<UInt8>, at start: Int) -> ([Unicode.Scalar], Int)? {
        var index = start + 1
        guard index < bytes.endIndex else { return nil }
        if bytes[index] == UInt8(ascii: "#") {
            index += 1
            var radix: UInt32 = 10
            if index < bytes.endIndex, bytes[index] | 0x20 == UInt8(ascii: "x") { radix = 16; index += 1 }
            let digitsStart = index
            var value: UInt32 = 0
            while index < bytes.endIndex, let digit = Self.digit(bytes[index], radix: radix) {
                value = min(value &* radix &+ digit, 0x110000)
                index += 1
            }
            guard index > digitsStart else { return nil }
            if index < bytes.endIndex, bytes[index] == UInt8(ascii: ";") { index += 1 }
            // As browsers do: C1 controls mean Windows-1252, invalid code points become U+FFFD.
            if value >= 0x80 && value <= 0x9F { return ([TextDecoding.windows1252Scalar(UInt8(value))], index) }
            return ([value == 0 ? "\u{FFFD}" : Unicode.Scalar(value) ?? "\u{FFFD}"], index)
        }
        let nameStart = index
        while index < bytes.endIndex, index - nameStart < 32, Self.isAlphanumeric(bytes[index]) { index += 1 }
        guard index > nameStart else { return nil }
        let name = String(decoding: bytes[nameStart..<index], as: UTF8.self)
        let terminated = index < bytes.endIndex && bytes[index] == UInt8(ascii: ";")
        guard let value = Self.named[name], terminated || Self.legacy.contains(name) else { return nil }
        return ([Unicode.Scalar(value)!], terminated ? index + 1 : index)
    }

    private static func digit(_ byte: UInt8, radix: UInt32) -> UInt32? {
        switch byte {
        case 0x30...0x39: return UInt32(byte - 0x30)
        case 0x61...0x66 where radix == 16: return UInt32(byte - 0x61 + 10)
        case 0x41...0x46 where radix == 16: return UInt32(byte - 0x41 + 10)
        default: return nil
        }
    }

    private static func isAlphanumeric(_ byte: UInt8) -> Bool {
        (byte >= 0x30 && byte <= 0x39) || ((byte | 0x20) >= 0x61 && (byte | 0x20) <= 0x7A)
    }

    /// Names browsers accept without the semicolon.
    private static let legacy: Set<String> = ["amp", "lt", "gt", "quot", "nbsp", "copy", "reg"]

    private static let latin1Names = [
        "nbsp", "iexcl", "cent", "pound", "curren", "yen", "brvbar", "sect", "uml", "copy", "ordf", "laquo", "not", "shy", "reg", "macr",
        "deg", "plusmn", "sup2", "sup3", "acute", "micro", "para", "middot", "cedil", "sup1", "ordm", "raquo", "frac14", "frac12", "frac34", "iquest",
        "Agrave", "Aacute", "Acirc", "Atilde", "Auml", "Aring", "AElig", "Ccedil", "Egrave", "Eacute", "Ecirc", "Euml", "Igrave", "Iacute", "Icirc", "Iuml",
        "ETH", "Ntilde", "Ograve", "Oacute", "Ocirc", "Otilde", "Ouml", "times", "Oslash", "Ugrave", "Uacute", "Ucirc", "Uuml", "Yacute", "THORN", "szlig",
        "agrave", "aacute", "acirc", "atilde", "auml", "aring", "aelig", "ccedil", "egrave", "eacute", "ecirc", "euml", "igrave", "iacute", "icirc", "iuml",
        "eth", "ntilde", "ograve", "oacute", "ocirc", "otilde", "ouml", "divide", "oslash", "ugrave", "uacute", "ucirc", "uuml", "yacute", "thorn", "yuml",
    ]

    private static let named: [String: UInt32] = {
        var table: [String: UInt32] = [
            "amp": 0x26, "lt": 0x3C, "gt": 0x3E, "quot": 0x22, "apos": 0x27,
            "ndash": 0x2013, "mdash": 0x2014, "lsquo": 0x2018, "rsquo": 0x2019, "sbquo": 0x201A, "ldquo": 0x201C, "rdquo": 0x201D,
            "bdquo": 0x201E, "hellip": 0x2026, "bull": 0x2022, "dagger": 0x2020, "Dagger": 0x2021, "permil": 0x2030, "prime": 0x2032,
            "lsaquo": 0x2039, "rsaquo": 0x203A, "euro": 0x20AC, "trade": 0x2122, "ensp": 0x2002, "emsp": 0x2003, "thinsp": 0x2009,
            "zwnj": 0x200C, "zwj": 0x200D, "lrm": 0x200E, "rlm": 0x200F, "larr": 0x2190, "uarr": 0x2191, "rarr": 0x2192, "darr": 0x2193,
            "harr": 0x2194, "minus": 0x2212, "le": 0x2264, "ge": 0x2265, "ne": 0x2260, "infin": 0x221E, "asymp": 0x2248, "OElig": 0x152,
            "oelig": 0x153, "Scaron": 0x160, "scaron": 0x161, "Yuml": 0x178, "fnof": 0x192, "circ": 0x2C6, "tilde": 0x2DC,
        ]
        for (offset, name) in Self.latin1Names.enumerated() { table[name] = 0xA0 + UInt32(offset) }
        return table
    }()
}
