/// Why an AWS event-stream could not be read or written. Checksum failures
/// name which checksum failed: a bad prelude checksum means the lengths
/// cannot be trusted, a bad message checksum means the content cannot.
public enum EventStreamError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The CRC32 of the first 8 bytes does not match the prelude's checksum.
    case preludeChecksumMismatch(expected: UInt32, computed: UInt32)
    /// The CRC32 of the whole message does not match its trailing checksum.
    case messageChecksumMismatch(expected: UInt32, computed: UInt32)
    /// The total length is below the 16 bytes of prelude and checksum, or
    /// the headers length does not fit in it.
    case invalidLength(total: Int, headers: Int)
    /// A message is larger than the decoder's or encoder's maximum.
    case messageTooLarge(length: Int, limit: Int)
    /// The headers section is larger than the maximum.
    case headersTooLarge(length: Int, limit: Int)
    /// The headers section is malformed (truncated value, unknown type).
    case invalidHeader(String)
    /// A header name appears twice in one message.
    case duplicateHeader(String)
    /// The stream ended inside a message: `buffered` bytes were left.
    case truncated(buffered: Int)

    public var description: String {
        switch self {
        case .preludeChecksumMismatch(let expected, let computed):
            "event-stream prelude CRC32 mismatch: frame says \(Self.hex(expected)), computed \(Self.hex(computed))"
        case .messageChecksumMismatch(let expected, let computed):
            "event-stream message CRC32 mismatch: frame says \(Self.hex(expected)), computed \(Self.hex(computed))"
        case .invalidLength(let total, let headers):
            "event-stream message length \(total) cannot hold \(headers) bytes of headers"
        case .messageTooLarge(let length, let limit):
            "event-stream message of \(length) bytes exceeds the limit of \(limit)"
        case .headersTooLarge(let length, let limit):
            "event-stream headers of \(length) bytes exceed the limit of \(limit)"
        case .invalidHeader(let reason):
            "event-stream header malformed: \(reason)"
        case .duplicateHeader(let name):
            "event-stream header \(name.debugDescription) appears twice"
        case .truncated(let buffered):
            "event-stream ended inside a message (\(buffered) bytes buffered)"
        }
    }

    private static func hex(_ value: UInt32) -> String {
        let digits = String(value, radix: 16)
        return "0x" + String(repeating: "0", count: 8 - digits.count) + digits
    }
}
