import Foundation
import Hummingbird
import KeelCore
import NIOCore
import Synchronization

/// `GET /api/jobs/{id}/events`: the job's event log as Server-Sent Events,
/// or with `?format=json` as a page for polling clients.
///
/// The stream reads the store, never memory another instance filled: it
/// resumes after `Last-Event-ID` (or `?after=N`) on any instance, writes
/// what the log holds, then sleeps until the hub says the log grew (this
/// process's workers at once; other processes through the change feed) or
/// the heartbeat interval passed. Each batch is written, and the write
/// awaited, before the next is read: a slow client holds at most one batch
/// here, never an unbounded queue.
struct JobEventsController: Sendable {
    let jobs: JobsController
    let events: any EventLog
    let streamer: JobEventStream

    static let maxJSONPage = 1000

    func register(on routes: inout RouteTable) {
        routes.add("/api/jobs/:id/events", .get, self.events)
    }

    @Sendable func events(_ request: Request, context: KeelRequestContext) async throws -> Response {
        let session = try await self.jobs.authenticator.authenticate(request).session
        let job = try await self.jobs.ownedJob(context, session: session)
        let query = request.uri.queryParameters
        let after = try Self.position(lastEventID: request.headers[.lastEventID], after: query["after"].map(String.init))
        guard after <= job.lastSequence else {
            throw KeelError(
                .invalidCursor,
                "Event \(after) is beyond the end of this job's log (its last event is \(job.lastSequence)).",
                hint: "Resume from an id this job's stream sent you, or from 0 to replay everything."
            )
        }
        var heartbeats = true
        switch query["heartbeat"].map(String.init) {
        case nil, "on"?: break
        case "off"?: heartbeats = false
        case let other?: throw KeelError(.invalidInput, "heartbeat must be on or off, not '\(other)'.")
        }
        // The client has seen the terminal event already (a browser's
        // EventSource reconnects after every close, sending its id).
        let pastTheEnd = job.status.isTerminal && after >= job.lastSequence
        switch query["format"].map(String.init) {
        case nil, "sse"?, "event-stream"?:
            // 204 is the SSE way to say "stop reconnecting": nothing more will come.
            if pastTheEnd { return Response(status: .noContent, headers: [.cacheControl: "no-cache"]) }
            return self.stream(context.channel, jobID: job.id, after: after, heartbeats: heartbeats)
        case "json"?:
            return try await self.page(jobID: job.id, after: after, finishedLog: pastTheEnd, query: query)
        case let other?:
            throw KeelError(.invalidInput, "Unknown format '\(other)'.", hint: "Leave it out for Server-Sent Events, or use format=json.")
        }
    }

    /// The resume position: `Last-Event-ID` wins (browsers send it on
    /// reconnect with the original URL), then `?after=`, then 0.
    static func position(lastEventID: String?, after: String?) throws -> Int64 {
        for (name, value) in [("Last-Event-ID", lastEventID), ("after", after)] {
            guard let value else { continue }
            let trimmed = value.trimmingCharacters(in: .whitespaces)
            if name == "Last-Event-ID" && trimmed.isEmpty { continue }
            guard !trimmed.isEmpty, trimmed.utf8.count <= 19, trimmed.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), let position = Int64(trimmed) else {
                throw KeelError(
                    .invalidCursor,
                    "\(name) '\(value)' is not an event id.",
                    hint: "Event ids are the non-negative integers sent in the stream's id: lines."
                )
            }
            return position
        }
        return 0
    }

    /// `finishedLog`: the job is over and `after` is its last event, so the page is empty and `done`.
    private func page(jobID: String, after: Int64, finishedLog: Bool, query: Parameters) async throws -> Response {
        var limit = 100
        if let text = query["limit"].map(String.init) {
            guard let parsed = Int(text), (1...Self.maxJSONPage).contains(parsed) else {
                throw KeelError(.invalidInput, "limit must be an integer from 1 to \(Self.maxJSONPage).")
            }
            limit = parsed
        }
        let events = try await self.events.events(jobID: jobID, after: after, limit: limit)
        var json = JSONWriter()
        json.object { json in
            json.field("events") { json in
                json.array { json in
                    for event in events {
                        json.object { json in
                            json.field("id", event.sequence)
                            json.field("type", event.type)
                            json.field("data", rawJSON: event.dataJSON)
                            json.field("created_at", event.createdAt)
                        }
                    }
                }
            }
            json.field("last_event_id", events.last?.sequence ?? after)
            json.field("done", finishedLog || events.contains { $0.type == JobEventType.done })
        }
        return .json(json.text, headers: [.cacheControl: "no-store"])
    }

    private func stream(_ channel: any Channel, jobID: String, after: Int64, heartbeats: Bool) -> Response {
        self.streamer.response(channel, jobID: jobID, after: after, heartbeats: heartbeats)
    }

    /// One event in the SSE wire format; data spanning lines gets one
    /// `data:` line per line, as the format requires.
    static func write(_ event: JobEvent, to buffer: inout ByteBuffer) {
        buffer.writeString("id: \(event.sequence)\nevent: \(event.type)\n")
        if event.dataJSON.utf8.contains(where: { $0 == 0x0A || $0 == 0x0D }) {
            for line in event.dataJSON.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r" || $0 == "\r\n" }) {
                buffer.writeString("data: \(line)\n")
            }
        } else {
            buffer.writeString("data: \(event.dataJSON)\n")
        }
        buffer.writeString("\n")
    }
}

/// Set once the client of a stream has gone away.
final class ClientGone: Sendable {
    private let flag = Atomic<Bool>(false)

    var isSet: Bool { self.flag.load(ordering: .acquiring) }

    func set() { self.flag.store(true, ordering: .releasing) }
}

