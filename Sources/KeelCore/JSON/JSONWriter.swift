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
        self.field(name, value.map { $0.formatted(Self.timestampStyle) })
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

    public static let timestampStyle = Date.ISO8601FormatStyle(includingFractionalSeconds: true)

    public static func appendString(_ value: String, to text: inout String) {
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
