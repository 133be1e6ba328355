import Foundation

/// The value of one header of an AWS event-stream message. The cases are the
/// format's ten wire types, 0 to 9; `true` and `false` are two wire types
/// that carry no bytes, both ``bool(_:)`` here.
public enum EventStreamHeaderValue: Sendable, Hashable, CustomStringConvertible {
    case bool(Bool)
    case byte(Int8)
    case short(Int16)
    case int(Int32)
    case long(Int64)
    case bytes([UInt8])
    case string(String)
    /// Milliseconds since the Unix epoch, as on the wire: a `Date` would
    /// round what a peer sent.
    case timestamp(milliseconds: Int64)
    case uuid(UUID)

    /// The wire type number.
    public var typeCode: UInt8 {
        switch self {
        case .bool(let value): value ? 0 : 1
        case .byte: 2
        case .short: 3
        case .int: 4
        case .long: 5
        case .bytes: 6
        case .string: 7
        case .timestamp: 8
        case .uuid: 9
        }
    }

    /// The value when it is a string header, the type of every header AWS
    /// services send today.
    public var stringValue: String? {
        if case .string(let value) = self { return value }
        return nil
    }

    public var description: String {
        switch self {
        case .bool(let value): "\(value)"
        case .byte(let value): "byte(\(value))"
        case .short(let value): "short(\(value))"
        case .int(let value): "int(\(value))"
        case .long(let value): "long(\(value))"
        case .bytes(let value): "bytes(\(value.count))"
        case .string(let value): value.debugDescription
        case .timestamp(let milliseconds): "timestamp(\(milliseconds))"
        case .uuid(let value): "uuid(\(value.uuidString))"
        }
    }
}
