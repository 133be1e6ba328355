import Hummingbird
import KeelCore

/// CORS for an explicit allowlist of origins, with credentials.
///
/// Allowed origins get their own origin echoed (never `*` with credentials),
/// `Vary: Origin` on every response so caches keep origins apart, and
/// preflight answers listing the methods and headers the API uses.
struct CORSAllowlistMiddleware<Context: RequestContext>: RouterMiddleware {
    let policy: CORSPolicy
    let allowedMethods = "GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS"
    let allowedHeaders = [
        "authorization", "content-type", "idempotency-key", "if-match", "last-event-id", "x-request-id",
        "tus-resumable", "upload-length", "upload-offset", "upload-metadata", "upload-checksum", "upload-defer-length", "upload-concat",
    ]
    let exposedHeaders =
        "Keel-Instance, Keel-Job-Id, Keel-Message-Id, Idempotent-Replayed, X-Request-Id, ETag, Location, Retry-After, Tus-Resumable, Tus-Version, Tus-Extension, Tus-Max-Size, Tus-Checksum-Algorithm, Upload-Offset, Upload-Length, Upload-Metadata, Upload-Expires, Upload-Defer-Length"

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let origin = request.headers[.origin] else {
            var response = try await next(request, context)
            self.addVary(&response.headers)
            return response
        }
        let allowed = self.policy.allows(origin: origin)
        if request.method == .options, request.headers[.accessControlRequestMethod] != nil {
            guard allowed else {
                var response = KeelError(
                    .corsOriginNotAllowed,
                    "Origin \(origin) may not call this API.",
                    hint: "Add it to --cors-origins (KEEL_CORS_ORIGINS) exactly as the browser sends it."
                ).response()
                self.addVary(&response.headers)
                return response
            }
            var headers = HTTPFields()
            self.addAllowOrigin(origin, to: &headers)
            headers[.accessControlAllowMethods] = self.allowedMethods
            let requestedHeaders = request.headers[.accessControlRequestHeaders]?
                .split(separator: ",")
                .map { $0.trimmingCharacters(in: .whitespaces).lowercased() } ?? []
            let granted = requestedHeaders.filter { self.allowedHeaders.contains($0) }
            headers[.accessControlAllowHeaders] = (granted.isEmpty ? self.allowedHeaders : granted).joined(separator: ", ")
            headers[.accessControlMaxAge] = String(Int(self.policy.maxAge.timeInterval))
            return Response(status: .noContent, headers: headers)
        }
        var response = try await next(request, context)
        if allowed {
            self.addAllowOrigin(origin, to: &response.headers)
            response.headers[.accessControlExposeHeaders] = self.exposedHeaders
        }
        self.addVary(&response.headers)
        return response
    }

    private func addAllowOrigin(_ origin: String, to headers: inout HTTPFields) {
        if self.policy.allowsAnyOrigin && !self.policy.allowCredentials {
            headers[.accessControlAllowOrigin] = "*"
        } else {
            headers[.accessControlAllowOrigin] = origin
            if self.policy.allowCredentials {
                headers[.accessControlAllowCredentials] = "true"
            }
        }
    }

    private func addVary(_ headers: inout HTTPFields) {
        if let vary = headers[.vary] {
            if !vary.lowercased().contains("origin") { headers[.vary] = vary + ", Origin" }
        } else {
            headers[.vary] = "Origin"
        }
    }
}
