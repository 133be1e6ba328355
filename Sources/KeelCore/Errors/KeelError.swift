/// The one error type Keel's layers throw to each other.
///
/// Every case has a stable string ``Code`` that clients may branch on; the
/// server layer alone maps codes to HTTP statuses. `message` says what went
/// wrong, `hint` says what the caller can do about it.
public struct KeelError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Stable, documented error codes. Never rename a case's raw value.
    public enum Code: String, Sendable, CaseIterable {
        case badRequest = "bad_request"
        case invalidJSON = "invalid_json"
        case invalidInput = "invalid_input"
        case sessionRequired = "session_required"
        case sessionInvalid = "session_invalid"
        case sessionExpired = "session_expired"
        case notFound = "not_found"
        case methodNotAllowed = "method_not_allowed"
        case versionConflict = "version_conflict"
        case idempotencyKeyReused = "idempotency_key_reused"
        case leaseLost = "lease_lost"
        case jobFinished = "job_finished"
        case unknownJobType = "unknown_job_type"
        case invalidCursor = "invalid_cursor"
        case payloadTooLarge = "payload_too_large"
        case sessionDataTooLarge = "session_data_too_large"
        case unsupportedMediaType = "unsupported_media_type"
        case corsOriginNotAllowed = "cors_origin_not_allowed"
        case draining = "draining"
        case storeUnavailable = "store_unavailable"
        case schemaTooNew = "schema_too_new"
        case invalidConfiguration = "invalid_configuration"
        case internalError = "internal_error"
        case offsetMismatch = "offset_mismatch"
        case checksumMismatch = "checksum_mismatch"
        case uploadLocked = "upload_locked"
        case uploadExpired = "upload_expired"
        case uploadIncomplete = "upload_incomplete"
        case tusVersionUnsupported = "tus_version_unsupported"
        case rangeNotSatisfiable = "range_not_satisfiable"
        case rateLimited = "rate_limited"
        case tooManyJobs = "too_many_jobs"
        case opsTokenRequired = "ops_token_required"
        case adminTokenRequired = "admin_token_required"
        case requestTimeout = "request_timeout"
        case headersTooLarge = "headers_too_large"
        case uriTooLong = "uri_too_long"
        case notImplemented = "not_implemented"
        case httpVersionNotSupported = "http_version_not_supported"
        case expectationFailed = "expectation_failed"
        case unsupportedDocumentType = "unsupported_document_type"
        case documentTooLarge = "document_too_large"
        case documentNotReady = "document_not_ready"
        case noModelsConfigured = "no_models_configured"
        case keyNameTaken = "key_name_taken"
    }

    public var code: Code
    public var message: String
    public var hint: String?
    /// Detail for the server's logs only, never sent to clients (it may name
    /// hosts, SQL or files).
    public var detail: String?
    /// Whole seconds after which a refused request may succeed (`Retry-After`).
    public var retryAfterSeconds: Int?

    public init(_ code: Code, _ message: String, hint: String? = nil, detail: String? = nil, retryAfterSeconds: Int? = nil) {
        self.code = code
        self.message = message
        self.hint = hint
        self.detail = detail
        self.retryAfterSeconds = retryAfterSeconds
    }

    public var description: String {
        if let hint { return "\(self.code.rawValue): \(self.message) (\(hint))" }
        return "\(self.code.rawValue): \(self.message)"
    }
}

extension KeelError {
    public static func storeUnavailable(_ underlying: any Error) -> KeelError {
        KeelError(
            .storeUnavailable,
            "The store failed to answer.",
            hint: "Retry shortly; check /system-health and the server's logs.",
            detail: String(reflecting: underlying)
        )
    }

    public static func invalidConfiguration(_ message: String, hint: String? = nil) -> KeelError {
        KeelError(.invalidConfiguration, message, hint: hint)
    }
}

extension KeelError {
    public static func versionConflict(expected: Int64, actual: Int64) -> KeelError {
        KeelError(
            .versionConflict,
            "The session is at version \(actual), not \(expected): someone else changed it.",
            hint: "Read it again (GET) and reapply your change with the new ETag in If-Match."
        )
    }
}
