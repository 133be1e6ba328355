/// A strict RFC 8259 parser producing ``JSONValue``s.
///
/// Foundation's `JSONDecoder` going through `Codable` (with a `try?` per
/// type tried) cost more than the store write on the job and session write
/// paths; this parses in one pass over the bytes.
struct JSONParser {
    static let maxDepth = 512

    private let bytes: [UInt8]
    private var index = 0
    private var depth = 0
    /// With `locating`, where each member's key and each item starts, by
    /// path, and the paths of keys that appear twice in one object.
    private var locating = false
    private var path: [String] = []
    private(set) var offsets: [[String]: Int] = [:]
    private(set) var duplicateKeys: [[String]] = []

    init(_ bytes: [UInt8], locating: Bool) {
        self.bytes = bytes
        self.locating = locating
    }

    init(_ bytes: [UInt8]) {
        self.bytes = bytes
    }

    struct Failure: Error {
        var message: String
        var offset: Int
    }

    mutating func parseDocument() throws(Failure) -> JSONValue {
        self.skipWhitespace()
        let value = try self.parseValue()
        self.skipWhitespace()
        guard self.index == self.bytes.count else { throw self.failure("unexpected content after the JSON value") }
        return value
    }

    private func failure(_ message: String) -> Failure { Failure(message: message, offset: self.index) }

    private mutating func skipWhitespace() {
        while self.index < self.bytes.count {
            switch self.bytes[self.index] {
            case 0x20, 0x09, 0x0A, 0x0D: self.index += 1
            default: return
            }
        }
    }

