import Foundation
import KeelModels
import Testing

/// AWS event-stream framing: Keel's decoder and encoder against each other,
/// against hand-checked bytes, and against botocore in both directions.
@Suite("AWS event-stream")
struct EventStreamTests {
    static let everyType: [(name: String, value: EventStreamHeaderValue)] = [
        ("true", .bool(true)),
        ("false", .bool(false)),
        ("byte", .byte(-7)),
        ("short", .short(-300)),
        ("int", .int(-70_000)),
        ("long", .long(-(1 << 40))),
        ("bytes", .bytes([0x00, 0x01, 0xFE, 0xFF])),
        ("string", .string("ünïcødé")),
        ("timestamp", .timestamp(milliseconds: 1_736_944_496_789)),
        ("uuid", .uuid(UUID(uuidString: "123E4567-E89B-12D3-A456-426614174000")!)),
    ]

    static func bedrockEvent(_ type: String, _ json: String) -> EventStreamMessage {
        EventStreamMessage(
            headers: [":event-type": .string(type), ":content-type": .string("application/json"), ":message-type": .string("event")],
            payload: Array(json.utf8))
    }

    static let sampleMessages: [EventStreamMessage] = [
        bedrockEvent("messageStart", #"{"role":"assistant"}"#),
        bedrockEvent("contentBlockDelta", #"{"contentBlockIndex":0,"delta":{"text":"こんにちは é 𝄞"}}"#),
        EventStreamMessage(
            headers: [
                ":exception-type": .string("throttlingException"), ":content-type": .string("application/json"),
                ":message-type": .string("exception"),
            ],
            payload: Array(#"{"message":"Too many requests"}"#.utf8)),
        EventStreamMessage(headers: Dictionary(uniqueKeysWithValues: everyType.map { ($0.name, $0.value) }), payload: Array(0...255)),
        EventStreamMessage(),
    ]

    static func frames(_ messages: [EventStreamMessage]) throws -> [UInt8] {
        let encoder = EventStreamEncoder()
        return try messages.flatMap { try encoder.encode($0) }
    }

    static func decode(_ bytes: [UInt8], chunk: Int) throws -> [EventStreamMessage] {
        var decoder = EventStreamDecoder()
        var messages: [EventStreamMessage] = []
        var start = 0
        while start < bytes.count {
            messages += try decoder.feed(bytes[start..<min(start + chunk, bytes.count)])
            start += chunk
        }
        try decoder.finish()
        return messages
    }

    @Test("CRC32 is zlib's")
    func crc32() {
        #expect(CRC32.checksum(Array("123456789".utf8)) == 0xCBF4_3926)
        #expect(CRC32.checksum([]) == 0)
        #expect(CRC32.checksum(Array("The quick brown fox jumps over the lazy dog".utf8)) == 0x414F_A339)
        var incremental = CRC32()
        incremental.update(Array("12345".utf8))
        incremental.update(Array("6789".utf8))
        #expect(incremental.value == 0xCBF4_3926)
    }

    @Test("a known frame: the empty message is 16 bytes with zlib's checksums")
    func knownFrame() throws {
        let frame = try EventStreamEncoder().encode(EventStreamMessage())
        // total 16, headers 0, crc32 of those 8 bytes, crc32 of the 12 before.
        #expect(frame == [0, 0, 0, 0x10, 0, 0, 0, 0, 0x05, 0xC2, 0x48, 0xEB, 0x7D, 0x98, 0xC8, 0xFF])
        let string = try EventStreamEncoder().encode(headers: [("a", .string("b"))], payload: Array("c".utf8))
        #expect(string.count == 16 + 1 + 1 + 1 + 2 + 1 + 1)
        #expect(Array(string[12..<19]) == [1, UInt8(ascii: "a"), 7, 0, 1, UInt8(ascii: "b"), UInt8(ascii: "c")])
    }

    @Test("encode then decode round-trips every header type, in chunks of every size")
    func roundTrip() throws {
        let bytes = try Self.frames(Self.sampleMessages)
        for chunk in [1, 2, 3, 7, 12, 13, 64, 1000, bytes.count] {
            #expect(try Self.decode(bytes, chunk: chunk) == Self.sampleMessages, "chunk \(chunk)")
        }
    }

    @Test("convenience accessors read the : headers")
    func accessors() throws {
        let messages = try Self.decode(try Self.frames(Self.sampleMessages), chunk: 5)
        #expect(messages[1].messageType == .event)
        #expect(messages[1].eventType == "contentBlockDelta")
        #expect(messages[1].contentType == "application/json")
        #expect(messages[2].messageType == .exception)
        #expect(messages[2].exceptionType == "throttlingException")
        #expect(messages[4].messageType == nil)
        let error = EventStreamMessage(headers: [":message-type": .string("error"), ":error-code": .string("InternalFailure"), ":error-message": .string("boom")])
        #expect(error.messageType == .error)
        #expect(error.errorCode == "InternalFailure")
        #expect(error.errorMessage == "boom")
    }

    @Test("a damaged prelude checksum is an error naming the prelude")
    func preludeChecksum() throws {
        var bytes = try EventStreamEncoder().encode(Self.sampleMessages[1])
        bytes[9] ^= 0x01
        #expect {
            _ = try Self.decode(bytes, chunk: 3)
        } throws: { error in
            guard case .preludeChecksumMismatch = error as? EventStreamError else { return false }
            return "\(error)".contains("prelude")
        }
        // A flipped length bit is caught by the prelude checksum too, before
        // the decoder waits for the bytes the bad length promises.
        var length = try EventStreamEncoder().encode(Self.sampleMessages[1])
        length[1] ^= 0x40
        var decoder = EventStreamDecoder()
        #expect(throws: EventStreamError.self) { try decoder.feed(length.prefix(12)) }
    }

    @Test("a damaged payload or header is an error naming the message checksum")
    func messageChecksum() throws {
        let good = try EventStreamEncoder().encode(Self.sampleMessages[1])
        for index in [13, 20, good.count - 10, good.count - 1] {
            var bytes = good
            bytes[index] ^= 0x20
            #expect {
                _ = try Self.decode(bytes, chunk: 4)
            } throws: { error in
                guard case .messageChecksumMismatch = error as? EventStreamError else { return false }
                return "\(error)".contains("message CRC32")
            }
        }
    }

    @Test("messages before a damaged one are delivered; the decoder then stays failed")
    func failureIsSticky() throws {
        var bytes = try Self.frames(Array(Self.sampleMessages.prefix(2)))
        bytes[bytes.count - 1] ^= 0xFF
        var decoder = EventStreamDecoder()
        let first = try decoder.feed(bytes.prefix(bytes.count / 2))
        #expect(first == [Self.sampleMessages[0]])
        #expect(throws: EventStreamError.self) { try decoder.feed(bytes.dropFirst(bytes.count / 2)) }
        #expect(throws: EventStreamError.self) { try decoder.feed(try Self.frames([Self.sampleMessages[0]])) }
    }

    @Test("the maximum message size is enforced from the prelude, on both sides")
    func maximumSize() throws {
        let message = EventStreamMessage(payload: Array(repeating: 0x61, count: 1000))
        let frame = try EventStreamEncoder().encode(message)
        var small = EventStreamDecoder(configuration: .init(maximumMessageLength: 1000))
        // The prelude alone is enough to refuse it.
        #expect(throws: EventStreamError.messageTooLarge(length: 1016, limit: 1000)) { try small.feed(frame.prefix(12)) }
        #expect(throws: EventStreamError.messageTooLarge(length: 1016, limit: 1000)) {
            try EventStreamEncoder(maximumMessageLength: 1000).encode(message)
        }
        #expect(EventStreamDecoder().configuration.maximumMessageLength == 16 << 20)
    }

    @Test("impossible lengths, bad headers, duplicates and a cut stream are errors")
    func malformed() throws {
        func frame(total: UInt32, headers: UInt32, body: [UInt8]) -> [UInt8] {
            var bytes: [UInt8] = []
            for value in [total, headers] { bytes += withUnsafeBytes(of: value.bigEndian, Array.init) }
            bytes += withUnsafeBytes(of: CRC32.checksum(bytes).bigEndian, Array.init)
            bytes += body
            bytes += withUnsafeBytes(of: CRC32.checksum(bytes).bigEndian, Array.init)
            return bytes
        }
        var decoder = EventStreamDecoder()
        #expect(throws: EventStreamError.invalidLength(total: 15, headers: 0)) { try decoder.feed(frame(total: 15, headers: 0, body: [])) }
        decoder = EventStreamDecoder()
        #expect(throws: EventStreamError.invalidLength(total: 20, headers: 5)) { try decoder.feed(frame(total: 20, headers: 5, body: [1, 2, 3, 4])) }
        // Header type 10 does not exist.
        let unknownType: [UInt8] = [1, UInt8(ascii: "x"), 10]
        decoder = EventStreamDecoder()
        #expect(throws: EventStreamError.invalidHeader("unknown type 10 of \"x\"")) {
            try decoder.feed(frame(total: 19, headers: 3, body: unknownType))
        }
        // A string header whose length runs past the headers section.
        let overlong: [UInt8] = [1, UInt8(ascii: "x"), 7, 0, 9, UInt8(ascii: "y")]
        decoder = EventStreamDecoder()
        #expect(throws: EventStreamError.self) { try decoder.feed(frame(total: 22, headers: 6, body: overlong)) }
        // The same name twice, as botocore refuses it.
        let twice: [UInt8] = [1, UInt8(ascii: "x"), 0, 1, UInt8(ascii: "x"), 1]
        decoder = EventStreamDecoder()
        #expect(throws: EventStreamError.duplicateHeader("x")) { try decoder.feed(frame(total: 22, headers: 6, body: twice)) }
        #expect(throws: EventStreamError.duplicateHeader("x")) {
            try EventStreamEncoder().encode(headers: [("x", .bool(true)), ("x", .bool(false))], payload: [])
        }
        // A stream that ends inside a message.
        let whole = try Self.frames([Self.sampleMessages[0]])
        decoder = EventStreamDecoder()
        #expect(try decoder.feed(whole.dropLast(3)) == [])
        #expect(decoder.bufferedCount == whole.count - 3)
        #expect(throws: EventStreamError.truncated(buffered: whole.count - 3)) { try decoder.finish() }
    }

    // MARK: - Against botocore

    /// A header value as the check script prints it.
    static func tagged(_ value: EventStreamHeaderValue) -> String {
        switch value {
        case .bool(let value): "bool:\(value)"
        case .byte(let value): "int:\(value)"
        case .short(let value): "int:\(value)"
        case .int(let value): "int:\(value)"
        case .long(let value): "int:\(value)"
        case .timestamp(let milliseconds): "int:\(milliseconds)"
        case .string(let value): "string:\(value)"
        case .bytes(let value): "base64:\(Data(value).base64EncodedString())"
        case .uuid(let value): "base64:\(withUnsafeBytes(of: value.uuid) { Data($0).base64EncodedString() })"
        }
    }

    @Test("botocore's EventStreamBuffer reads the frames Keel's encoder writes")
    func botocoreReadsKeelFrames() async throws {
        try await BotocoreReference.requireBotocore()
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("keel-frames-\(UUID().uuidString).bin")
        defer { try? FileManager.default.removeItem(at: file) }
        try Data(try Self.frames(Self.sampleMessages)).write(to: file)
        let result = try await BotocoreReference.json("eventstream_check.py", ["read", file.path])
        #expect(result["error"] == nil, "\(result)")
        #expect(result["leftover_bytes"] as? Int == 0)
        let messages = try #require(result["messages"] as? [[String: Any]])
        try #require(messages.count == Self.sampleMessages.count)
        for (read, written) in zip(messages, Self.sampleMessages) {
            let headers = try #require(read["headers"] as? [String: Any])
            #expect(Set(headers.keys) == Set(written.headers.keys))
            for (name, value) in written.headers {
                #expect(headers[name] as? String == Self.tagged(value), "\(name)")
            }
            #expect(read["payload_base64"] as? String == Data(written.payload).base64EncodedString())
        }
    }

    @Test("botocore refuses a Keel frame with a damaged checksum, as Keel does")
    func botocoreRefusesDamagedFrames() async throws {
        try await BotocoreReference.requireBotocore()
        var bytes = try Self.frames([Self.sampleMessages[1]])
        bytes[bytes.count - 6] ^= 0x01
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("keel-frames-\(UUID().uuidString).bin")
        defer { try? FileManager.default.removeItem(at: file) }
        try Data(bytes).write(to: file)
        let result = try await BotocoreReference.json("eventstream_check.py", ["read", file.path])
        #expect(result["error"] as? String == "ChecksumMismatch", "\(result)")
        #expect(throws: EventStreamError.self) { try Self.decode(bytes, chunk: 7) }
    }

    @Test("Keel's decoder reads frames built in Python per the format, with zlib's CRC32")
    func keelReadsPythonFrames() async throws {
        try await BotocoreReference.requireBotocore()
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("keel-frames-\(UUID().uuidString).bin")
        defer { try? FileManager.default.removeItem(at: file) }
        let result = try await BotocoreReference.json("eventstream_check.py", ["write", file.path])
        let expected = try #require(result["messages"] as? [[String: Any]])
        let bytes = [UInt8](try Data(contentsOf: file))
        for chunk in [1, 5, 4096] {
            let decoded = try Self.decode(bytes, chunk: chunk)
            try #require(decoded.count == expected.count)
            for (message, wanted) in zip(decoded, expected) {
                let headers = try #require(wanted["headers"] as? [String: [String: Any]])
                #expect(Set(message.headers.keys) == Set(headers.keys))
                for (name, typed) in headers {
                    let value = try #require(message.headers[name])
                    #expect(Int(value.typeCode) == typed["type"] as? Int, "\(name)")
                    #expect(Self.tagged(value) == typed["value"] as? String, "\(name)")
                }
                #expect(Data(message.payload).base64EncodedString() == wanted["payload_base64"] as? String)
            }
            #expect(decoded[1].eventType == "contentBlockDelta")
            #expect(decoded[3].exceptionType == "throttlingException")
            #expect(decoded[4].messageType == .error)
        }
    }
}
