import HTTPTypes
import KeelCore
import Logging
import Metrics
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1

/// What a connection may hold, and for how long (`--header-timeout`,
/// `--idle-timeout`, `--body-timeout`, `--linger-timeout`), plus what the
/// guard needs to answer a request the HTTP parser refused.
struct ConnectionGuardSettings: Sendable {
    var headerTimeout: TimeAmount
    var idleTimeout: TimeAmount
    var bodyTimeout: TimeAmount
    var lingerTimeout: TimeAmount
    /// Hummingbird's header limits: the request line counts as a field.
    var maxHeaderFieldSize: Int
    var maxHeaderListSize: Int
    var instanceID: String
    var requestIDs: RequestIDGenerator
    var metrics: ConnectionMetrics
    var logger: Logger
}

/// Counters of what the guard did, for `/metrics`.
struct ConnectionMetrics: Sendable {
    let timeouts: [ConnectionPhase: Metrics.Counter]
    let malformed: Metrics.Counter
    let continues: Metrics.Counter

    init(_ metrics: KeelMetrics) {
        var timeouts: [ConnectionPhase: Metrics.Counter] = [:]
        for phase in ConnectionPhase.allCases where phase != .responding {
            timeouts[phase] = metrics.counter("keel_connection_timeouts_total", [("phase", phase.rawValue)])
        }
        self.timeouts = timeouts
        self.malformed = metrics.counter("keel_http_malformed_requests_total")
        self.continues = metrics.counter("keel_http_continues_total")
    }
}

/// Where a connection is between requests, and so which timeout applies.
enum ConnectionPhase: String, CaseIterable, Sendable {
    /// No request under way: `--idle-timeout` (keep-alive).
    case idle
    /// A request's first bytes came, its headers are not complete: `--header-timeout`.
    case headers
    /// Its headers came, its body has not ended: `--body-timeout` without a byte.
    case body
    /// The whole request came; the response may take as long as it needs (streams).
    case responding
    /// The response ended before the request's body: the rest is read and
    /// dropped for at most `--linger-timeout`, then the connection closes.
    case lingering
}

/// The state both guard handlers share. Lives on the connection's event
/// loop: only the two handlers of one channel touch it.
final class ConnectionGuardState {
    let settings: ConnectionGuardSettings
    private(set) var phase: ConnectionPhase = .idle
    /// When the current phase's clock started (or last saw progress).
    private var since: NIODeadline = .now()
    private var timer: Scheduled<Void>?
    private var timerDeadline: NIODeadline?
    /// Requests whose head arrived and whose response has not ended (more
    /// than one when a client pipelines).
    private(set) var outstanding = 0
    /// Whether the latest request's body is still arriving.
    private var readingBody = false
    /// Bytes of the current request's first line seen so far, and whether it ended.
    private var requestLineBytes = 0
    private var requestLineDone = false
    /// The typed handler's context, to answer in HTTP terms (408, parse errors).
    var typedContext: ChannelHandlerContext?
    /// The connection, set when the raw handler is added.
    var channel: (any Channel)?
    private var closing = false
    /// The client closed its side (FIN) or the connection is gone (RST).
    private var clientGone = false
    /// Told once when the client goes, while a response is under way.
    private var goneWatchers: [@Sendable () -> Void] = []

    init(settings: ConnectionGuardSettings) {
        self.settings = settings
    }

    private func timeout(for phase: ConnectionPhase) -> TimeAmount? {
        switch phase {
        case .idle: self.settings.idleTimeout
        case .headers: self.settings.headerTimeout
        case .body: self.settings.bodyTimeout
        case .lingering: self.settings.lingerTimeout
        case .responding: nil
        }
    }

    func enter(_ phase: ConnectionPhase, on eventLoop: any EventLoop) {
        self.phase = phase
        self.since = .now()
        self.arm(on: eventLoop)
    }

