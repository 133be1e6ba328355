import AsyncHTTPClient
import Foundation
import KeelCore
import KeelModels
import NIOCore
import NIOHTTP1
import Testing

/// One event of a Server-Sent Events stream.
struct SSEEvent: Sendable, Equatable {
    var id: Int64?
    var type: String
    var data: String

    var json: JSONValue? { try? JSONValue.parse(Array(self.data.utf8)) }
}

/// What a client saw on a stream.
struct SSETranscript: Sendable {
    var status = 0
    var headers = HTTPHeaders()
    var retry: Int?
    var events: [SSEEvent] = []
    /// Comment lines (heartbeats), in order of arrival.
    var comments = 0
    /// The server ended the stream (rather than the client stopping).
    var endedByServer = false
    var errorBody = ""
}

/// Reads the `text/event-stream` format incrementally, with Keel's own
/// decoder (`KeelModels.SSEDecoder`), into a transcript of what arrived.
struct SSEParser {
    private var decoder = SSEDecoder()
    private(set) var transcript = SSETranscript()

    /// Feeds bytes (a chunk may end inside a character or a line); returns
    /// the events completed by them.
    mutating func feed(bytes: some Sequence<UInt8>) -> [SSEEvent] {
        let decoded: [KeelModels.SSEEvent]
        do {
            decoded = try self.decoder.feed(bytes)
        } catch {
            Issue.record("the event stream is malformed: \(error)")
            return []
        }
        let completed = decoded.map { SSEEvent(id: $0.id.flatMap { Int64($0) }, type: $0.type, data: $0.data) }
        self.transcript.events += completed
        self.transcript.comments = self.decoder.comments
        if let retry = self.decoder.reconnectionTime { self.transcript.retry = retry }
        return completed
    }

    /// Feeds a whole text (a complete response body).
    mutating func feed(_ text: String) -> [SSEEvent] {
        self.feed(bytes: Array(text.utf8))
    }

    mutating func set(status: Int, headers: HTTPHeaders) {
        self.transcript.status = status
        self.transcript.headers = headers
    }

    mutating func markEnded() { self.transcript.endedByServer = true }
    mutating func setErrorBody(_ body: String) { self.transcript.errorBody = body }
}

enum SSE {
    /// Reads `url` as an event stream until the server ends it or `stop`
    /// returns true for an event (the client then drops the connection).
    static func read(
        _ url: String,
        token: String,
        lastEventID: Int64? = nil,
        timeout: Duration = .seconds(60),
        stop: @escaping @Sendable (SSEEvent) -> Bool = { _ in false }
    ) async throws -> SSETranscript {
        // AsyncHTTPClient's timeout covers the response head only: bound the body too,
        // so a stream that never ends fails the test instead of hanging it.
        try await withThrowingTaskGroup(of: SSETranscript.self) { group in
            group.addTask { try await Self.readWithoutDeadline(url, token: token, lastEventID: lastEventID, timeout: timeout, stop: stop) }
            group.addTask {
                try await Task.sleep(for: timeout)
                throw SSETimeout(url: url, timeout: timeout)
            }
            let transcript = try await group.next()!
            group.cancelAll()
            return transcript
        }
    }

    struct SSETimeout: Error, CustomStringConvertible {
        let url: String
        let timeout: Duration
        var description: String { "the event stream \(self.url) was still open after \(self.timeout)" }
    }

    private static func readWithoutDeadline(
        _ url: String,
        token: String,
        lastEventID: Int64?,
        timeout: Duration,
        stop: @Sendable (SSEEvent) -> Bool
    ) async throws -> SSETranscript {
        var request = HTTPClientRequest(url: url)
        request.headers.add(name: "Authorization", value: "Bearer \(token)")
        request.headers.add(name: "Accept", value: "text/event-stream")
        if let lastEventID { request.headers.add(name: "Last-Event-ID", value: String(lastEventID)) }
        let response = try await HTTPClient.shared.execute(request, timeout: .init(timeout))
        var parser = SSEParser()
        parser.set(status: Int(response.status.code), headers: response.headers)
        guard response.status == .ok else {
            parser.setErrorBody(String(buffer: try await response.body.collect(upTo: 1 << 20)))
            return parser.transcript
        }
        for try await buffer in response.body {
            for event in parser.feed(bytes: buffer.readableBytesView) where stop(event) {
                return parser.transcript
            }
        }
        parser.markEnded()
        return parser.transcript
    }
}

extension SSETranscript {
    /// Checks the invariants every complete job stream must hold: ids
    /// strictly consecutive from `first`, exactly one `done`, and it last.
    func problems(startingAfter first: Int64 = 0) -> [String] {
        var problems: [String] = []
        var expected = first + 1
        for event in self.events {
            if event.id != expected { problems.append("expected id \(expected), got \(event.id.map(String.init) ?? "none")") }
            expected = (event.id ?? expected) + 1
        }
        let done = self.events.filter { $0.type == "done" }.count
        if done != 1 { problems.append("\(done) done events") }
        if self.events.last?.type != "done" { problems.append("the last event is \(self.events.last?.type ?? "missing"), not done") }
        return problems
    }

    /// The text of the token events after the last reset: what the client shows.
    var finalOutput: String {
        let lastReset = self.events.lastIndex { $0.type == "reset" }.map { $0 + 1 } ?? 0
        return self.events[lastReset...].filter { $0.type == "token" }.compactMap { $0.json?.objectValue?["text"]?.stringValue }.joined()
    }
}
