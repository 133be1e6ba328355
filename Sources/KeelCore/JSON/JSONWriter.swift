import Foundation

/// Builds compact JSON text directly, so stored JSON (session data, job input
/// and results) can be embedded without decoding and re-encoding it. The
/// text grows as UTF-8 bytes, not as a `String`: a job's JSON is written for
/// every job created and every job ended, and small `String` appends cost
/// several times what appending bytes does.
public struct JSONWriter: Sendable {
    public init() {
        self.bytes.reserveCapacity(512)
    }

    public private(set) var bytes: [UInt8] = []
    private var needsComma = false

    public var text: String { String(decoding: self.bytes, as: UTF8.self) }

    public mutating func object(_ body: (inout JSONWriter) -> Void) {
        self.separate()
        self.bytes.append(UInt8(ascii: "{"))
        self.needsComma = false
        body(&self)
        self.bytes.append(UInt8(ascii: "}"))
        self.needsComma = true
    }

    public mutating func array(_ body: (inout JSONWriter) -> Void) {
        self.separate()
        self.bytes.append(UInt8(ascii: "["))
        self.needsComma = false
        body(&self)
        self.bytes.append(UInt8(ascii: "]"))
        self.needsComma = true
    }

    /// An array element that is already JSON text.
    public mutating func element(rawJSON: String) {
        self.separate()
        Self.appendRaw(rawJSON, to: &self.bytes)
        self.needsComma = true
    }

    public mutating func field(_ name: String, _ body: (inout JSONWriter) -> Void) {
        self.key(name)
        body(&self)
    }

    public mutating func field(_ name: String, _ value: String?) {
        self.key(name)
        if let value { Self.appendString(value, to: &self.bytes) } else { Self.appendRaw("null", to: &self.bytes) }
        self.needsComma = true
    }

    public mutating func field(_ name: String, _ value: Int64) {
        self.key(name)
        Self.appendInteger(value, to: &self.bytes)
        self.needsComma = true
    }

    public mutating func field(_ name: String, _ value: Double) {
        self.key(name)
        Self.appendRaw(value.isFinite ? String(value) : "null", to: &self.bytes)
        self.needsComma = true
    }

    public mutating func field(_ name: String, _ value: Bool) {
        self.key(name)
        Self.appendRaw(value ? "true" : "false", to: &self.bytes)
        self.needsComma = true
    }

    public mutating func field(_ name: String, _ value: Date?) {
        self.key(name)
        if let value {
            self.bytes.append(UInt8(ascii: "\""))
            Self.appendTimestamp(value, to: &self.bytes)
            self.bytes.append(UInt8(ascii: "\""))
        } else {
            Self.appendRaw("null", to: &self.bytes)
        }
        self.needsComma = true
    }

