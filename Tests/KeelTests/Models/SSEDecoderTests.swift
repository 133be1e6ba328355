import KeelModels
import Testing

/// The one SSE decoder: the WHATWG event-stream rules, on bytes, whatever
/// the chunking.
@Suite("SSE decoder")
struct SSEDecoderTests {
    // The test target has an SSEEvent of its own (Support/SSE.swift).
    typealias Event = KeelModels.SSEEvent

    /// Decodes `bytes` fed in the chunks that `cuts` (ascending offsets) make.
    static func decode(_ bytes: [UInt8], cuts: [Int] = [], configuration: SSEDecoder.Configuration = .init()) throws -> [Event] {
        var decoder = SSEDecoder(configuration: configuration)
        var events: [Event] = []
        var start = 0
        for cut in cuts + [bytes.count] {
            events += try decoder.feed(bytes[start..<cut])
            start = cut
        }
        decoder.finish()
        return events
    }

    static func decode(_ text: String) throws -> [Event] { try self.decode(Array(text.utf8)) }

    /// A stream with every feature at once: BOM, all three line endings,
    /// comments, multi-byte characters of 2, 3 and 4 bytes, ids, retry.
    static let sample: [UInt8] = {
        let lines: [String] = [
            ": heartbeat\r\n",
            "event: greeting\r",
            "data: héllo\r\n",
            "data: 日本語\n",
            "id: 1\r\r",
            "data: 𝄞 clef\n",
            "retry: 2500\n\n",
            ":another comment\r",
            "data:no space\r\n",
            "data:  two spaces\r\n\r\n",
            "event: content_block_delta\n",
            "data: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"é\"}}\r\n",
            "\n",
        ]
        let bom: [UInt8] = [0xEF, 0xBB, 0xBF]
        return bom + Array(lines.joined().utf8)
    }()

    static let sampleEvents: [Event] = [
        Event(type: "greeting", data: "héllo\n日本語", id: "1"),
        Event(data: "𝄞 clef", id: "1", retry: 2500),
        Event(data: "no space\n two spaces", id: "1"),
        Event(type: "content_block_delta", data: "{\"type\":\"content_block_delta\",\"delta\":{\"text\":\"é\"}}", id: "1"),
    ]

    @Test("the sample stream decodes to the expected events")
    func sampleStream() throws {
        #expect(try Self.decode(Self.sample) == Self.sampleEvents)
    }

    @Test("split at every byte position, the output equals the unsplit decoding")
    func everySplit() throws {
        let whole = try Self.decode(Self.sample)
        for cut in 0...Self.sample.count {
            #expect(try Self.decode(Self.sample, cuts: [cut]) == whole, "split at \(cut)")
        }
        for first in stride(from: 0, through: Self.sample.count, by: 5) {
            for second in first...Self.sample.count {
                #expect(try Self.decode(Self.sample, cuts: [first, second]) == whole, "split at \(first) and \(second)")
            }
        }
    }

    @Test("fed one byte at a time, the output equals the unsplit decoding")
    func byteByByte() throws {
        #expect(try Self.decode(Self.sample, cuts: Array(1..<Self.sample.count)) == Self.sampleEvents)
    }

    @Test("LF, CR and CRLF each end one line", arguments: ["\n", "\r", "\r\n"])
    func lineEndings(_ ending: String) throws {
        let text = ["event: a", "data: one", "data: two", "", "data: three", "", ""].joined(separator: ending)
        #expect(try Self.decode(text) == [Event(type: "a", data: "one\ntwo"), Event(data: "three")])
    }

    @Test("a CR at the end of one chunk and the LF at the start of the next are one line break")
    func crlfAcrossChunks() throws {
        let bytes = Array("data: a\r\ndata: b\r\n\r\n".utf8)
        for cut in 0...bytes.count {
            #expect(try Self.decode(bytes, cuts: [cut]) == [Event(data: "a\nb")], "split at \(cut)")
        }
        // CR LF as two chunks, alone.
        var decoder = SSEDecoder()
        #expect(try decoder.feed(Array("data: x\r".utf8)) == [])
        #expect(try decoder.feed([0x0A]) == [])
        #expect(try decoder.feed([0x0D]) == [Event(data: "x")])
        #expect(try decoder.feed([0x0A]) == [])
        #expect(try decoder.feed(Array("data: y\n\n".utf8)) == [Event(data: "y")])
    }

    @Test("CR CR is two line breaks, LF CR is two, CR LF is one")
    func mixedBreaks() throws {
        #expect(try Self.decode("data: a\r\rdata: b\n\rdata: c\r\n\r\n") == [Event(data: "a"), Event(data: "b"), Event(data: "c")])
    }

