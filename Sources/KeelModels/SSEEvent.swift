/// One event dispatched by ``SSEDecoder``: what a browser's `EventSource`
/// would hand its listeners, plus the `retry` a block set.
public struct SSEEvent: Sendable, Equatable, CustomStringConvertible {
    /// The `event` field, or `"message"` when the block named none.
    public var type: String
    /// Every `data` line of the block, joined by `\n` (no trailing `\n`).
    public var data: String
    /// The last event ID in force when this event was dispatched. It persists
    /// across events, as a browser's `lastEventId` does; `nil` when empty.
    public var id: String?
    /// The reconnection time in milliseconds that a `retry` field in this
    /// event's own block set, `nil` when the block had none. The decoder's
    /// ``SSEDecoder/reconnectionTime`` keeps the value in force, including
    /// one set by a block with no data, which dispatches no event.
    public var retry: Int?

    public init(type: String = "message", data: String, id: String? = nil, retry: Int? = nil) {
        self.type = type
        self.data = data
        self.id = id
        self.retry = retry
    }

    public var description: String {
        var parts = ["type: \(self.type)", "data: \(self.data.debugDescription)"]
        if let id { parts.append("id: \(id.debugDescription)") }
        if let retry { parts.append("retry: \(retry)") }
        return "SSEEvent(\(parts.joined(separator: ", ")))"
    }
}
