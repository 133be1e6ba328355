import Foundation

/// Builds compact JSON text directly, so stored JSON (session data, job input
/// and results) can be embedded without decoding and re-encoding it.
public struct JSONWriter: Sendable {
    public init() {}

    public private(set) var text = ""
    private var needsComma = false

    public mutating func object(_ body: (inout JSONWriter) -> Void) {
        self.separate()
        self.text += "{"
        self.needsComma = false
        body(&self)
        self.text += "}"
        self.needsComma = true
    }

    public mutating func array(_ body: (inout JSONWriter) -> Void) {
        self.separate()
        self.text += "["
        self.needsComma = false
        body(&self)
        self.text += "]"
        self.needsComma = true
    }

    /// An array element that is already JSON text.
    public mutating func element(rawJSON: String) {
        self.separate()
        self.text += rawJSON
        self.needsComma = true
    }

    public mutating func field(_ name: String, _ body: (inout JSONWriter) -> Void) {
        self.key(name)
        body(&self)
    }

    public mutating func field(_ name: String, _ value: String?) {
        self.key(name)
        if let value { Self.appendString(value, to: &self.text) } else { self.text += "null" }
        self.needsComma = true
    }

    public mutating func field(_ name: String, _ value: Int64) {
        self.key(name)
        self.text += String(value)
        self.needsComma = true
    }

    public mutating func field(_ name: String, _ value: Double) {
        self.key(name)
        self.text += value.isFinite ? String(value) : "null"
        self.needsComma = true
    }

    public mutating func field(_ name: String, _ value: Bool) {
        self.key(name)
        self.text += value ? "true" : "false"
        self.needsComma = true
    }

    public mutating func field(_ name: String, _ value: Date?) {
        self.field(name, value.map(Self.timestamp))
    }

    /// RFC 3339 UTC with milliseconds (`2026-11-22T21:04:15.357Z`), without
    /// Foundation's formatter, which costs more than a whole session read.
    public static func timestamp(_ date: Date) -> String {
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
        func pad(_ value: Int64, _ width: Int) -> String {
            let digits = String(value)
            return digits.count >= width ? digits : String(repeating: "0", count: width - digits.count) + digits
        }
        let seconds = millisecondOfDay / 1000
        return "\(pad(year, 4))-\(pad(month, 2))-\(pad(day, 2))T\(pad(seconds / 3600, 2)):\(pad(seconds / 60 % 60, 2)):\(pad(seconds % 60, 2)).\(pad(millisecondOfDay % 1000, 3))Z"
    }

    public mutating func field(_ name: String, _ value: Double?) {
        if let value { self.field(name, value) } else { self.field(name, rawJSON: "null") }
    }

    /// Embeds text that is already valid JSON.
    public mutating func field(_ name: String, rawJSON: String?) {
        self.key(name)
        self.text += rawJSON ?? "null"
        self.needsComma = true
    }

    private mutating func key(_ name: String) {
        self.separate()
        Self.appendString(name, to: &self.text)
        self.text += ":"
        self.needsComma = false
    }

    private mutating func separate() {
        if self.needsComma { self.text += "," }
    }

    public static func appendString(_ value: String, to text: inout String) {
        // Most strings (ids, codes, timestamps) need no escaping at all.
        if value.utf8.allSatisfy({ $0 >= 0x20 && $0 != 0x22 && $0 != 0x5C }) {
            text += "\""
            text += value
            text += "\""
            return
        }
        text += "\""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": text += "\\\""
            case "\\": text += "\\\\"
            case "\n": text += "\\n"
            case "\r": text += "\\r"
            case "\t": text += "\\t"
            case let control where control.value < 0x20:
                text += "\\u" + String(repeating: "0", count: 4 - String(control.value, radix: 16).count) + String(control.value, radix: 16)
            default: text.unicodeScalars.append(scalar)
            }
        }
        text += "\""
    }
}
