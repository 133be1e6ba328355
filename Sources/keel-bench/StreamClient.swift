import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

/// A bare SwiftNIO HTTP/1.1 client for the stream burst: one channel per
/// stream with only NIO's HTTP codec in its pipeline, no connection pool.
/// With 1,000 streams opened at once on the same two cores as the server,
/// the client's own work is part of every figure; this one does little more
/// than the kernel does, and resolves the server's address once.
enum StreamClient {
    struct Target: Sendable {
        var host: String
        var port: Int
        var path: String
        /// Resolved once: NIO's `connect(host:port:)` runs getaddrinfo on a
        /// thread pool for every connection, even for a literal address,
        /// and with 1,000 connections at once that alone took 100+ ms.
        var address: SocketAddress

        init(_ url: String) throws {
            guard let components = URLComponents(string: url), components.scheme == "http", let host = components.host else {
                throw StreamClientError("only http:// URLs are supported: \(url)")
            }
            self.host = host
            self.port = components.port ?? 80
            let query = components.percentEncodedQuery.map { "?" + $0 } ?? ""
            self.path = (components.percentEncodedPath.isEmpty ? "/" : components.percentEncodedPath) + query
            self.address = try SocketAddress.makeAddressResolvingHost(host, port: self.port)
        }
    }

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
    static func burst(_ targets: [Target], count: Int, bearer: String?) async throws -> [EventLoopFuture<Outcome>] {
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
    static func read(_ target: Target, bearer: String?, on eventLoop: any EventLoop, timeout: TimeAmount = .seconds(120)) -> EventLoopFuture<Outcome> {
        let promise = eventLoop.makePromise(of: Outcome.self)
        let started = ContinuousClock.now
        var head = HTTPRequestHead(version: .http1_1, method: .GET, uri: target.path)
        head.headers.add(name: "Host", value: "\(target.host):\(target.port)")
        head.headers.add(name: "Accept", value: "text/event-stream")
        if let bearer { head.headers.add(name: "Authorization", value: "Bearer \(bearer)") }
        let request = head
        ClientBootstrap(group: eventLoop)
            .connectTimeout(.seconds(30))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(StreamReader(request: request, started: started, promise: promise))
                }
            }
            .connect(to: target.address)
            .whenComplete { result in
                switch result {
                case .success(let channel):
                    let timer = eventLoop.scheduleTask(in: timeout) {
                        promise.fail(StreamClientError("stream still open after \(timeout)"))
                        channel.close(promise: nil)
                    }
                    promise.futureResult.whenComplete { _ in timer.cancel() }
                case .failure(let error):
                    promise.fail(error)
                }
            }
        return promise.futureResult
    }
}

struct StreamClientError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
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