    /// Makes sure a timer fires no later than the current phase's deadline.
    /// Lazily: a timer already due sooner is kept (when it fires it re-arms
    /// for whatever phase the connection is in by then), so a keep-alive
    /// request moves through its phases with one timer, not one per phase.
    private func arm(on eventLoop: any EventLoop) {
        // A closed connection arms nothing: a response that ends after its client
        // left would otherwise keep this state alive until the idle timeout.
        guard !self.closing, let timeout = self.timeout(for: self.phase) else { return }
        let deadline = self.since + timeout
        if let scheduled = self.timerDeadline, scheduled <= deadline { return }
        self.timer?.cancel()
        self.timerDeadline = deadline
        self.timer = eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [self] in
            self.timerFired(on: eventLoop)
        }
    }

    private func timerFired(on eventLoop: any EventLoop) {
        self.timer = nil
        self.timerDeadline = nil
        guard let timeout = self.timeout(for: self.phase), !self.closing else { return }
        // The phase, or progress within it, may have moved the deadline.
        if NIODeadline.now() < self.since + timeout {
            self.arm(on: eventLoop)
            return
        }
        self.settings.metrics.timeouts[self.phase]?.increment()
        switch self.phase {
        case .headers:
            self.refuse(KeelError(.requestTimeout, "The request's headers did not arrive within \(Self.seconds(timeout)).", hint: "The limit is --header-timeout."))
        default:
            self.close()
        }
    }

    static func seconds(_ amount: TimeAmount) -> String {
        let seconds = Double(amount.nanoseconds) / 1e9
        return seconds == seconds.rounded() ? "\(Int(seconds)) s" : "\(seconds) s"
    }

    // MARK: Events from the handlers

    /// Raw bytes arrived from the client.
    func bytesArrived(_ buffer: ByteBuffer, on eventLoop: any EventLoop) {
        switch self.phase {
        case .idle:
            self.requestLineBytes = 0
            self.requestLineDone = false
            self.enter(.headers, on: eventLoop)
            self.countRequestLine(buffer)
        case .headers:
            self.countRequestLine(buffer)
        case .body:
            // Progress: the timer re-arms itself from here when it fires.
            self.since = .now()
        case .lingering, .responding:
            // Lingering is bounded from the early answer, whatever still comes.
            break
        }
    }

    private func countRequestLine(_ buffer: ByteBuffer) {
        guard !self.requestLineDone else { return }
        if let newline = buffer.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) {
            self.requestLineBytes += newline - buffer.readerIndex
            self.requestLineDone = true
        } else {
            self.requestLineBytes += buffer.readableBytes
        }
    }

    /// The handler may read the body only while it is the body being read:
    /// the server's own slowness (backpressure) is not the client's.
    func serverRead() {
        if self.phase == .body { self.since = .now() }
    }

    func requestHead(on eventLoop: any EventLoop) {
        self.outstanding += 1
        self.readingBody = true
        // A pipelined request behind a response in flight waits with it: no timer.
        self.enter(self.outstanding == 1 ? .body : .responding, on: eventLoop)
    }

    func requestEnd(on eventLoop: any EventLoop) {
        self.readingBody = false
        self.enter(self.outstanding == 0 ? .idle : .responding, on: eventLoop)
    }

    func responseEnd(on eventLoop: any EventLoop) {
        self.outstanding = max(0, self.outstanding - 1)
        self.goneWatchers.removeAll()
        switch (self.outstanding, self.readingBody) {
        case (0, false): self.enter(.idle, on: eventLoop)
        // Answered early (401, 404, 413…) with the body still coming.
        case (0, true): self.enter(.lingering, on: eventLoop)
        case (_, true): self.enter(.body, on: eventLoop)
        case (_, false): self.enter(.responding, on: eventLoop)
        }
    }

    var isClosing: Bool { self.closing }

    /// Calls `watcher` once the client has gone (at once if it has), until
    /// the current response ends.
    func watchClientGone(_ watcher: @escaping @Sendable () -> Void) {
        if self.clientGone {
            watcher()
        } else {
            self.goneWatchers.append(watcher)
        }
    }

    func markClientGone() {
        guard !self.clientGone else { return }
        self.clientGone = true
        let watchers = self.goneWatchers
        self.goneWatchers.removeAll()
        for watcher in watchers { watcher() }
    }

    func closed() {
        self.markClientGone()
        self.closing = true
        self.timer?.cancel()
        self.timer = nil
        self.timerDeadline = nil
        self.typedContext = nil
        self.channel = nil
    }

    // MARK: Answers the application never sees

    /// A request the parser refused, or one too slow: a JSON error, then close.
    func refuse(_ error: KeelError) {
        // With a response in flight (a pipelining client), an answer now would
        // land inside it: close instead.
        guard let context = self.typedContext, !self.closing, self.outstanding == 0 else {
            self.close()
            return
        }
        self.closing = true
        self.timer?.cancel()
        var fields = HTTPFields()
        fields[.contentType] = "application/json; charset=utf-8"
        fields[.cacheControl] = "no-store"
        fields[.connection] = "close"
        fields[.xRequestID] = self.settings.requestIDs.next()
        fields[.keelInstance] = self.settings.instanceID
        fields[.xContentTypeOptions] = "nosniff"
        let body = error.jsonBody()
        fields[.contentLength] = String(body.readableBytes)
        context.write(NIOAny(HTTPResponsePart.head(HTTPResponse(status: error.code.status, headerFields: fields))), promise: nil)
        context.write(NIOAny(HTTPResponsePart.body(body)), promise: nil)
        let channel = context.channel
        // Closing with the client's bytes unread would reset the connection and
        // could destroy the answer before the client reads it: half-close, read
        // and drop what still comes for --linger-timeout, then close.
        context.writeAndFlush(NIOAny(HTTPResponsePart.end(nil))).whenComplete { _ in
            channel.close(mode: .output, promise: nil)
        }
        self.timer = context.eventLoop.assumeIsolated().scheduleTask(in: self.settings.lingerTimeout) {
            channel.close(promise: nil)
        }
    }

    func close() {
        self.closing = true
        self.timer?.cancel()
        self.timer = nil
        self.channel?.close(promise: nil)
    }

    /// The error a parser failure answers, by what failed.
    func error(forParserFailure error: any Error) -> KeelError {
        switch error {
        case let parserError as HTTPParserError:
            switch parserError {
            case .headerOverflow:
                if !self.requestLineDone || self.requestLineBytes >= self.settings.maxHeaderFieldSize {
                    return KeelError(
                        .uriTooLong, "The request line is longer than \(self.settings.maxHeaderFieldSize) bytes.",
                        hint: "Send long input in a request body instead of the URL.")
                }
                return KeelError(
                    .headersTooLarge,
                    "The request's headers exceed \(self.settings.maxHeaderFieldSize) bytes for one field or \(self.settings.maxHeaderListSize) in all.",
                    hint: "Send fewer or smaller headers (cookies from other apps on the same domain add up).")
            case .invalidVersion:
                return KeelError(.httpVersionNotSupported, "Only HTTP/1.0 and HTTP/1.1 are served here.", hint: "Send HTTP/1.1.")
            case .invalidMethod:
                return KeelError(.notImplemented, "The request's method is not one this server knows.", hint: "The README's HTTP API table lists each route's methods.")
            default:
                return KeelError(.badRequest, "The request is not valid HTTP/1.1 (\(parserError)).", hint: "Check the request line, headers and body framing.")
            }
        default:
            return KeelError(.badRequest, "The request could not be read as HTTP/1.1.", hint: "Check the request line, method and target.")
        }
    }
}

