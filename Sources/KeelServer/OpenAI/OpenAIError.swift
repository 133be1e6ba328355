import Hummingbird
import KeelCore
import KeelModels

/// An error as OpenAI's API writes it: `{"error": {"message", "type",
/// "param", "code"}}` with the matching status, so the official clients
/// raise their usual exceptions (`AuthenticationError`, `NotFoundError`,
/// `RateLimitError`, …).
struct OpenAIError: Error, Sendable {
    var status: HTTPResponse.Status
    var message: String
    var type: String
    var code: String?
    var param: String?
    var retryAfterSeconds: Int?

    init(_ status: HTTPResponse.Status, _ message: String, type: String? = nil, code: String? = nil, param: String? = nil, retryAfterSeconds: Int? = nil) {
        self.status = status
        self.message = message
        self.type = type ?? Self.type(for: status)
        self.code = code
        self.param = param
        self.retryAfterSeconds = retryAfterSeconds
    }

    static func invalid(_ message: String, param: String? = nil, code: String? = nil) -> OpenAIError {
        OpenAIError(.badRequest, message, code: code, param: param)
    }

    static func type(for status: HTTPResponse.Status) -> String {
        switch status.code {
        case 401: "authentication_error"
        case 403: "permission_error"
        case 429: "rate_limit_error"
        case 400..<500: "invalid_request_error"
        default: "server_error"
        }
    }

    var json: JSONValue {
        .object([
            "message": .string(self.message), "type": .string(self.type), "param": self.param.map(JSONValue.string) ?? .null,
            "code": self.code.map(JSONValue.string) ?? .null,
        ])
    }

    func response() -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/json; charset=utf-8"
        headers[.cacheControl] = "no-store"
        if let seconds = self.retryAfterSeconds { headers[.retryAfter] = String(max(1, seconds)) }
        return Response(status: self.status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: JSONValue.object(["error": self.json]).serialized())))
    }

    /// Any error a `/v1` route meets, in OpenAI's shape. Keel's own errors
    /// keep their status and code; the key's and the router's are mapped.
    static func from(_ error: any Error, request: Request) -> OpenAIError {
        switch error {
        case let error as OpenAIError:
            return error
        case let failure as APIKeyFailure:
            return Self.from(failure)
        case let error as RouterError:
            let seconds = error.retryAfter.map { Int($0.timeInterval.rounded(.up)) }
            let status = HTTPResponse.Status(code: error.status)
            let code = error.code == .unknownModel ? "model_not_found" : error.code.rawValue
            return OpenAIError(status, error.message, code: code, param: error.code == .unknownModel ? "model" : nil, retryAfterSeconds: seconds)
        default:
            let keel = KeelError.from(error, request: request)
            let message = keel.hint.map { "\(keel.message) \($0)" } ?? keel.message
            return OpenAIError(keel.code.status, message, code: keel.code.rawValue, retryAfterSeconds: keel.retryAfterSeconds)
        }
    }

    static func from(_ failure: APIKeyFailure) -> OpenAIError {
        switch failure {
        case .missing:
            OpenAIError(
                .unauthorized, "You didn't provide an API key. Send it as 'Authorization: Bearer sk-keel-…' (keys are made with 'keel keys create').",
                code: "missing_api_key")
        case .invalid:
            OpenAIError(.unauthorized, "Incorrect API key provided.", code: "invalid_api_key")
        case .revoked:
            OpenAIError(.unauthorized, "This API key has been revoked.", code: "invalid_api_key")
        case .expired:
            OpenAIError(.unauthorized, "This API key has expired.", code: "invalid_api_key")
        case .rateLimited(let retryAfter, let limit):
            OpenAIError(
                .tooManyRequests,
                "Rate limit reached for this API key: \(limit) requests per minute. Try again in \(APIKeyFailure.wholeSeconds(retryAfter)) s.",
                type: "requests", code: "rate_limit_exceeded", retryAfterSeconds: APIKeyFailure.wholeSeconds(retryAfter))
        }
    }
}

/// A `/v1` route whose every error is answered in OpenAI's shape.
func openAIRoute(
    _ handler: @escaping @Sendable (Request, KeelRequestContext) async throws -> Response
) -> @Sendable (Request, KeelRequestContext) async throws -> Response {
    { request, context in
        do {
            return try await handler(request, context)
        } catch {
            return OpenAIError.from(error, request: request).response()
        }
    }
}
