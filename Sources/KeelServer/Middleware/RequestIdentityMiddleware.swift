import Hummingbird
import KeelCore
import Logging

/// Gives every request an id (a valid incoming `X-Request-Id` or a new one),
/// makes it part of every log line written while handling it, and stamps `X-Request-Id` and
/// `Keel-Instance` on every response.
struct RequestIdentityMiddleware: RouterMiddleware {
    typealias Context = KeelRequestContext
    let instanceID: String
    let drain: DrainState
    let ids = RequestIDGenerator()

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var context = context
        let requestID = Self.acceptableID(request.headers[.xRequestID]) ?? self.ids.next()
        context.requestID = requestID
        // Log lines get the id from a task local (see RequestLogMetadata):
        // setting logger metadata here would re-render it on every request.
        var response = try await RequestLogMetadata.$requestID.withValue(requestID) {
            try await next(request, context)
        }
        response.headers[.xRequestID] = requestID
        response.headers[.keelInstance] = self.instanceID
        // Downloads carry the uploader's content type; no response is to be sniffed into another.
        response.headers[.xContentTypeOptions] = "nosniff"
        // The server closes such connections; say so, as RFC 9112 asks, so
        // clients do not try to reuse the socket.
        // A token list; checked without Foundation's `contains`, which
        // bridges through NSString.
        if let connection = request.headers[.connection],
            connection.split(separator: ",").contains(where: { $0.trimmingBlanks().lowercased() == "close" })
        {
            response.headers[.connection] = "close"
        } else if self.drain.isDraining {
            // Draining: ask clients and proxies not to reuse this connection, so their
            // keep-alive pools empty before the listener closes.
            response.headers[.connection] = "close"
        }
        return response
    }

    /// Accepts a client's id only if it is short and plain, so it is safe in logs.
    static func acceptableID(_ value: String?) -> String? {
        guard let value, (1...128).contains(value.utf8.count) else { return nil }
        let allowed = value.utf8.allSatisfy { byte in
            (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A) || byte == 0x2D || byte == 0x5F || byte == 0x2E
        }
        return allowed ? value : nil
    }
}