    @Test("multi-byte characters split across chunks decode whole", arguments: ["é", "𝄞", "日本語のテキスト", "naïve 🙂 ok"])
    func splitMultiByte(_ text: String) throws {
        let bytes = Array("data: \(text)\n\n".utf8)
        for cut in 0...bytes.count {
            #expect(try Self.decode(bytes, cuts: [cut]) == [Event(data: text)], "split at \(cut)")
        }
        #expect(try Self.decode(bytes, cuts: Array(1..<bytes.count)) == [Event(data: text)])
    }

    @Test("one leading BOM is ignored, even split; a second one is kept")
    func byteOrderMark() throws {
        let bom: [UInt8] = [0xEF, 0xBB, 0xBF]
        let bytes = bom + Array("data: x\n\n".utf8)
        for cut in 0...bytes.count {
            #expect(try Self.decode(bytes, cuts: [cut]) == [Event(data: "x")], "split at \(cut)")
        }
        // A second BOM makes the field name "\u{FEFF}data", which is unknown.
        #expect(try Self.decode(bom + bom + Array("data: x\n\ndata: y\n\n".utf8)) == [Event(data: "y")])
        // A BOM later in the stream is not special either.
        #expect(try Self.decode(Array("data: x\n\n".utf8) + bom + Array("data: y\n\n".utf8)) == [Event(data: "x")])
    }

    @Test("comments dispatch nothing and are counted, for idle timeouts")
    func comments() throws {
        var decoder = SSEDecoder()
        #expect(try decoder.feed(Array(": keep-alive\n\n:\n".utf8)) == [])
        #expect(decoder.comments == 2)
        #expect(try decoder.feed(Array(":ping\r\ndata: x\n:between\n\n".utf8)) == [Event(data: "x")])
        #expect(decoder.comments == 4)
    }

    @Test("field without a colon, unknown fields, and the single leading space")
    func fieldParsing() throws {
        // An empty data line is data: the event is dispatched, its data empty.
        #expect(try Self.decode("data\n\n") == [Event(data: "")])
        #expect(try Self.decode("data\ndata\n\n") == [Event(data: "\n")])
        #expect(try Self.decode("data:\n\n") == [Event(data: "")])
        #expect(try Self.decode("data: \n\n") == [Event(data: "")])
        // A block with no data line at all dispatches nothing.
        #expect(try Self.decode("event: x\n\n") == [])
        #expect(try Self.decode("data:  x \n\n") == [Event(data: " x ")])
        #expect(try Self.decode("data:a:b: c\n\n") == [Event(data: "a:b: c")])
        #expect(try Self.decode("foo: bar\nDATA: no\ndata: yes\n\n") == [Event(data: "yes")])
        #expect(try Self.decode("event\ndata: x\n\n") == [Event(data: "x")])  // empty type means message
        #expect(try Self.decode("event: a\n\ndata: x\n\n") == [Event(data: "x")])  // type resets per block
    }

    @Test("id persists across events, an id with NUL is ignored, an empty id clears it")
    func ids() throws {
        var decoder = SSEDecoder()
        #expect(try decoder.feed(Array("id: 7\ndata: a\n\ndata: b\n\n".utf8)) == [Event(data: "a", id: "7"), Event(data: "b", id: "7")])
        #expect(try decoder.feed(Array("id: 8\u{0}9\ndata: c\n\n".utf8)) == [Event(data: "c", id: "7")])
        #expect(decoder.lastEventID == "7")
        // An id-only block dispatches nothing but still moves the last event ID.
        #expect(try decoder.feed(Array("id: 10\n\n".utf8)) == [])
        #expect(decoder.lastEventID == "10")
        #expect(try decoder.feed(Array("id\ndata: d\n\n".utf8)) == [Event(data: "d", id: nil)])
        #expect(decoder.lastEventID == "")
    }

    @Test("retry takes digits only, and a retry-only block still updates the reconnection time")
    func retry() throws {
        var decoder = SSEDecoder()
        #expect(try decoder.feed(Array("retry: 3000\n\n".utf8)) == [])
        #expect(decoder.reconnectionTime == 3000)
        for bad in ["retry: 12a\n\n", "retry: -5\n\n", "retry: 1.5\n\n", "retry:\n\n", "retry:  5\n\n", "retry: 99999999999999999999999\n\n"] {
            #expect(try decoder.feed(Array(bad.utf8)) == [])
            #expect(decoder.reconnectionTime == 3000, "\(bad.debugDescription) changed it")
        }
        #expect(try decoder.feed(Array("retry: 0\ndata: x\n\ndata: y\n\n".utf8)) == [Event(data: "x", retry: 0), Event(data: "y")])
        #expect(decoder.reconnectionTime == 0)
    }