    private mutating func parseValue() throws(Failure) -> JSONValue {
        guard self.index < self.bytes.count else { throw self.failure("unexpected end of input") }
        switch self.bytes[self.index] {
        case UInt8(ascii: "{"): return try self.parseObject()
        case UInt8(ascii: "["): return try self.parseArray()
        case UInt8(ascii: "\""): return .string(try self.parseString())
        case UInt8(ascii: "t"): try self.expect("true"); return .bool(true)
        case UInt8(ascii: "f"): try self.expect("false"); return .bool(false)
        case UInt8(ascii: "n"): try self.expect("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try self.parseNumber()
        default: throw self.failure("unexpected character '\(Unicode.Scalar(self.bytes[self.index]))'")
        }
    }

    private mutating func expect(_ literal: StaticString) throws(Failure) {
        let count = literal.utf8CodeUnitCount
        guard self.index + count <= self.bytes.count else { throw self.failure("unexpected end of input") }
        let matches = literal.withUTF8Buffer { expected in
            (0..<count).allSatisfy { self.bytes[self.index + $0] == expected[$0] }
        }
        guard matches else { throw self.failure("invalid literal") }
        self.index += count
    }

    private mutating func enter() throws(Failure) {
        self.depth += 1
        guard self.depth <= Self.maxDepth else { throw self.failure("nested deeper than \(Self.maxDepth) levels") }
    }

    private mutating func parseObject() throws(Failure) -> JSONValue {
        try self.enter()
        defer { self.depth -= 1 }
        self.index += 1
        var members: [String: JSONValue] = [:]
        self.skipWhitespace()
        if self.index < self.bytes.count, self.bytes[self.index] == UInt8(ascii: "}") {
            self.index += 1
            return .object(members)
        }
        while true {
            self.skipWhitespace()
            guard self.index < self.bytes.count, self.bytes[self.index] == UInt8(ascii: "\"") else {
                throw self.failure("expected a string key")
            }
            let keyOffset = self.index
            let key = try self.parseString()
            self.skipWhitespace()
            guard self.index < self.bytes.count, self.bytes[self.index] == UInt8(ascii: ":") else { throw self.failure("expected ':'") }
            self.index += 1
            self.skipWhitespace()
            if self.locating {
                self.path.append(key)
                if members[key] != nil { self.duplicateKeys.append(self.path) }
                self.offsets[self.path] = keyOffset
                members[key] = try self.parseValue()
                self.path.removeLast()
            } else {
                members[key] = try self.parseValue()
            }
            self.skipWhitespace()
            guard self.index < self.bytes.count else { throw self.failure("unexpected end of input in an object") }
            switch self.bytes[self.index] {
            case UInt8(ascii: ","): self.index += 1
            case UInt8(ascii: "}"):
                self.index += 1
                return .object(members)
            default: throw self.failure("expected ',' or '}'")
            }
        }
    }

    private mutating func parseArray() throws(Failure) -> JSONValue {
        try self.enter()
        defer { self.depth -= 1 }
        self.index += 1
        var items: [JSONValue] = []
        self.skipWhitespace()
        if self.index < self.bytes.count, self.bytes[self.index] == UInt8(ascii: "]") {
            self.index += 1
            return .array(items)
        }
        while true {
            self.skipWhitespace()
            if self.locating {
                self.path.append(String(items.count))
                self.offsets[self.path] = self.index
                items.append(try self.parseValue())
                self.path.removeLast()
            } else {
                items.append(try self.parseValue())
            }
            self.skipWhitespace()
            guard self.index < self.bytes.count else { throw self.failure("unexpected end of input in an array") }
            switch self.bytes[self.index] {
            case UInt8(ascii: ","): self.index += 1
            case UInt8(ascii: "]"):
                self.index += 1
                return .array(items)
            default: throw self.failure("expected ',' or ']'")
            }
        }
    }

    private mutating func parseString() throws(Failure) -> String {
        self.index += 1  // the opening quote
        let start = self.index
        // Fast path: no escapes.
        while self.index < self.bytes.count {
            let byte = self.bytes[self.index]
            if byte == UInt8(ascii: "\"") {
                let text = try self.decodeUTF8(self.bytes[start..<self.index])
                self.index += 1
                return text
            }
            if byte == UInt8(ascii: "\\") { break }
            if byte < 0x20 { throw self.failure("unescaped control character in a string") }
            self.index += 1
        }
        var scalars = String.UnicodeScalarView()
        scalars.append(contentsOf: try self.decodeUTF8(self.bytes[start..<self.index]).unicodeScalars)
        var runStart = self.index
        while self.index < self.bytes.count {
            let byte = self.bytes[self.index]
            if byte == UInt8(ascii: "\"") {
                scalars.append(contentsOf: try self.decodeUTF8(self.bytes[runStart..<self.index]).unicodeScalars)
                self.index += 1
                return String(scalars)
            }
            if byte < 0x20 { throw self.failure("unescaped control character in a string") }
            guard byte == UInt8(ascii: "\\") else {
                self.index += 1
                continue
            }
            scalars.append(contentsOf: try self.decodeUTF8(self.bytes[runStart..<self.index]).unicodeScalars)
            self.index += 1
            guard self.index < self.bytes.count else { break }
            let escape = self.bytes[self.index]
            self.index += 1
            switch escape {
            case UInt8(ascii: "\""): scalars.append("\"")
            case UInt8(ascii: "\\"): scalars.append("\\")
            case UInt8(ascii: "/"): scalars.append("/")
            case UInt8(ascii: "b"): scalars.append("\u{08}")
            case UInt8(ascii: "f"): scalars.append("\u{0C}")
            case UInt8(ascii: "n"): scalars.append("\n")
            case UInt8(ascii: "r"): scalars.append("\r")
            case UInt8(ascii: "t"): scalars.append("\t")
            case UInt8(ascii: "u"):
                let unit = try self.hex4()
                if (0xD800...0xDBFF).contains(unit) {
                    guard self.index + 1 < self.bytes.count, self.bytes[self.index] == UInt8(ascii: "\\"),
                        self.bytes[self.index + 1] == UInt8(ascii: "u")
                    else { throw self.failure("unpaired surrogate in a \\u escape") }
                    self.index += 2
                    let low = try self.hex4()
                    guard (0xDC00...0xDFFF).contains(low) else { throw self.failure("unpaired surrogate in a \\u escape") }
                    let value = 0x10000 + ((UInt32(unit) - 0xD800) << 10) + (UInt32(low) - 0xDC00)
                    guard let scalar = Unicode.Scalar(value) else { throw self.failure("invalid \\u escape") }
                    scalars.append(scalar)
                } else {
                    guard let scalar = Unicode.Scalar(unit) else { throw self.failure("unpaired surrogate in a \\u escape") }
                    scalars.append(scalar)
                }
            default: throw self.failure("invalid escape '\\\(Unicode.Scalar(escape))'")
            }
            runStart = self.index
        }
        throw self.failure("unterminated string")
    }

    private mutating func hex4() throws(Failure) -> UInt16 {
        guard self.index + 4 <= self.bytes.count else { throw self.failure("truncated \\u escape") }
        var value: UInt16 = 0
        for _ in 0..<4 {
            let byte = self.bytes[self.index]
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
            default: throw self.failure("invalid hex digit in a \\u escape")
            }
            value = value << 4 | UInt16(digit)
            self.index += 1
        }
        return value
    }

