import Hummingbird
import KeelCore
import NIOCore

extension Request {
    /// Collects a JSON body of at most `limit` bytes; an empty body is `nil`.
    ///
    /// Refuses a declared `Content-Length` over the limit before reading, and
    /// content types other than JSON, or a body with no type at all, with 415.
    mutating func jsonBody(limit: Int, acceptedTypes: [String] = ["application/json"]) async throws -> JSONValue? {
        if let contentType = self.headers[.contentType] {
            let mediaType = contentType.split(separator: ";").first.map { $0.trimmingBlanks().lowercased() } ?? ""
            guard acceptedTypes.contains(mediaType) else {
                throw KeelError(
                    .unsupportedMediaType,
                    "Content-Type '\(contentType)' is not accepted here.",
                    hint: "Send \(acceptedTypes.joined(separator: " or "))."
                )
            }
        }
        if let declared = self.headers[.contentLength].flatMap(Int.init), declared > limit {
            throw Self.tooLarge(limit: limit)
        }
        let buffer: ByteBuffer
        do {
            buffer = try await self.collectBody(upTo: limit)
        } catch is NIOTooManyBytesError {
            throw Self.tooLarge(limit: limit)
        }
        guard buffer.readableBytes > 0 else { return nil }
        // A body without a type is not taken for JSON: a form post from another
        // site (text/plain is the only type needing no preflight) must not be.
        guard self.headers[.contentType] != nil else {
            throw KeelError(.unsupportedMediaType, "The request has a body but no Content-Type.", hint: "Send Content-Type: \(acceptedTypes[0]).")
        }
        return try JSONValue.parse(buffer.readableBytesView)
    }

    private static func tooLarge(limit: Int) -> KeelError {
        KeelError(.payloadTooLarge, "The request body exceeds \(limit) bytes.", hint: "Send less, or raise --max-body-bytes.")
    }

    /// Whether the client reached us over HTTPS, directly or through a proxy
    /// that says so in `X-Forwarded-Proto` or `Forwarded`.
    var isSecure: Bool {
        if self.uri.scheme == .https { return true }
        if let forwarded = self.headers[.xForwardedProto] {
            return forwarded.split(separator: ",").first?.trimmingBlanks().lowercased() == "https"
        }
        if let forwarded = self.headers[.forwardedHeader] {
            return forwarded.lowercased().contains("proto=https")
        }
        return false
    }
}

extension Substring {
    /// Without leading and trailing spaces and tabs (HTTP's optional
    /// whitespace). Foundation's `trimmingCharacters(in:)` bridges through
    /// `NSString`, which showed in profiles: this runs for every JSON body.
    func trimmingBlanks() -> Substring {
        let isBlank: (Character) -> Bool = { $0 == " " || $0 == "\t" }
        guard let first = self.firstIndex(where: { !isBlank($0) }), let last = self.lastIndex(where: { !isBlank($0) }) else { return "" }
        return self[first...last]
    }
}
