import Hummingbird
import KeelCore
import Logging

/// Turns every error escaping a handler into Keel's JSON error response, so
/// the middleware around it (CORS, identity, metrics) sees a response.
struct ErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch {
            let keelError = KeelError.from(error, request: request)
            if keelError.code == .internalError || keelError.code == .storeUnavailable {
                context.logger.error(
                    "request failed",
                    metadata: [
                        "keel.error.code": "\(keelError.code.rawValue)",
                        "keel.error.detail": "\(keelError.detail ?? keelError.message)",
                    ]
                )
            }
            var headers = HTTPFields()
            if let error = error as? HTTPError {
                headers.append(contentsOf: error.headers.filter { $0.name != .contentType && $0.name != .contentLength })
            }
            return keelError.response(headers: headers)
        }
    }
}