    private func decodeUTF8(_ slice: ArraySlice<UInt8>) throws(Failure) -> String {
        guard let text = String(validating: slice, as: UTF8.self) else { throw self.failure("invalid UTF-8 in a string") }
        return text
    }

    private mutating func parseNumber() throws(Failure) -> JSONValue {
        let start = self.index
        var integral = true
        if self.bytes[self.index] == UInt8(ascii: "-") { self.index += 1 }
        guard self.index < self.bytes.count else { throw self.failure("truncated number") }
        if self.bytes[self.index] == UInt8(ascii: "0") {
            self.index += 1
        } else if self.isDigit() {
            while self.isDigit() { self.index += 1 }
        } else {
            throw self.failure("invalid number")
        }
        if self.index < self.bytes.count, self.bytes[self.index] == UInt8(ascii: ".") {
            integral = false
            self.index += 1
            guard self.isDigit() else { throw self.failure("a decimal point needs digits after it") }
            while self.isDigit() { self.index += 1 }
        }
        if self.index < self.bytes.count, self.bytes[self.index] | 0x20 == UInt8(ascii: "e") {
            integral = false
            self.index += 1
            if self.index < self.bytes.count, self.bytes[self.index] == UInt8(ascii: "+") || self.bytes[self.index] == UInt8(ascii: "-") {
                self.index += 1
            }
            guard self.isDigit() else { throw self.failure("an exponent needs digits") }
            while self.isDigit() { self.index += 1 }
        }
        let text = String(decoding: self.bytes[start..<self.index], as: UTF8.self)
        if integral, let value = Int64(text) { return .int(value) }
        guard let value = Double(text), value.isFinite else { throw self.failure("number out of range") }
        return .double(value)
    }

    private func isDigit() -> Bool {
        self.index < self.bytes.count && (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(self.bytes[self.index])
    }
}

extension JSONValue {
    /// Appends compact JSON with sorted keys, so equal values serialize alike.
    func write(to bytes: inout [UInt8]) {
        switch self {
        case .null: JSONWriter.appendRaw("null", to: &bytes)
        case .bool(let value): JSONWriter.appendRaw(value ? "true" : "false", to: &bytes)
        case .int(let value): JSONWriter.appendInteger(value, to: &bytes)
        case .double(let value):
            if value.rounded() == value && abs(value) < 1e15 {
                JSONWriter.appendInteger(Int64(value), to: &bytes)
                JSONWriter.appendRaw(".0", to: &bytes)
            } else {
                JSONWriter.appendRaw(String(value), to: &bytes)
            }
        case .string(let value): JSONWriter.appendString(value, to: &bytes)
        case .array(let items):
            bytes.append(UInt8(ascii: "["))
            for (offset, item) in items.enumerated() {
                if offset > 0 { bytes.append(UInt8(ascii: ",")) }
                item.write(to: &bytes)
            }
            bytes.append(UInt8(ascii: "]"))
        case .object(let members):
            bytes.append(UInt8(ascii: "{"))
            for (offset, key) in members.keys.sorted().enumerated() {
                if offset > 0 { bytes.append(UInt8(ascii: ",")) }
                JSONWriter.appendString(key, to: &bytes)
                bytes.append(UInt8(ascii: ":"))
                members[key]!.write(to: &bytes)
            }
            bytes.append(UInt8(ascii: "}"))
        }
    }
}
