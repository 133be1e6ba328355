import Hummingbird
import NIOCore

/// Per-request context: Hummingbird's core storage plus Keel's request id
/// and what Keel needs of the connection.
public struct KeelRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// The request's id, from a valid `X-Request-Id` header or generated.
    public var requestID: String = ""
    /// The TCP peer (nil in process, where there is no socket).
    public let peer: SocketAddress?
    /// The connection, for watching whether its client is still there.
    let channel: any Channel

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.peer = source.channel.remoteAddress
        self.channel = source.channel
    }

    /// The peer's IP address as text, if it has one.
    var peerAddress: String? { self.peer?.ipAddress }
}
