/// Writes AWS event-stream frames: what Keel's fake Bedrock upstream sends,
/// byte for byte what botocore reads.
public struct EventStreamEncoder: Sendable {
    /// Largest total message length written; larger messages throw rather
    /// than produce a frame no reader accepts.
    public var maximumMessageLength: Int

    public init(maximumMessageLength: Int = 16 << 20) {
        self.maximumMessageLength = maximumMessageLength
    }

    /// The frame of `message`, its headers in name order (a dictionary has
    /// no order of its own, and a fake should write the same bytes each run).
    public func encode(_ message: EventStreamMessage) throws(EventStreamError) -> [UInt8] {
        let headers = message.headers.sorted { $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) }
        return try self.encode(headers: headers.map { ($0.key, $0.value) }, payload: message.payload)
    }

    /// The frame of `headers`, written in the order given, and `payload`.
    public func encode(
        headers: [(name: String, value: EventStreamHeaderValue)], payload: some Collection<UInt8>
    ) throws(EventStreamError) -> [UInt8] {
        var seen = Set<String>()
        var encodedHeaders: [UInt8] = []
        for (name, value) in headers {
            guard seen.insert(name).inserted else { throw .duplicateHeader(name) }
            let nameBytes = Array(name.utf8)
            guard !nameBytes.isEmpty, nameBytes.count <= Int(UInt8.max) else {
                throw .invalidHeader("name \(name.debugDescription) must be 1 to 255 bytes")
            }
            encodedHeaders.append(UInt8(nameBytes.count))
            encodedHeaders += nameBytes
            encodedHeaders.append(value.typeCode)
            switch value {
            case .bool: break
            case .byte(let value): Self.append(value, to: &encodedHeaders)
            case .short(let value): Self.append(value, to: &encodedHeaders)
            case .int(let value): Self.append(value, to: &encodedHeaders)
            case .long(let value): Self.append(value, to: &encodedHeaders)
            case .bytes(let value): try Self.appendVariable(value, name, to: &encodedHeaders)
            case .string(let value): try Self.appendVariable(Array(value.utf8), name, to: &encodedHeaders)
            case .timestamp(let milliseconds): Self.append(milliseconds, to: &encodedHeaders)
            case .uuid(let value):
                withUnsafeBytes(of: value.uuid) { encodedHeaders.append(contentsOf: $0) }
            }
        }
        let total = EventStreamDecoder.overheadLength + encodedHeaders.count + payload.count
        guard total <= self.maximumMessageLength, total <= Int(UInt32.max) else {
            throw .messageTooLarge(length: total, limit: self.maximumMessageLength)
        }
        var frame: [UInt8] = []
        frame.reserveCapacity(total)
        Self.append(UInt32(total), to: &frame)
        Self.append(UInt32(encodedHeaders.count), to: &frame)
        Self.append(CRC32.checksum(frame), to: &frame)
        frame += encodedHeaders
        frame += payload
        Self.append(CRC32.checksum(frame), to: &frame)
        return frame
    }

    private static func append<T: FixedWidthInteger>(_ value: T, to bytes: inout [UInt8]) {
        withUnsafeBytes(of: value.bigEndian) { bytes.append(contentsOf: $0) }
    }

    private static func appendVariable(_ value: [UInt8], _ name: String, to bytes: inout [UInt8]) throws(EventStreamError) {
        guard value.count <= Int(UInt16.max) else {
            throw .invalidHeader("value of \(name.debugDescription) is longer than 65535 bytes")
        }
        Self.append(UInt16(value.count), to: &bytes)
        bytes += value
    }
}
