import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// Creates jobs over keep-alive bare connections (``BareHTTP``): each
/// connection sends `POST /api/jobs`, waits for the 202 and sends the next,
/// until the shared count reaches the total. AsyncHTTPClient's 32 clients
/// took CPU the server's creation path could use.
enum JobCreator {
    /// Creates `total` jobs over `connections` connections; returns each
    /// request's latency in milliseconds.
    static func run(_ target: BareHTTP.Target, bearer: String, body: String, total: Int, connections: Int) async throws -> [Double] {
        let counter = JobCounter(total: total)
        var head = BareHTTP.head(.POST, target, uri: "/api/jobs", bearer: bearer)
        head.headers.add(name: "Content-Type", value: "application/json")
        head.headers.add(name: "Content-Length", value: "\(body.utf8.count)")
        let request = head
        var futures: [EventLoopFuture<[Double]>] = []
        for _ in 0..<connections {
            let eventLoop = MultiThreadedEventLoopGroup.singleton.next()
            let promise = eventLoop.makePromise(of: [Double].self)
            BareHTTP.connect(target, on: eventLoop) { CreatingHandler(request: request, body: body, counter: counter, promise: promise) }
                .whenFailure { promise.fail($0) }
            futures.append(promise.futureResult)
        }
        var latencies: [Double] = []
        latencies.reserveCapacity(total)
        for future in futures { latencies += try await future.get() }
        return latencies
    }
}

/// Hands out request numbers to the connections until the total is reached.
final class JobCounter: Sendable {
    private let issued = Atomic<Int>(0)
    let total: Int

    init(total: Int) { self.total = total }

    /// Whether one more request may be sent.
    func take() -> Bool { self.issued.wrappingAdd(1, ordering: .relaxed).newValue <= self.total }
}

/// One connection's loop: send, wait for the 202, send the next.
private final class CreatingHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    private let request: HTTPRequestHead
    private let body: String
    private let counter: JobCounter
    private let promise: EventLoopPromise<[Double]>
    private var latencies: [Double] = []
    private var sent = ContinuousClock.now
    private var status: UInt = 0

    init(request: HTTPRequestHead, body: String, counter: JobCounter, promise: EventLoopPromise<[Double]>) {
        self.request = request
        self.body = body
        self.counter = counter
        self.promise = promise
    }

    func channelActive(context: ChannelHandlerContext) {
        self.sendNext(context: context)
        context.fireChannelActive()
    }

    private func sendNext(context: ChannelHandlerContext) {
        guard self.counter.take() else {
            self.promise.succeed(self.latencies)
            context.close(promise: nil)
            return
        }
        self.sent = .now
        context.write(self.wrapOutboundOut(.head(self.request)), promise: nil)
        context.write(self.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: self.body)))), promise: nil)
        context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.unwrapInboundIn(data) {
        case .head(let head):
            self.status = head.status.code
        case .body:
            break
        case .end:
            guard self.status == 202 else {
                self.promise.fail(BareHTTP.Failure("job creation answered \(self.status)"))
                context.close(promise: nil)
                return
            }
            self.latencies.append((ContinuousClock.now - self.sent).milliseconds)
            self.sendNext(context: context)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.promise.fail(BareHTTP.Failure("the server closed a connection after \(self.latencies.count) jobs"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.promise.fail(error)
        context.close(promise: nil)
    }
}
