/// The one Server-Sent Events decoder of Keel: bytes in, events out, following
/// the WHATWG HTML standard's "interpreting an event stream".
///
/// It works on bytes, not on strings, because a network chunk may end inside
/// a multi-byte UTF-8 character or between the CR and LF of one line break:
/// lines are found on bytes (CR, LF and CRLF each end one line, even when a
/// CRLF is split across two chunks) and each complete line is decoded on its
/// own, so a chunk boundary never changes what comes out. Every provider
/// client layers its API's meaning (`[DONE]`, in-band errors) on top.
///
/// Choices the standard leaves to the caller:
/// - As the standard says, a block with no `data` field dispatches no event
///   (a block with an empty `data:` line does: its data is ""). Such a
///   block's `id` and `retry` still take effect: read ``lastEventID`` and
///   ``reconnectionTime`` after each ``feed(_:)``.
/// - Comment lines (`:` first) dispatch nothing, but are counted in
///   ``comments``: keep-alive heartbeats are comments, and an idle timeout
///   that ignored them would cut a healthy stream.
/// - Memory is bounded: a line longer than
///   ``Configuration/maximumLineLength`` or an event whose data outgrows
///   ``Configuration/maximumEventSize`` throws instead of growing forever.
public struct SSEDecoder: Sendable {
    /// Limits that keep a misbehaving upstream from exhausting memory.
    public struct Configuration: Sendable, Equatable {
        /// Longest line accepted, in bytes, without its line break.
        public var maximumLineLength: Int
        /// Largest data buffer of one event, in bytes, summed over its lines.
        public var maximumEventSize: Int

        public init(maximumLineLength: Int = 1 << 20, maximumEventSize: Int = 16 << 20) {
            self.maximumLineLength = maximumLineLength
            self.maximumEventSize = maximumEventSize
        }
    }

    /// Why a stream cannot be decoded further. After one, the decoder keeps
    /// throwing it: the stream is broken and its remainder has no meaning.
    public enum Error: Swift.Error, Sendable, Equatable, CustomStringConvertible {
        /// A line grew past `limit` bytes without a line break.
        case lineTooLong(limit: Int)
        /// One event's data grew past `limit` bytes.
        case eventTooLarge(limit: Int)

        public var description: String {
            switch self {
            case .lineTooLong(let limit): "SSE line longer than \(limit) bytes"
            case .eventTooLarge(let limit): "SSE event data larger than \(limit) bytes"
            }
        }
    }

    public let configuration: Configuration

    /// The last event ID string: set when a block's `id` field (without
    /// NUL) is dispatched, and kept across events. Sent back as
    /// `Last-Event-ID` when reconnecting.
    public private(set) var lastEventID: String = ""
    /// The reconnection time in milliseconds set by the latest valid `retry`
    /// field, or `nil` when the stream has set none.
    public private(set) var reconnectionTime: Int?
    /// How many comment lines have been seen (keep-alive heartbeats).
    public private(set) var comments: Int = 0

    private var line: [UInt8] = []
    private var lastByteWasCR = false
    private var atStreamStart = true
    private var failure: Error?

    private var data: [UInt8] = []
    private var eventType: String = ""
    private var eventIDBuffer: String = ""
    private var blockRetry: Int?
    /// Whether the current block has any field at all, so that ``finish()``
    /// can say whether it discarded something.
    private var blockHasFields = false

    public init(configuration: Configuration = Configuration()) {
        self.configuration = configuration
    }

    /// Decodes the next chunk of the stream, of any size, split anywhere.
    ///
    /// Returns the events that the chunk completed, in order. An oversize line
    /// or event throws; events completed earlier in the same chunk are then
    /// not returned, as the stream is broken anyway.
    public mutating func feed(_ bytes: some Sequence<UInt8>) throws(Error) -> [SSEEvent] {
        if let failure { throw failure }
        var events: [SSEEvent] = []
        let result: Result<Void, Error>? = bytes.withContiguousStorageIfAvailable { buffer in
            Result { () throws(Error) in try self.scan(buffer, into: &events) }
        }
        switch result {
        case .some(.success):
            break
        case .some(.failure(let error)):
            self.failure = error
            throw error
        case .none:
            let copy = Array(bytes)
            do {
                try copy.withUnsafeBufferPointer { buffer throws(Error) in try self.scan(buffer, into: &events) }
            } catch {
                self.failure = error
                throw error
            }
        }
        return events
    }

