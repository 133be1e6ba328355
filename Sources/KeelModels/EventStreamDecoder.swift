import Foundation

/// Reads AWS event-stream messages (`application/vnd.amazon.eventstream`)
/// out of a byte stream cut into chunks anywhere.
///
/// A frame is: total length (UInt32), headers length (UInt32), the CRC32 of
/// those 8 bytes, the headers, the payload, and the CRC32 of everything
/// before it, all big-endian. Both checksums are checked: a frame damaged in
/// transit is an error naming the checksum that failed, never a message.
/// A declared length is checked against the limits before any byte of the
/// message is waited for, so a corrupt or hostile length cannot make the
/// decoder buffer gigabytes.
public struct EventStreamDecoder: Sendable {
    public struct Configuration: Sendable, Equatable {
        /// Largest total message length accepted, prelude and checksums
        /// included. Bedrock's own limit is 16 MiB.
        public var maximumMessageLength: Int
        /// Largest headers section accepted (botocore's limit, 128 KiB).
        public var maximumHeadersLength: Int

        public init(maximumMessageLength: Int = 16 << 20, maximumHeadersLength: Int = 128 << 10) {
            self.maximumMessageLength = maximumMessageLength
            self.maximumHeadersLength = maximumHeadersLength
        }
    }

    /// Total length, headers length and prelude checksum.
    static let preludeLength = 12
    /// The prelude and the trailing message checksum.
    static let overheadLength = 16

    public let configuration: Configuration
    private var buffer: [UInt8] = []
    private var start = 0
    private var failure: EventStreamError?

    public init(configuration: Configuration = Configuration()) {
        self.configuration = configuration
    }

    /// Bytes received but not yet part of a complete message.
    public var bufferedCount: Int { self.buffer.count - self.start }

    /// Adds the next chunk and returns every message it completed, in order.
    /// After an error the stream is unusable and every call throws it again.
    public mutating func feed(_ bytes: some Sequence<UInt8>) throws(EventStreamError) -> [EventStreamMessage] {
        if let failure { throw failure }
        self.buffer.append(contentsOf: bytes)
        var messages: [EventStreamMessage] = []
        do {
            while let message = try self.nextMessage() { messages.append(message) }
        } catch {
            self.failure = error
            throw error
        }
        if self.start == self.buffer.count {
            self.buffer.removeAll(keepingCapacity: self.buffer.capacity <= 1 << 16)
            self.start = 0
        } else if self.start >= 1 << 16 {
            self.buffer.removeFirst(self.start)
            self.start = 0
        }
        return messages
    }

    /// Ends the stream: throws ``EventStreamError/truncated(buffered:)`` if
    /// it stopped inside a message.
    public func finish() throws(EventStreamError) {
        if let failure { throw failure }
        if self.bufferedCount > 0 { throw .truncated(buffered: self.bufferedCount) }
    }

    private mutating func nextMessage() throws(EventStreamError) -> EventStreamMessage? {
        let available = self.buffer.count - self.start
        guard available >= Self.preludeLength else { return nil }
        let base = self.start
        let total = Int(self.uint32(at: base))
        let headersLength = Int(self.uint32(at: base + 4))
        let preludeCRC = self.uint32(at: base + 8)
        let computedPreludeCRC = CRC32.checksum(self.buffer[base..<(base + 8)])
        guard preludeCRC == computedPreludeCRC else {
            throw .preludeChecksumMismatch(expected: preludeCRC, computed: computedPreludeCRC)
        }
        guard total >= Self.overheadLength, headersLength <= total - Self.overheadLength else {
            throw .invalidLength(total: total, headers: headersLength)
        }
        guard total <= self.configuration.maximumMessageLength else {
            throw .messageTooLarge(length: total, limit: self.configuration.maximumMessageLength)
        }
        guard headersLength <= self.configuration.maximumHeadersLength else {
            throw .headersTooLarge(length: headersLength, limit: self.configuration.maximumHeadersLength)
        }
        guard available >= total else { return nil }

        let checksumStart = base + total - 4
        let messageCRC = self.uint32(at: checksumStart)
        var crc = CRC32(continuing: computedPreludeCRC)
        crc.update(self.buffer[(base + 8)..<checksumStart])
        guard messageCRC == crc.value else {
            throw .messageChecksumMismatch(expected: messageCRC, computed: crc.value)
        }
        let headersStart = base + Self.preludeLength
        let payloadStart = headersStart + headersLength
        let headers = try Self.parseHeaders(self.buffer[headersStart..<payloadStart])
        let payload = Array(self.buffer[payloadStart..<checksumStart])
        self.start = base + total
        return EventStreamMessage(headers: headers, payload: payload)
    }

    private func uint32(at index: Int) -> UInt32 {
        UInt32(self.buffer[index]) << 24 | UInt32(self.buffer[index + 1]) << 16
            | UInt32(self.buffer[index + 2]) << 8 | UInt32(self.buffer[index + 3])
    }

    static func parseHeaders(_ bytes: ArraySlice<UInt8>) throws(EventStreamError) -> [String: EventStreamHeaderValue] {
        var reader = HeaderReader(bytes: bytes)
        var headers: [String: EventStreamHeaderValue] = [:]
        while !reader.isAtEnd {
            let nameLength = Int(try reader.integer(UInt8.self, "header name length"))
            let name = String(decoding: try reader.take(nameLength, "header name"), as: UTF8.self)
            let type = try reader.integer(UInt8.self, "type of \(name)")
            let value: EventStreamHeaderValue
            switch type {
            case 0: value = .bool(true)
            case 1: value = .bool(false)
            case 2: value = .byte(try reader.integer(Int8.self, name))
            case 3: value = .short(try reader.integer(Int16.self, name))
            case 4: value = .int(try reader.integer(Int32.self, name))
            case 5: value = .long(try reader.integer(Int64.self, name))
            case 6:
                let length = Int(try reader.integer(UInt16.self, name))
                value = .bytes(Array(try reader.take(length, name)))
            case 7:
                let length = Int(try reader.integer(UInt16.self, name))
                value = .string(String(decoding: try reader.take(length, name), as: UTF8.self))
            case 8: value = .timestamp(milliseconds: try reader.integer(Int64.self, name))
            case 9:
                let raw = Array(try reader.take(16, name))
                value = .uuid(UUID(uuid: (raw[0], raw[1], raw[2], raw[3], raw[4], raw[5], raw[6], raw[7],
                                          raw[8], raw[9], raw[10], raw[11], raw[12], raw[13], raw[14], raw[15])))
            default:
                throw .invalidHeader("unknown type \(type) of \(name.debugDescription)")
            }
            guard headers.updateValue(value, forKey: name) == nil else { throw .duplicateHeader(name) }
        }
        return headers
    }

    /// Reads big-endian fields off a headers section, refusing to read past it.
    private struct HeaderReader {
        var bytes: ArraySlice<UInt8>

        var isAtEnd: Bool { self.bytes.isEmpty }

        mutating func take(_ count: Int, _ what: String) throws(EventStreamError) -> ArraySlice<UInt8> {
            guard self.bytes.count >= count else {
                throw .invalidHeader("\(what.debugDescription) runs past the headers section")
            }
            let taken = self.bytes.prefix(count)
            self.bytes = self.bytes.dropFirst(count)
            return taken
        }

        mutating func integer<T: FixedWidthInteger>(_ type: T.Type, _ what: String) throws(EventStreamError) -> T {
            var value: T.Magnitude = 0
            for byte in try self.take(MemoryLayout<T>.size, what) { value = value << 8 | T.Magnitude(byte) }
            return T(truncatingIfNeeded: value)
        }
    }
}
