#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import HTTPTypes
import Hummingbird
import HummingbirdCore
import KeelCore
import Logging
import Metrics
import NIOCore
import NIOHTTPTypesHTTP1

/// Hummingbird's HTTP/1 child channel with Keel's connection guard around
/// its parser: the guard's raw half before the parser, its typed half
/// right after it (see ``ConnectionGuardState``).
struct KeelHTTP1Channel: ServerChildChannel {
    typealias Value = HTTP1Channel.Value

    let inner: HTTP1Channel
    let settings: ConnectionGuardSettings

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        let settings = self.settings
        return self.inner.setup(channel: channel, logger: logger).flatMapThrowing { value in
            let state = ConnectionGuardState(settings: settings)
            let operations = channel.pipeline.syncOperations
            try operations.addHandler(RawConnectionGuard(state: state), position: .first)
            let codec = try operations.handler(type: HTTP1ToHTTPServerCodec.self)
            try operations.addHandler(TypedConnectionGuard(state: state), position: .after(codec))
            return value
        }
    }

    func handle(value: Value, logger: Logger) async {
        await self.inner.handle(value: value, logger: logger)
    }

    static func builder(settings: ConnectionGuardSettings) -> HTTPServerBuilder {
        let configuration = HTTP1Channel.Configuration(
            httpDecoderConfiguration: .init(
                maxHeaderFieldSize: settings.maxHeaderFieldSize, maxHeaderListSize: settings.maxHeaderListSize, maxHeaderFieldCount: 200)
        )
        return HTTPServerBuilder { responder in
            KeelHTTP1Channel(inner: HTTP1Channel(responder: responder, configuration: configuration), settings: settings)
        }
    }
}

/// `--max-connections`: past it, the server stops accepting (connections
/// wait in the listen backlog) until one closes; the first refusal of an
/// episode is logged, every state is in `keel_connections_open` and
/// `keel_connection_limit_reached_total`.
struct ConnectionLimit: AvailableConnectionsDelegate {
    let maximum: Int
    let open: Metrics.Gauge
    let reached: Metrics.Counter
    let logger: Logger
    var count = 0
    var atLimit = false

    mutating func connectionOpened() {
        self.count += 1
        self.open.record(self.count)
        if self.count >= self.maximum, !self.atLimit {
            self.atLimit = true
            self.reached.increment()
            self.logger.warning(
                "connection limit reached; new connections wait in the listen backlog until one closes",
                metadata: ["keel.connections": "\(self.count)", "keel.connections.max": "\(self.maximum)"]
            )
        }
    }

    mutating func connectionClosed() {
        self.count -= 1
        self.open.record(self.count)
        if self.count < self.maximum { self.atLimit = false }
    }

    func isAcceptingNewConnections() -> Bool {
        self.count < self.maximum
    }
}

/// On the listening socket, at the head of its pipeline: what happens when
/// accepting fails for want of file descriptors (EMFILE, ENFILE).
///
/// NIO's accept backoff cannot stop this alone on Linux: a failed `accept`
/// leaves the listener's read pending and registered, so epoll reports the
/// waiting connection again at once and the event loop spins a core. The
/// way out is the one libuv and others use: a spare descriptor is kept open;
/// on EMFILE it is closed, so the next accept succeeds (which ends the
/// pending read, and the backoff then waits a second before the next), and
/// that one connection is closed at once: shed, counted, never served. The
/// spare is taken again a moment later. Failures are logged at most once a
/// second, and counted.
final class AcceptErrorReporter: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = any Channel
    typealias InboundOut = any Channel

    let logger: Logger
    let failures: Metrics.Counter
    let shed: Metrics.Counter
    private var lastLogged: NIODeadline = .distantPast
    private var spare: Int32 = -1
    private var shedNext = false

    init(logger: Logger, failures: Metrics.Counter, shed: Metrics.Counter) {
        self.logger = logger
        self.failures = failures
        self.shed = shed
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.takeSpare()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        if self.spare >= 0 { close(self.spare) }
        self.spare = -1
    }

    private func takeSpare() {
        if self.spare < 0 { self.spare = open("/dev/null", O_RDONLY | O_CLOEXEC) }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.failures.increment()
        var reason = "\(error)"
        if let error = error as? IOError, error.errnoCode == EMFILE || error.errnoCode == ENFILE {
            reason = "out of file descriptors (\(error)); raise the limit (ulimit -n, LimitNOFILE) or lower --max-connections"
            if self.spare >= 0 {
                close(self.spare)
                self.spare = -1
                self.shedNext = true
            }
        }
        let now = NIODeadline.now()
        if now - self.lastLogged >= .seconds(1) {
            self.lastLogged = now
            self.logger.error("accepting a connection failed; retrying in a second", metadata: ["keel.error.detail": "\(reason)"])
        }
        context.fireErrorCaught(error)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.fireChannelRead(data)
        guard self.shedNext else { return }
        self.shedNext = false
        self.shed.increment()
        let child = self.unwrapInboundIn(data)
        // After NIO has registered it (queued just now on its loop): closed unserved.
        child.eventLoop.execute { child.close(promise: nil) }
        // The spare again, once that descriptor is free.
        let loop = context.eventLoop.assumeIsolated()
        loop.scheduleTask(in: .milliseconds(100)) { self.takeSpare() }
    }
}

extension ConnectionSettings {
    /// The connection limit in force: the configured one, or what the
    /// process's file descriptor limit leaves after a reserve for the
    /// store, upload files and the listener.
    public var effectiveMaxConnections: Int {
        if self.maxConnections > 0 { return self.maxConnections }
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 1024 }
        let soft = min(1_048_576, Int(clamping: limit.rlim_cur))
        return max(16, soft - min(256, soft / 4))
    }
}

extension Duration {
    /// The same span as NIO's `TimeAmount`.
    var timeAmount: TimeAmount {
        let (seconds, attoseconds) = self.components
        return .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}
