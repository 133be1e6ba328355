import Hummingbird

/// Per-request context: Hummingbird's core storage plus Keel's request id.
public struct KeelRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// The request's id, from a valid `X-Request-Id` header or generated.
    public var requestID: String = ""

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
    }
}
