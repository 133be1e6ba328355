import HTTPTypes

extension HTTPField.Name {
    static let keelInstance = Self("Keel-Instance")!
    /// The job a route started and streams at once (`POST /api/chats/{id}/messages`).
    static let keelJobID = Self("Keel-Job-Id")!
    static let keelMessageID = Self("Keel-Message-Id")!
    static let xRequestID = Self("X-Request-Id")!
    static let xForwardedProto = Self("X-Forwarded-Proto")!
    static let xAccelBuffering = Self("X-Accel-Buffering")!
    static let forwardedHeader = Self("Forwarded")!
    static let idempotencyKey = Self("Idempotency-Key")!
    static let idempotentReplayed = Self("Idempotent-Replayed")!
    static let lastEventID = Self("Last-Event-ID")!
    static let xForwardedFor = Self("X-Forwarded-For")!
    static let xRealIP = Self("X-Real-IP")!
    static let xContentTypeOptions = Self("X-Content-Type-Options")!
}

extension HTTPField.Name {
    static let tusResumable = Self("Tus-Resumable")!
    static let tusVersion = Self("Tus-Version")!
    static let tusExtension = Self("Tus-Extension")!
    static let tusMaxSize = Self("Tus-Max-Size")!
    static let tusChecksumAlgorithm = Self("Tus-Checksum-Algorithm")!
    static let uploadOffset = Self("Upload-Offset")!
    static let uploadLength = Self("Upload-Length")!
    static let uploadDeferLength = Self("Upload-Defer-Length")!
    static let uploadMetadata = Self("Upload-Metadata")!
    static let uploadExpires = Self("Upload-Expires")!
    static let uploadChecksum = Self("Upload-Checksum")!
    static let uploadConcat = Self("Upload-Concat")!
}