    @Test("end of stream discards an incomplete event and says so")
    func finishDiscards() throws {
        var decoder = SSEDecoder()
        #expect(try decoder.feed(Array("data: complete\n\ndata: cut".utf8)) == [Event(data: "complete")])
        let discardedCut = decoder.finish()
        #expect(discardedCut)
        var unterminated = SSEDecoder()
        #expect(try unterminated.feed(Array("data: no blank line\n".utf8)) == [])
        let discardedUnterminated = unterminated.finish()
        #expect(discardedUnterminated)
        var clean = SSEDecoder()
        #expect(try clean.feed(Array("data: x\n\n: trailing comment\n".utf8)) == [Event(data: "x")])
        let discardedClean = clean.finish()
        #expect(!discardedClean)
    }

    @Test("an OpenAI-style stream ends with data: [DONE]")
    func openAIStream() throws {
        let chunks = [
            #"{"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#,
            #"{"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hé"}}]}"#,
            #"{"id":"c1","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2}}"#,
        ]
        let text = chunks.map { "data: \($0)\n\n" }.joined() + "data: [DONE]\n\n"
        let events = try Self.decode(text)
        #expect(events.map(\.data) == chunks + ["[DONE]"])
        #expect(events.allSatisfy { $0.type == "message" && $0.id == nil })
    }

    @Test("an Anthropic-style stream keeps each event's type, with ping and an in-band error")
    func anthropicStream() throws {
        let text = """
            event: message_start\r
            data: {"type":"message_start","message":{"id":"msg_1","role":"assistant"}}\r
            \r
            event: ping\r
            data: {"type": "ping"}\r
            \r
            event: content_block_delta\r
            data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Let me…"}}\r
            \r
            event: content_block_delta\r
            data: {"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"こんにちは"}}\r
            \r
            event: error\r
            data: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\r
            \r

            """
        let events = try Self.decode(text)
        #expect(events.map(\.type) == ["message_start", "ping", "content_block_delta", "content_block_delta", "error"])
        #expect(events[3].data.contains("こんにちは"))
        #expect(events[4].data.contains("overloaded_error"))
    }

    @Test("a line past the maximum length throws instead of growing, and the decoder stays failed")
    func oversizeLine() throws {
        let configuration = SSEDecoder.Configuration(maximumLineLength: 16)
        #expect(try Self.decode(Array("data: 0123456789\n\n".utf8), configuration: configuration) == [Event(data: "0123456789")])
        #expect(throws: SSEDecoder.Error.lineTooLong(limit: 16)) {
            try Self.decode(Array("data: 01234567890\n\n".utf8), configuration: configuration)
        }
        // Also when the line arrives in small chunks and never ends.
        var decoder = SSEDecoder(configuration: configuration)
        #expect(throws: SSEDecoder.Error.lineTooLong(limit: 16)) {
            for _ in 0..<100 { _ = try decoder.feed(Array("xxxx".utf8)) }
        }
        #expect(throws: SSEDecoder.Error.lineTooLong(limit: 16)) { try decoder.feed(Array("\n\n".utf8)) }
        // The default is 1 MiB.
        #expect(SSEDecoder().configuration.maximumLineLength == 1 << 20)
        let big = Array("data: ".utf8) + Array(repeating: UInt8(ascii: "a"), count: 1 << 20)
        #expect(throws: SSEDecoder.Error.lineTooLong(limit: 1 << 20)) { try Self.decode(big) }
    }

    @Test("an event whose data lines add up past the maximum throws")
    func oversizeEvent() throws {
        let configuration = SSEDecoder.Configuration(maximumLineLength: 64, maximumEventSize: 32)
        let line = "data: 0123456789\n"
        #expect(try Self.decode(Array((line + line + "\n").utf8), configuration: configuration).count == 1)
        #expect(throws: SSEDecoder.Error.eventTooLarge(limit: 32)) {
            try Self.decode(Array((line + line + line + "\n").utf8), configuration: configuration)
        }
    }

    @Test("invalid UTF-8 becomes U+FFFD, line by line")
    func invalidUTF8() throws {
        #expect(try Self.decode(Array("data: a".utf8) + [0xFF, 0xE6] + Array("\ndata: b\n\n".utf8)) == [Event(data: "a\u{FFFD}\u{FFFD}\nb")])
    }
}
