import AsyncHTTPClient
import Foundation
import KeelCore
import NIOCore
import NIOHTTP1

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

/// Parses the `text/event-stream` format incrementally.
struct SSEParser {
    private var pending = ""
    private var id: Int64?
    private var type = "message"
    private var data: [String] = []
    private(set) var transcript = SSETranscript()

    /// Feeds bytes; returns the events completed by them.
    mutating func feed(_ text: String) -> [SSEEvent] {
        self.pending += text
        var completed: [SSEEvent] = []
        while let newline = self.pending.firstIndex(where: { $0 == "\n" || $0 == "\r\n" }) {
            let line = String(self.pending[..<newline])
            self.pending.removeSubrange(...newline)
            if line.isEmpty {
                if !self.data.isEmpty {
                    let event = SSEEvent(id: self.id, type: self.type, data: self.data.joined(separator: "\n"))
                    completed.append(event)
                    self.transcript.events.append(event)
                }
                self.id = nil
                self.type = "message"
                self.data = []
            } else if line.hasPrefix(":") {
                self.transcript.comments += 1
            } else {
                let parts = line.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
                let field = String(parts[0])
                var value = parts.count > 1 ? String(parts[1]) : ""
                if value.hasPrefix(" ") { value.removeFirst() }
                switch field {
                case "id": self.id = Int64(value)
                case "event": self.type = value
                case "data": self.data.append(value)
                case "retry": self.transcript.retry = Int(value)
                default: break
                }
            }
        }
        return completed
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
            for event in parser.feed(String(buffer: buffer)) where stop(event) {
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
