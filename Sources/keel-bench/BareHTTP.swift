import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

/// Bare SwiftNIO HTTP/1.1 connections for the load generators: NIO's HTTP
/// codec and one handler of ours per channel, no connection pool and no
/// Swift task per request. The generators share the server's two cores, so
/// their own work is part of every figure; these do little more than the
/// kernel does.
enum BareHTTP {
    /// An `http://` URL, its server's address resolved once.
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
                throw Failure("only http:// URLs are supported: \(url)")
            }
            self.host = host
            self.port = components.port ?? 80
            let query = components.percentEncodedQuery.map { "?" + $0 } ?? ""
            self.path = (components.percentEncodedPath.isEmpty ? "/" : components.percentEncodedPath) + query
            self.address = try SocketAddress.makeAddressResolvingHost(host, port: self.port)
        }
    }

    struct Failure: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }

    /// A request head for `target` (its path unless `uri` is given), with
    /// `Host` and, when given, the bearer token.
    static func head(_ method: HTTPMethod, _ target: Target, uri: String? = nil, bearer: String?) -> HTTPRequestHead {
        var head = HTTPRequestHead(version: .http1_1, method: method, uri: uri ?? target.path)
        head.headers.add(name: "Host", value: "\(target.host):\(target.port)")
        if let bearer { head.headers.add(name: "Authorization", value: "Bearer \(bearer)") }
        return head
    }

    /// Connects to `target` on `eventLoop`: NIO's HTTP client codec, then the
    /// handler `makeHandler` builds on the channel's loop.
    static func connect<Handler: ChannelHandler>(
        _ target: Target, on eventLoop: any EventLoop, _ makeHandler: @escaping @Sendable () -> Handler
    ) -> EventLoopFuture<any Channel> {
        ClientBootstrap(group: eventLoop)
            .connectTimeout(.seconds(30))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(makeHandler())
                }
            }
            .connect(to: target.address)
    }

    /// Connects with `makeHandler` (which completes `promise`) and fails the
    /// promise, closing the channel, if it is not complete within `timeout`.
    static func exchange<Handler: ChannelHandler, Outcome>(
        _ target: Target, on eventLoop: any EventLoop, promise: EventLoopPromise<Outcome>, timeout: TimeAmount, whatTimedOut: String,
        _ makeHandler: @escaping @Sendable () -> Handler
    ) -> EventLoopFuture<Outcome> {
        Self.connect(target, on: eventLoop, makeHandler).whenComplete { result in
            switch result {
            case .success(let channel):
                let timer = eventLoop.scheduleTask(in: timeout) {
                    promise.fail(Failure("\(whatTimedOut) after \(timeout)"))
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