/// A job's event log as a Server-Sent Events response: what
/// `GET /api/jobs/{id}/events` answers, and what a module's route answers
/// when it hands a new job's stream straight to the client
/// (``JobStreams``).
struct JobEventStream: Sendable {
    let events: any EventLog
    let hub: ChangeHub
    let settings: StreamSettings
    let metrics: JobMetrics

    /// `heartbeats: false` (`?heartbeat=off`) leaves an idle stream silent:
    /// `keel probe` uses it to measure how long the path in front of Keel
    /// keeps an idle connection open.
    ///
    /// The stream watches its connection's inbound side while it sleeps: a
    /// client that goes away (FIN or RST) wakes it at once, and everything it
    /// held (its place in the hub, its buffers, the task) is freed then, not
    /// at the next heartbeat or event.
    func response(
        _ channel: any Channel, jobID: String, after: Int64, heartbeats: Bool,
        encode: @escaping @Sendable (JobEvent, inout ByteBuffer) -> Void = JobEventsController.write
    ) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "text/event-stream; charset=utf-8"
        headers[.cacheControl] = "no-cache"
        // nginx buffers proxied responses unless told not to.
        headers[.xAccelBuffering] = "no"
        let hub = self.hub
        let events = self.events
        let settings = self.settings
        let metrics = self.metrics
        return Response(
            status: .ok,
            headers: headers,
            body: ResponseBody { writer in
                metrics.streamOpened()
                if after > 0 { metrics.streamResumes.increment() }
                defer { metrics.streamClosed() }
                let signal = WakeSignal()
                let gone = ClientGone()
                // Follow before the first read, so nothing appended in between is missed.
                hub.follow(jobID: jobID, signal)
                defer { hub.unfollow(jobID: jobID, signal) }
                await RawConnectionGuard.watchClientGone(channel) {
                    gone.set()
                    signal.fire()
                }
                // `retry:` goes out with the first events, not as a block of its
                // own: some clients (httpx-sse) dispatch a lone `retry:` block, or
                // one with only `retry:` and a comment, as an empty event without
                // an id. A heartbeat before the first event is a comment alone.
                var pending = ByteBuffer()
                var retry: String? = "retry: \(Int64(settings.retryDelay.timeInterval * 1000))\n"
                var cursor = after
                var lastWrite = ContinuousClock.now
                while !hub.streamsClosed, !gone.isSet {
                    let batch = try await hub.events(jobID: jobID, after: cursor, limit: settings.batchSize, log: events)
                    if !batch.isEmpty {
                        var finished = false
                        if let line = retry {
                            pending.writeString(line)
                            retry = nil
                        }
                        for event in batch {
                            encode(event, &pending)
                            cursor = event.sequence
                            if event.type == JobEventType.done { finished = true }
                        }
                        try await writer.write(pending)
                        pending.clear()
                        lastWrite = .now
                        if finished { break }
                        if batch.count == settings.batchSize { continue }
                    }
                    let idle = ContinuousClock.now - lastWrite
                    if !heartbeats {
                        _ = await signal.wait(timeout: settings.heartbeatInterval)
                        continue
                    }
                    if idle >= settings.heartbeatInterval {
                        try await writer.write(ByteBuffer(string: ": keep-alive\n\n"))
                        metrics.streamHeartbeats.increment()
                        lastWrite = .now
                        continue
                    }
                    _ = await signal.wait(timeout: settings.heartbeatInterval - idle)
                }
                if gone.isSet {
                    metrics.streamClientsGone.increment()
                    // Nobody reads it; ending the response lets the connection close.
                    try? await writer.finish(nil)
                    return
                }
                try await writer.finish(nil)
            }
        )
    }

}

/// For a module's routes: answer with a job's event stream, as
/// `GET /api/jobs/{id}/events` would (resumable there by `Last-Event-ID` on
/// any instance).
public struct JobStreams: Sendable {
    let streamer: JobEventStream

    /// The job's events from the first, as `text/event-stream`, until its
    /// `done` event. A client that loses the stream resumes it with
    /// `GET /api/jobs/{id}/events` and `Last-Event-ID`.
    public func response(jobID: String, context: KeelRequestContext) -> Response {
        self.streamer.response(context.channel, jobID: jobID, after: 0, heartbeats: true)
    }

    /// The job's events after `after`, each written by `encode` (which may
    /// write nothing for an event): another protocol's stream over the same
    /// durable log. The stream ends after the job's `done` event.
    public func response(
        jobID: String, after: Int64, context: KeelRequestContext, encode: @escaping @Sendable (JobEvent, inout ByteBuffer) -> Void
    ) -> Response {
        self.streamer.response(context.channel, jobID: jobID, after: after, heartbeats: true, encode: encode)
    }

    /// Waits until the job's log holds its `done` event (woken by the change
    /// hub, like a stream), or `timeout` passes; returns whether it is done.
    public func waitUntilDone(jobID: String, timeout: Duration) async throws -> Bool {
        let streamer = self.streamer
        let signal = WakeSignal()
        streamer.hub.follow(jobID: jobID, signal)
        defer { streamer.hub.unfollow(jobID: jobID, signal) }
        let deadline = ContinuousClock.now + timeout
        var cursor: Int64 = 0
        while !streamer.hub.streamsClosed {
            let batch = try await streamer.hub.events(jobID: jobID, after: cursor, limit: streamer.settings.batchSize, log: streamer.events)
            if batch.contains(where: { $0.type == JobEventType.done }) { return true }
            if let last = batch.last {
                cursor = last.sequence
                if batch.count == streamer.settings.batchSize { continue }
            }
            let left = deadline - ContinuousClock.now
            guard left > .zero else { return false }
            _ = await signal.wait(timeout: min(left, streamer.settings.heartbeatInterval))
        }
        return false
    }
}
