/// Provider-neutral chat types: what the router speaks to every provider
/// client (OpenAI-compatible, Anthropic, Bedrock), whatever their wire format.

/// One message of a conversation.
public struct ChatMessage: Sendable, Equatable, Hashable {
    public enum Role: String, Sendable, Equatable, Hashable {
        case system
        case user
        case assistant
    }

    public var role: Role
    public var content: String

    public init(role: Role, content: String) {
        self.role = role
        self.content = content
    }

    public static func system(_ content: String) -> ChatMessage { ChatMessage(role: .system, content: content) }
    public static func user(_ content: String) -> ChatMessage { ChatMessage(role: .user, content: content) }
    public static func assistant(_ content: String) -> ChatMessage { ChatMessage(role: .assistant, content: content) }
}

/// One streamed chat request to one model of one provider.
public struct ChatRequest: Sendable, Equatable {
    /// The provider's own model id (not Keel's model name).
    public var model: String
    public var messages: [ChatMessage]
    public var maxTokens: Int?
    public var temperature: Double?
    /// Stop sequences; an empty list sends none.
    public var stop: [String]
    /// Ask the provider for token usage at the end of the stream.
    public var includeUsage: Bool
    /// Extended thinking: the most tokens the model may think for, or `nil`
    /// for none. Providers without a thinking knob ignore it.
    public var thinkingBudget: Int?
    /// `false` asks for the whole answer in one response instead of a
    /// stream, where the provider can (``ChatProvider/answersWhole``); the
    /// others stream as always. The events are the same either way.
    public var stream: Bool

    public init(
        model: String, messages: [ChatMessage], maxTokens: Int? = nil, temperature: Double? = nil,
        stop: [String] = [], includeUsage: Bool = true, thinkingBudget: Int? = nil, stream: Bool = true
    ) {
        self.model = model
        self.messages = messages
        self.maxTokens = maxTokens
        self.temperature = temperature
        self.stop = stop
        self.includeUsage = includeUsage
        self.thinkingBudget = thinkingBudget
        self.stream = stream
    }
}

/// Token usage as the provider reported it.
public struct ChatUsage: Sendable, Equatable, Hashable {
    public var inputTokens: Int
    public var outputTokens: Int

    public init(inputTokens: Int, outputTokens: Int) {
        self.inputTokens = inputTokens
        self.outputTokens = outputTokens
    }
}

/// One event of a streamed answer, in the order the provider sent them.
public enum ChatStreamEvent: Sendable, Equatable, Hashable {
    /// Answer text.
    case text(String)
    /// Reasoning ("thinking") text, shown apart from the answer.
    case reasoning(String)
    /// Token usage; may come after `finished`.
    case usage(ChatUsage)
    /// The provider's reason for ending the answer (`stop`, `length`, …).
    case finished(reason: String)
}

/// A streaming chat client for one provider. The stream yields events in
/// order and ends normally only after the provider's proper end of stream;
/// every failure is thrown as a ``ProviderError``. Cancelling the consuming
/// task (or dropping the stream) cancels the request.
public protocol ChatProvider: Sendable {
    func stream(_ request: ChatRequest) -> AsyncThrowingStream<ChatStreamEvent, any Error>

    /// The same events handed to `onEvent` in the caller's task, with no
    /// stream in between; returns after the proper end, throws as the
    /// stream would. The router reads providers this way.
    func run(_ request: ChatRequest, onEvent: @escaping @Sendable (ChatStreamEvent) -> Void) async throws

    /// Whether a request with `stream: false` gets its answer in one
    /// response (all its events at once, when the answer is complete): the
    /// router then holds such an attempt to its total time limit only, not
    /// to the first-token and idle limits of a stream.
    var answersWhole: Bool { get }
}

extension ChatProvider {
    /// Streams always, unless the provider says otherwise.
    public var answersWhole: Bool { false }

    /// Through ``stream(_:)``, for providers without a direct form.
    public func run(_ request: ChatRequest, onEvent: @escaping @Sendable (ChatStreamEvent) -> Void) async throws {
        for try await event in self.stream(request) { onEvent(event) }
    }
}