    /// RFC 3339 UTC with milliseconds (`2026-11-22T21:04:15.357Z`), without
    /// Foundation's formatter, which costs more than a whole session read.
    public static func timestamp(_ date: Date) -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(24)
        Self.appendTimestamp(date, to: &bytes)
        return String(decoding: bytes, as: UTF8.self)
    }

    static func appendTimestamp(_ date: Date, to bytes: inout [UInt8]) {
        let milliseconds = Int64((date.timeIntervalSince1970 * 1000).rounded(.down))
        var days = milliseconds >= 0 ? milliseconds / 86_400_000 : (milliseconds - 86_399_999) / 86_400_000
        let millisecondOfDay = milliseconds - days * 86_400_000
        // Civil date from days since 1970 (Howard Hinnant's algorithm).
        days += 719_468
        let era = (days >= 0 ? days : days - 146_096) / 146_097
        let dayOfEra = days - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthIndex = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * monthIndex + 2) / 5 + 1
        let month = monthIndex < 10 ? monthIndex + 3 : monthIndex - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        let seconds = millisecondOfDay / 1000
        Self.appendPadded(year, width: 4, to: &bytes)
        bytes.append(UInt8(ascii: "-"))
        Self.appendPadded(month, width: 2, to: &bytes)
        bytes.append(UInt8(ascii: "-"))
        Self.appendPadded(day, width: 2, to: &bytes)
        bytes.append(UInt8(ascii: "T"))
        Self.appendPadded(seconds / 3600, width: 2, to: &bytes)
        bytes.append(UInt8(ascii: ":"))
        Self.appendPadded(seconds / 60 % 60, width: 2, to: &bytes)
        bytes.append(UInt8(ascii: ":"))
        Self.appendPadded(seconds % 60, width: 2, to: &bytes)
        bytes.append(UInt8(ascii: "."))
        Self.appendPadded(millisecondOfDay % 1000, width: 3, to: &bytes)
        bytes.append(UInt8(ascii: "Z"))
    }

    /// Decimal digits, zero-padded on the left to `width`.
    private static func appendPadded(_ value: Int64, width: Int, to bytes: inout [UInt8]) {
        if value < 0 { bytes.append(UInt8(ascii: "-")) }
        let value = value.magnitude
        var digits = 1
        var rest = value / 10
        while rest > 0 {
            digits += 1
            rest /= 10
        }
        for _ in digits..<max(width, digits) { bytes.append(UInt8(ascii: "0")) }
        Self.appendDigits(value, to: &bytes)
    }

    static func appendInteger(_ value: Int64, to bytes: inout [UInt8]) {
        if value < 0 { bytes.append(UInt8(ascii: "-")) }
        // The magnitude, as UInt64 so Int64.min has one.
        Self.appendDigits(value.magnitude, to: &bytes)
    }

    private static func appendDigits(_ value: UInt64, to bytes: inout [UInt8]) {
        var magnitude = value
        let start = bytes.count
        repeat {
            bytes.append(UInt8(ascii: "0") + UInt8(magnitude % 10))
            magnitude /= 10
        } while magnitude > 0
        bytes[start...].reverse()
    }

    public mutating func field(_ name: String, _ value: Double?) {
        if let value { self.field(name, value) } else { self.field(name, rawJSON: "null") }
    }

    /// Embeds text that is already valid JSON.
    public mutating func field(_ name: String, rawJSON: String?) {
        self.key(name)
        Self.appendRaw(rawJSON ?? "null", to: &self.bytes)
        self.needsComma = true
    }

    private mutating func key(_ name: String) {
        self.separate()
        Self.appendString(name, to: &self.bytes)
        self.bytes.append(UInt8(ascii: ":"))
        self.needsComma = false
    }

    private mutating func separate() {
        if self.needsComma { self.bytes.append(UInt8(ascii: ",")) }
    }

    static func appendRaw(_ text: String, to bytes: inout [UInt8]) {
        var text = text
        text.withUTF8 { bytes.append(contentsOf: $0) }
    }

    /// A JSON string literal. Escapes what JSON requires (quote, backslash,
    /// control characters); every other byte, multi-byte UTF-8 included, is
    /// copied as it is.
    public static func appendString(_ value: String, to bytes: inout [UInt8]) {
        var value = value
        value.withUTF8 { utf8 in
            bytes.append(UInt8(ascii: "\""))
            defer { bytes.append(UInt8(ascii: "\"")) }
            // Most strings (ids, codes, timestamps) need no escaping at all.
            if utf8.allSatisfy({ $0 >= 0x20 && $0 != 0x22 && $0 != 0x5C }) {
                bytes.append(contentsOf: utf8)
                return
            }
            for byte in utf8 {
                switch byte {
                case 0x22: bytes.append(contentsOf: [0x5C, 0x22])
                case 0x5C: bytes.append(contentsOf: [0x5C, 0x5C])
                case 0x0A: bytes.append(contentsOf: [0x5C, UInt8(ascii: "n")])
                case 0x0D: bytes.append(contentsOf: [0x5C, UInt8(ascii: "r")])
                case 0x09: bytes.append(contentsOf: [0x5C, UInt8(ascii: "t")])
                case 0..<0x20:
                    let hex = Array("0123456789abcdef".utf8)
                    bytes.append(contentsOf: [0x5C, UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0"), hex[Int(byte >> 4)], hex[Int(byte & 0xF)]])
                default: bytes.append(byte)
                }
            }
        }
    }
}
