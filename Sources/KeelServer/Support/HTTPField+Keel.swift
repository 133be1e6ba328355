import HTTPTypes

extension HTTPField.Name {
    static let keelInstance = Self("Keel-Instance")!
    static let xRequestID = Self("X-Request-Id")!
    static let xForwardedProto = Self("X-Forwarded-Proto")!
    static let xAccelBuffering = Self("X-Accel-Buffering")!
    static let forwardedHeader = Self("Forwarded")!
    static let idempotencyKey = Self("Idempotency-Key")!
    static let idempotentReplayed = Self("Idempotent-Replayed")!
    static let lastEventID = Self("Last-Event-ID")!
}