/// Before the HTTP parser: sees every byte the client sends, so it knows
/// when a request has begun (the header timeout starts) and when a body
/// makes progress, which the parser does not tell until a part is complete.
final class RawConnectionGuard: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = IOData
    typealias OutboundOut = IOData

    let state: ConnectionGuardState

    init(state: ConnectionGuardState) {
        self.state = state
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.state.channel = context.channel
        self.state.enter(.idle, on: context.eventLoop)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.state.bytesArrived(self.unwrapInboundIn(data), on: context.eventLoop)
        context.fireChannelRead(data)
    }

    func read(context: ChannelHandlerContext) {
        self.state.serverRead()
        context.read()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.state.closed()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .inputClosed? = event as? ChannelEvent { self.state.markClientGone() }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.state.closed()
        context.fireChannelInactive()
    }

    /// Calls `watcher` once when the client of `channel` closes its side or
    /// the connection drops, during the response under way (never, in
    /// process, where no socket is guarded).
    static func watchClientGone(_ channel: any Channel, _ watcher: @escaping @Sendable () -> Void) async {
        try? await channel.eventLoop.submit {
            try channel.pipeline.syncOperations.handler(type: RawConnectionGuard.self).state.watchClientGone(watcher)
        }.get()
    }
}

/// After the HTTP parser: sees requests and responses as parts, answers
/// `Expect: 100-continue`, and answers requests the parser refused with
/// Keel's JSON error (Hummingbird would send an empty 400).
final class TypedConnectionGuard: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    let state: ConnectionGuardState
    /// Whether the request being read has had its head passed on.
    private var inRequest = false

    init(state: ConnectionGuardState) {
        self.state = state
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.state.typedContext = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.state.typedContext = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // A refused request's parts go nowhere.
        if self.state.isClosing { return }
        switch self.unwrapInboundIn(data) {
        case .head(let head):
            if let expect = head.headerFields[.expect], expect.lowercased() != "100-continue" {
                self.state.refuse(KeelError(.expectationFailed, "Expect: \(expect) is not supported.", hint: "Only Expect: 100-continue is."))
                return
            }
            self.inRequest = true
            self.state.requestHead(on: context.eventLoop)
            // The body is read as the handler asks for it; say so now, so a client
            // like curl does not wait a second before sending it. Not behind a
            // response still in flight (a pipelining client): it would land inside it.
            if head.headerFields[.expect] != nil, self.state.outstanding == 1 {
                self.state.settings.metrics.continues.increment()
                context.writeAndFlush(self.wrapOutboundOut(.head(HTTPResponse(status: .continue))), promise: nil)
            }
        case .body:
            break
        case .end:
            self.inRequest = false
            self.state.requestEnd(on: context.eventLoop)
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = self.unwrapOutboundIn(data) {
            self.state.responseEnd(on: context.eventLoop)
        }
        context.write(data, promise: promise)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A failure before a request's head reached the application: nobody
        // else can answer it. One inside a body reaches the handler reading
        // it, which answers 400 through the error middleware.
        let isParseFailure = error is HTTPParserError || error is HTTP1TypeConversionError
        // The rest of an early-answered body is only dropped: broken, it ends the
        // connection, not a second answer.
        if isParseFailure, self.state.phase == .lingering {
            self.state.close()
            return
        }
        guard isParseFailure, !self.inRequest else {
            context.fireErrorCaught(error)
            return
        }
        self.state.settings.metrics.malformed.increment()
        self.state.settings.logger.debug("refused a malformed request", metadata: ["keel.error.detail": "\(error)"])
        self.state.refuse(self.state.error(forParserFailure: error))
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.state.closed()
        context.fireChannelInactive()
    }
}
