import Hummingbird
import KeelCore
import NIOCore
import NIOHTTP1
#if canImport(Glibc)
import Glibc
#endif

extension KeelError.Code {
    /// The HTTP status that answers an error with this code.
    var status: HTTPResponse.Status {
        switch self {
        case .badRequest, .invalidJSON, .invalidInput, .invalidCursor, .unknownJobType: .badRequest
        case .sessionRequired, .sessionInvalid, .sessionExpired: .unauthorized
        case .notFound: .notFound
        case .methodNotAllowed: .methodNotAllowed
        case .versionConflict: .preconditionFailed
        case .idempotencyKeyReused, .jobFinished: .conflict
        case .leaseLost: .conflict
        case .payloadTooLarge, .sessionDataTooLarge, .documentTooLarge: .contentTooLarge
        case .unsupportedMediaType, .unsupportedDocumentType: .unsupportedMediaType
        case .documentNotReady: .conflict
        case .keyNameTaken: .conflict
        case .corsOriginNotAllowed: .forbidden
        case .draining, .storeUnavailable, .schemaTooNew, .noModelsConfigured: .serviceUnavailable
        case .invalidConfiguration, .internalError: .internalServerError
        case .offsetMismatch, .uploadIncomplete: .conflict
        case .checksumMismatch: HTTPResponse.Status(code: 460, reasonPhrase: "Checksum Mismatch")
        case .uploadLocked: HTTPResponse.Status(code: 423, reasonPhrase: "Locked")
        case .uploadExpired: .gone
        case .tusVersionUnsupported: .preconditionFailed
        case .rangeNotSatisfiable: .rangeNotSatisfiable
        case .rateLimited, .tooManyJobs: .tooManyRequests
        case .opsTokenRequired, .adminTokenRequired: .unauthorized
        case .requestTimeout: .requestTimeout
        case .headersTooLarge: .requestHeaderFieldsTooLarge
        case .uriTooLong: .uriTooLong
        case .notImplemented: .notImplemented
        case .httpVersionNotSupported: .httpVersionNotSupported
        case .expectationFailed: .expectationFailed
        }
    }
}

extension KeelError {
    /// The error as Keel's JSON body `{"error": {"code", "message", "hint"}}`.
    func response(headers: HTTPFields = [:]) -> Response {
        var fields = headers
        fields[.contentType] = "application/json; charset=utf-8"
        fields[.cacheControl] = "no-store"
        if let seconds = self.retryAfterSeconds { fields[.retryAfter] = String(max(1, seconds)) }
        return Response(status: self.code.status, headers: fields, body: .init(byteBuffer: self.jsonBody()))
    }

    /// `{"error": {"code", "message", "hint"}}`.
    func jsonBody() -> ByteBuffer {
        var json = JSONWriter()
        json.object {
            $0.field("error") {
                $0.object {
                    $0.field("code", self.code.rawValue)
                    $0.field("message", self.message)
                    $0.field("hint", self.hint)
                }
            }
        }
        return ByteBuffer(string: json.text)
    }

    /// Translates any error escaping a handler into a ``KeelError``.
    static func from(_ error: any Error, request: Request) -> KeelError {
        switch error {
        case let error as KeelError:
            return error
        case let error as HTTPError:
            return KeelError.fromHTTPStatus(error.status, message: error.body, request: request)
        case let error as HTTPParserError:
            // The body broke off or was framed wrongly: the client's fault.
            return KeelError(.badRequest, "The request body is not valid HTTP/1.1 framing (\(error)).", hint: "Send exactly Content-Length bytes, or valid chunks.")
        case let error as IOError where error.errnoCode == ECONNRESET:
            return KeelError(.badRequest, "The client reset the connection while sending the request.")
        case is NIOTooManyBytesError:
            return KeelError(.payloadTooLarge, "The request body is too large.", hint: "See --max-body-bytes.")
        case let error as DecodingError:
            return KeelError(.invalidJSON, "The request body does not have the expected shape: \(error)")
        default:
            return KeelError(.internalError, "The server failed to handle the request.", hint: "Retry; report the X-Request-Id if it persists.", detail: String(reflecting: error))
        }
    }

    static func fromHTTPStatus(_ status: HTTPResponse.Status, message: String?, request: Request) -> KeelError {
        switch status {
        case .notFound:
            return KeelError(.notFound, message ?? "No route for \(request.method) \(request.uri.path).", hint: "See the HTTP API table in the README.")
        case .methodNotAllowed:
            return KeelError(.methodNotAllowed, message ?? "\(request.method) is not allowed on \(request.uri.path).", hint: "The Allow header lists the methods this path supports.")
        case .contentTooLarge:
            return KeelError(.payloadTooLarge, message ?? "The request body is too large.")
        case .badRequest:
            return KeelError(.badRequest, message ?? "The request is malformed.")
        case .unsupportedMediaType:
            return KeelError(.unsupportedMediaType, message ?? "Unsupported content type.")
        default:
            var error = KeelError(.internalError, message ?? status.reasonPhrase)
            if status.code < 500 { error.code = .badRequest }
            return error
        }
    }
}
