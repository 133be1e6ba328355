/// One message of an AWS event-stream (`application/vnd.amazon.eventstream`),
/// the binary framing of Bedrock's ConverseStream: headers that say what the
/// message is, and a payload (JSON for Bedrock) that says the rest.
public struct EventStreamMessage: Sendable, Equatable {
    /// Header names are unique within a message: a frame that repeats one is
    /// refused (as botocore refuses it).
    public var headers: [String: EventStreamHeaderValue]
    public var payload: [UInt8]

    public init(headers: [String: EventStreamHeaderValue] = [:], payload: [UInt8] = []) {
        self.headers = headers
        self.payload = payload
    }

    /// What the `:message-type` header says a message is.
    public enum MessageType: String, Sendable, Equatable {
        /// A modeled event: `:event-type` names it.
        case event
        /// A modeled exception of the service (throttling, validation):
        /// `:exception-type` names it, the payload describes it.
        case exception
        /// An unmodeled error: `:error-code` and `:error-message` describe it.
        case error
    }

    /// `:message-type`, or `nil` when absent or not one of the three known.
    public var messageType: MessageType? {
        self.headers[":message-type"]?.stringValue.flatMap(MessageType.init(rawValue:))
    }

    /// `:event-type`, such as `contentBlockDelta` or `messageStop`.
    public var eventType: String? { self.headers[":event-type"]?.stringValue }

    /// `:exception-type`, such as `throttlingException`.
    public var exceptionType: String? { self.headers[":exception-type"]?.stringValue }

    /// `:content-type` of the payload, such as `application/json`.
    public var contentType: String? { self.headers[":content-type"]?.stringValue }

    /// `:error-code` of an ``MessageType/error`` message.
    public var errorCode: String? { self.headers[":error-code"]?.stringValue }

    /// `:error-message` of an ``MessageType/error`` message.
    public var errorMessage: String? { self.headers[":error-message"]?.stringValue }
}
