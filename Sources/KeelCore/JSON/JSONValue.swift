import Foundation

/// A JSON document as a value, for data whose shape Keel does not own
/// (session data, job input and results).
public enum JSONValue: Sendable, Hashable {
    case null
    case bool(Bool)
    case int(Int64)
    case double(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    /// The dictionary of an object, `nil` for every other kind of value.
    public var objectValue: [String: JSONValue]? {
        if case .object(let dictionary) = self { return dictionary }
        return nil
    }

    /// The text of a string, `nil` for every other kind of value.
    public var stringValue: String? {
        if case .string(let text) = self { return text }
        return nil
    }

    /// The items of an array, `nil` for every other kind of value.
    public var arrayValue: [JSONValue]? {
        if case .array(let items) = self { return items }
        return nil
    }

    /// The flag of a boolean, `nil` for every other kind of value.
    public var boolValue: Bool? {
        if case .bool(let flag) = self { return flag }
        return nil
    }

    /// A short name of the value's JSON type, for error messages.
    public var kindName: String {
        switch self {
        case .null: "null"
        case .bool: "boolean"
        case .int, .double: "number"
        case .string: "string"
        case .array: "array"
        case .object: "object"
        }
    }
}

extension JSONValue: Codable {
    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Int64.self) {
            self = .int(value)
        } else if let value = try? container.decode(Double.self) {
            self = .double(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([JSONValue].self) {
            self = .array(value)
        } else {
            self = .object(try container.decode([String: JSONValue].self))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .null: try container.encodeNil()
        case .bool(let value): try container.encode(value)
        case .int(let value): try container.encode(value)
        case .double(let value): try container.encode(value)
        case .string(let value): try container.encode(value)
        case .array(let value): try container.encode(value)
        case .object(let value): try container.encode(value)
        }
    }
}

extension JSONValue {
    /// Parses UTF-8 JSON text, throwing ``KeelError/Code/invalidJSON`` with the
    /// parser's explanation when it is not JSON.
    public static func parse(_ bytes: some Collection<UInt8>) throws -> JSONValue {
        var parser = JSONParser(Array(bytes))
        do {
            return try parser.parseDocument()
        } catch {
            throw KeelError(
                .invalidJSON, "The request body is not valid JSON: \(error.message) at byte \(error.offset).", hint: "Send a UTF-8 JSON document.")
        }
    }

    /// Parses a JSON document a person wrote (a configuration file), keeping
    /// where each value is so errors can name its line. A syntax error is
    /// thrown as ``JSONSyntaxError`` with its line and column.
    public static func parseLocated(_ bytes: [UInt8]) throws(JSONSyntaxError) -> (JSONValue, JSONLocations) {
        var parser = JSONParser(bytes, locating: true)
        do {
            let value = try parser.parseDocument()
            return (value, JSONLocations(bytes: bytes, offsets: parser.offsets, duplicateKeys: parser.duplicateKeys))
        } catch {
            let (line, column) = JSONLocations.position(of: error.offset, in: bytes)
            throw JSONSyntaxError(message: error.message, line: line, column: column)
        }
    }

    /// Compact JSON text with sorted keys, so equal values serialize alike.
    public func serialized() -> String {
        var bytes: [UInt8] = []
        self.write(to: &bytes)
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// A JSON syntax error at a line and column (both from 1).
public struct JSONSyntaxError: Error, Sendable, Equatable {
    public var message: String
    public var line: Int
    public var column: Int
}

/// Where the values of a parsed document are, by path: an object member's
/// path ends in its key, an array item's in its index (`["chains",
/// "default", "1"]`).
public struct JSONLocations: Sendable {
    private let lineStarts: [Int]
    private let offsets: [[String]: Int]
    /// Keys that appear more than once in one object (the last one wins in
    /// the value).
    public let duplicateKeys: [[String]]

    init(bytes: [UInt8], offsets: [[String]: Int], duplicateKeys: [[String]]) {
        var starts = [0]
        for (offset, byte) in bytes.enumerated() where byte == UInt8(ascii: "\n") { starts.append(offset + 1) }
        self.lineStarts = starts
        self.offsets = offsets
        self.duplicateKeys = duplicateKeys
    }

    /// The line (from 1) where the value at `path` starts (its key, for an
    /// object member), or of the nearest enclosing value that was found.
    public func line(of path: [String]) -> Int? {
        var path = path
        while !path.isEmpty {
            if let offset = self.offsets[path] { return self.line(atOffset: offset) }
            path.removeLast()
        }
        return nil
    }

    /// Paths of the members and items directly inside `path`, in document order.
    public func children(of path: [String]) -> [[String]] {
        self.offsets.filter { $0.key.count == path.count + 1 && $0.key.starts(with: path) }
            .sorted { $0.value < $1.value }.map(\.key)
    }

    private func line(atOffset offset: Int) -> Int {
        var low = 0
        var high = self.lineStarts.count - 1
        while low < high {
            let middle = (low + high + 1) / 2
            if self.lineStarts[middle] <= offset { low = middle } else { high = middle - 1 }
        }
        return low + 1
    }

    static func position(of offset: Int, in bytes: [UInt8]) -> (line: Int, column: Int) {
        var line = 1
        var column = 1
        for byte in bytes.prefix(offset) {
            if byte == UInt8(ascii: "\n") {
                line += 1
                column = 1
            } else if byte & 0xC0 != 0x80 {
                column += 1
            }
        }
        return (line, column)
    }
}