    /// Ends the stream. As the standard says, an event whose block was not
    /// closed by an empty line is discarded, and so is an unterminated last
    /// line. Returns whether anything was discarded: a stream cut in the
    /// middle of an event is a broken stream, not a finished one.
    @discardableResult
    public mutating func finish() -> Bool {
        let discarded = !self.line.isEmpty || self.blockHasFields
        self.line.removeAll()
        self.resetBlock()
        self.lastByteWasCR = false
        return discarded
    }

    private mutating func scan(_ buffer: UnsafeBufferPointer<UInt8>, into events: inout [SSEEvent]) throws(Error) {
        var start = 0
        var index = 0
        let cr: UInt8 = 0x0D
        let lf: UInt8 = 0x0A
        if self.lastByteWasCR, let first = buffer.first {
            // The LF of a CRLF whose CR ended the previous chunk.
            self.lastByteWasCR = false
            if first == lf {
                start = 1
                index = 1
            }
        }
        while index < buffer.count {
            let byte = buffer[index]
            guard byte == cr || byte == lf else {
                index += 1
                continue
            }
            try self.append(UnsafeBufferPointer(rebasing: buffer[start..<index]))
            try self.processLine(into: &events)
            index += 1
            if byte == cr {
                if index < buffer.count {
                    if buffer[index] == lf { index += 1 }
                } else {
                    self.lastByteWasCR = true
                }
            }
            start = index
        }
        try self.append(UnsafeBufferPointer(rebasing: buffer[start..<buffer.count]))
    }

    private mutating func append(_ bytes: UnsafeBufferPointer<UInt8>) throws(Error) {
        guard !bytes.isEmpty else { return }
        guard self.line.count + bytes.count <= self.configuration.maximumLineLength else {
            throw .lineTooLong(limit: self.configuration.maximumLineLength)
        }
        self.line.append(contentsOf: bytes)
    }

    private mutating func processLine(into events: inout [SSEEvent]) throws(Error) {
        defer { self.line.removeAll(keepingCapacity: self.line.count <= 4096) }
        var line = self.line[...]
        if self.atStreamStart {
            self.atStreamStart = false
            if line.starts(with: [0xEF, 0xBB, 0xBF]) { line = line.dropFirst(3) }
        }
        guard let first = line.first else {
            self.dispatch(into: &events)
            return
        }
        if first == UInt8(ascii: ":") {
            self.comments += 1
            return
        }
        let name: ArraySlice<UInt8>
        var value: ArraySlice<UInt8>
        if let colon = line.firstIndex(of: UInt8(ascii: ":")) {
            name = line[..<colon]
            value = line[(colon + 1)...]
            if value.first == UInt8(ascii: " ") { value = value.dropFirst() }
        } else {
            name = line
            value = []
        }
        self.blockHasFields = true
        switch String(decoding: name, as: UTF8.self) {
        case "event":
            self.eventType = String(decoding: value, as: UTF8.self)
        case "data":
            guard self.data.count + value.count + 1 <= self.configuration.maximumEventSize else {
                throw .eventTooLarge(limit: self.configuration.maximumEventSize)
            }
            self.data.append(contentsOf: value)
            self.data.append(0x0A)
        case "id":
            if !value.contains(0) { self.eventIDBuffer = String(decoding: value, as: UTF8.self) }
        case "retry":
            // ASCII digits only; a value too large for an Int is ignored too.
            if !value.isEmpty, value.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
                let milliseconds = Int(String(decoding: value, as: UTF8.self))
            {
                self.reconnectionTime = milliseconds
                self.blockRetry = milliseconds
            }
        default:
            break
        }
    }

    private mutating func dispatch(into events: inout [SSEEvent]) {
        self.lastEventID = self.eventIDBuffer
        defer { self.resetBlock() }
        guard !self.data.isEmpty else { return }
        self.data.removeLast()  // the "\n" after the last data line
        events.append(
            SSEEvent(
                type: self.eventType.isEmpty ? "message" : self.eventType,
                data: String(decoding: self.data, as: UTF8.self),
                id: self.lastEventID.isEmpty ? nil : self.lastEventID,
                retry: self.blockRetry))
    }

    /// Clears one block's buffers. The ID buffer is not one of them: per the
    /// standard it carries over to later blocks until an `id` field changes it.
    private mutating func resetBlock() {
        self.data.removeAll(keepingCapacity: self.data.count <= 4096)
        self.eventType = ""
        self.blockRetry = nil
        self.blockHasFields = false
    }
}
