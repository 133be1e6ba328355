import Logging

/// Puts the current request's id into every log line as `keel.request.id`.
/// Install ``provider`` when bootstrapping swift-log.
public enum RequestLogMetadata {
    @TaskLocal static var requestID: String?

    public static let provider = Logger.MetadataProvider {
        guard let requestID = Self.requestID else { return [:] }
        return ["keel.request.id": .string(requestID)]
    }
}
