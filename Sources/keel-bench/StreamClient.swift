import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

/// The stream burst over bare connections (``BareHTTP``): one channel per
/// stream, started on the event loops.
enum StreamClient {
    /// What one stream saw: the time from starting the connect to the first
    /// event, and the whole body (HTTP chunking removed).
    struct Outcome: Sendable {
        var firstEvent: Double?
        var status: UInt
        var body: String
    }

    /// Opens `count` streams at once, each read to its end, spread over
    /// NIO's event loops and started on them: no Swift task per stream and
    /// no cross-thread hop per connect.
    static func burst(_ targets: [BareHTTP.Target], count: Int, bearer: String?) async throws -> [EventLoopFuture<Outcome>] {
        let loops = Array(MultiThreadedEventLoopGroup.singleton.makeIterator())
        var futures: [EventLoopFuture<Outcome>] = []
        for (index, loop) in loops.enumerated() {
            futures += try await loop.submit {
                stride(from: index, to: count, by: loops.count).map { read(targets[$0 % targets.count], bearer: bearer, on: loop) }
            }.get()
        }
        return futures
    }

    /// Opens one stream and reads it to its end.
    static func read(_ target: BareHTTP.Target, bearer: String?, on eventLoop: any EventLoop, timeout: TimeAmount = .seconds(120)) -> EventLoopFuture<Outcome> {
        let promise = eventLoop.makePromise(of: Outcome.self)
        let started = ContinuousClock.now
        var head = BareHTTP.head(.GET, target, bearer: bearer)
        head.headers.add(name: "Accept", value: "text/event-stream")
        let request = head
        return BareHTTP.exchange(target, on: eventLoop, promise: promise, timeout: timeout, whatTimedOut: "stream still open") {
            StreamReader(request: request, started: started, promise: promise)
        }
    }
}


/// Sends the request once connected, notes when the first event arrives and
/// collects the body until the response ends.
private final class StreamReader: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    private let request: HTTPRequestHead
    private let started: ContinuousClock.Instant
    private let promise: EventLoopPromise<StreamClient.Outcome>
    private var outcome = StreamClient.Outcome(firstEvent: nil, status: 0, body: "")

    init(request: HTTPRequestHead, started: ContinuousClock.Instant, promise: EventLoopPromise<StreamClient.Outcome>) {
        self.request = request
        self.started = started
        self.promise = promise
    }

    func channelActive(context: ChannelHandlerContext) {
        context.write(self.wrapOutboundOut(.head(self.request)), promise: nil)
        context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.unwrapInboundIn(data) {
        case .head(let head):
            self.outcome.status = head.status.code
        case .body(let buffer):
            let text = String(buffer: buffer)
            if self.outcome.firstEvent == nil, text.contains("id: ") || text.contains("event: ") {
                self.outcome.firstEvent = (ContinuousClock.now - self.started).milliseconds
            }
            self.outcome.body += text
        case .end:
            self.promise.succeed(self.outcome)
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        // Closed before the response ended: report what arrived; the caller
        // finds it incomplete.
        self.promise.succeed(self.outcome)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.promise.fail(error)
        context.close(promise: nil)
    }
}
