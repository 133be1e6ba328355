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
import Synchronization

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

/// The connections this process holds, and the cap that running out of
/// file descriptors sets below `--max-connections` (shared by the limit
/// and the accept-error reporter, both on the listener's event loop).
final class ConnectionCount: Sendable {
    let open = Atomic<Int>(0)
    let cap = Atomic<Int>(Int.max)
    /// When the cap last fell (uptime nanoseconds); it lifts a minute later.
    private let loweredAt = Atomic<UInt64>(0)
    static let recovery: UInt64 = 60_000_000_000

    /// The cap in force: lifted once descriptors have not run out for a minute
    /// (whatever held them may have let go).
    func currentCap() -> Int {
        let cap = self.cap.load(ordering: .relaxed)
        guard cap != Int.max else { return cap }
        if NIODeadline.now().uptimeNanoseconds - self.loweredAt.load(ordering: .relaxed) > Self.recovery {
            self.cap.store(Int.max, ordering: .relaxed)
            return Int.max
        }
        return cap
    }

    /// Descriptors kept free below the point where accepting failed: for the
    /// store, upload files, and libdispatch, which traps when its thread-pool
    /// monitor cannot open /proc files.
    static let reserve = 16

    /// Called when an accept failed for want of descriptors: no more
    /// connections than now, less the reserve. Returns the new cap if it fell.
    func lowerCap() -> Int? {
        let target = max(1, self.open.load(ordering: .relaxed) - Self.reserve)
        self.loweredAt.store(NIODeadline.now().uptimeNanoseconds, ordering: .relaxed)
        let current = self.cap.load(ordering: .relaxed)
        guard target < current else { return nil }
        self.cap.store(target, ordering: .relaxed)
        return target
    }
}

/// `--max-connections`: past it (or past the cap running out of descriptors
/// set), the server stops accepting (connections wait in the listen backlog)
/// until one closes; the first refusal of an episode is logged, every state
/// is in `keel_connections_open` and `keel_connection_limit_reached_total`.
struct ConnectionLimit: AvailableConnectionsDelegate {
    let maximum: Int
    let count: ConnectionCount
    let openGauge: Metrics.Gauge
    let reached: Metrics.Counter
    let logger: Logger
    var atLimit = false

    var limit: Int { min(self.maximum, self.count.currentCap()) }

    mutating func connectionOpened() {
        let open = self.count.open.add(1, ordering: .relaxed).newValue
        self.openGauge.record(open)
        if open >= self.limit, !self.atLimit {
            self.atLimit = true
            self.reached.increment()
            self.logger.warning(
                "connection limit reached; new connections wait in the listen backlog until one closes",
                metadata: ["keel.connections": "\(open)", "keel.connections.max": "\(self.limit)"]
            )
        }
    }

    mutating func connectionClosed() {
        let open = self.count.open.subtract(1, ordering: .relaxed).newValue
        self.openGauge.record(open)
        if open < self.limit { self.atLimit = false }
    }

    func isAcceptingNewConnections() -> Bool {
        self.count.open.load(ordering: .relaxed) < self.limit
    }
}

/// On the listening socket, at the head of its pipeline: what happens when
/// accepting fails for want of file descriptors (EMFILE, ENFILE).
///
/// NIO's accept backoff cannot stop this alone on Linux: a failed `accept`
/// leaves the listener's read pending and registered, so epoll reports the
/// waiting connection again at once and the event loop spins a core. The
/// way out is the one libuv and others use, with a larger reserve: spare
/// descriptors are kept open; on EMFILE they are closed, so the next accept
/// succeeds (which ends the pending read, and the backoff then waits a second
/// before the next), that one connection is closed at once (shed, counted,
/// never served), and the rest stay free for the store, upload files and
/// libdispatch (which traps when its thread-pool monitor cannot open /proc
/// files). The reserve is taken again once the cap below has lifted. The connection cap then drops to the
/// connections open less a reserve (``ConnectionCount``), so the process
/// stops accepting before the limit rather than living at it. Failures are
/// logged at most once a second, and counted.
final class AcceptErrorReporter: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = any Channel
    typealias InboundOut = any Channel

    let logger: Logger
    let failures: Metrics.Counter
    let shed: Metrics.Counter
    let count: ConnectionCount
    private var lastLogged: NIODeadline = .distantPast
    /// Descriptors held in reserve (of /dev/null), given back all at once when
    /// accepting fails: one lets the next accept succeed, the rest leave room
    /// for everything else while the connections that used the limit up close.
    private var spares: [Int32] = []
    private var shedNext = false
    private var removed = false

    init(logger: Logger, failures: Metrics.Counter, shed: Metrics.Counter, count: ConnectionCount) {
        self.logger = logger
        self.failures = failures
        self.shed = shed
        self.count = count
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.takeSpares()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.removed = true
        self.releaseSpares()
    }

    private func takeSpares() {
        while self.spares.count < ConnectionCount.reserve {
            let descriptor = open("/dev/null", O_RDONLY | O_CLOEXEC)
            guard descriptor >= 0 else { return }
            self.spares.append(descriptor)
        }
    }

    private func releaseSpares() {
        for descriptor in self.spares { close(descriptor) }
        self.spares.removeAll()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.failures.increment()
        var reason = "\(error)"
        if let error = error as? IOError, error.errnoCode == EMFILE || error.errnoCode == ENFILE {
            reason = "out of file descriptors (\(error)); raise the limit (ulimit -n, LimitNOFILE) or lower --max-connections"
            if !self.spares.isEmpty {
                self.releaseSpares()
                self.shedNext = true
            }
            // Stay below this point from now on, with room for everything else.
            if let cap = self.count.lowerCap() {
                self.logger.warning(
                    "out of file descriptors: serving at most \(cap) connections until descriptors have not run out for a minute",
                    metadata: ["keel.connections": "\(self.count.open.load(ordering: .relaxed))", "keel.connections.reserve": "\(ConnectionCount.reserve)"])
                // When the cap lifts, ask for the next connection: the limit's own
                // handler asks only when a connection closes, and long streams may not.
                let loop = context.eventLoop.assumeIsolated()
                loop.scheduleTask(in: .nanoseconds(Int64(ConnectionCount.recovery) + 1_000_000_000)) {
                    if !self.removed, self.count.currentCap() == Int.max { context.read() }
                }
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
        // The reserve again once the cap has lifted (descriptors have not run out
        // for a minute): taken earlier, it would put the process back at the limit.
        let loop = context.eventLoop.assumeIsolated()
        let count = self.count
        func retake() {
            guard !self.removed else { return }
            if count.currentCap() == Int.max {
                self.takeSpares()
            } else {
                loop.scheduleTask(in: .seconds(5)) { retake() }
            }
        }
        loop.scheduleTask(in: .seconds(5)) { retake() }
    }
}

extension ConnectionSettings {
    /// A warning when `--max-connections` is above what the file descriptor
    /// limit allows: past that, accepts fail (and the limit falls to where
    /// they did), and libdispatch can trap when it cannot open /proc files.
    public var fileDescriptorWarning: String? {
        guard self.maxConnections > 0 else { return nil }
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return nil }
        let soft = min(1_048_576, Int(clamping: limit.rlim_cur))
        let room = soft - min(256, soft / 4)
        guard self.maxConnections > room else { return nil }
        return "--max-connections \(self.maxConnections) is above the \(room) connections that the file descriptor limit (\(soft)) leaves room for; "
            + "raise it (ulimit -n, LimitNOFILE) or lower --max-connections"
    }

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
