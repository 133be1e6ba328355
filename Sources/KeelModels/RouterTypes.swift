/// What a caller asks the router for, what it streams back, and how it fails.

/// One routed chat request: a chain (or a single model) and the conversation.
public struct RoutedRequest: Sendable, Equatable {
    /// A chain or model name; `nil` uses the `default` chain.
    public var route: String?
    public var messages: [ChatMessage]
    /// Overrides the model's `max_tokens` from the models file.
    public var maxTokens: Int?
    public var temperature: Double?
    public var stop: [String]
    /// Answer text already delivered to the client by an earlier attempt
    /// (a job retried after its worker died): the router continues it, as it
    /// does after a mid-stream failure, instead of starting over.
    public var continuing: String
    /// `false` when nobody reads the answer before it is complete (a
    /// non-streaming client): a model whose provider can answer whole is
    /// asked for one response instead of a stream (``ChatRequest/stream``).
    public var stream: Bool

    public init(
        route: String? = nil, messages: [ChatMessage], maxTokens: Int? = nil, temperature: Double? = nil, stop: [String] = [],
        continuing: String = "", stream: Bool = true
    ) {
        self.route = route
        self.messages = messages
        self.maxTokens = maxTokens
        self.temperature = temperature
        self.stop = stop
        self.continuing = continuing
        self.stream = stream
    }
}

/// A switch from one model to another, before or after the first token.
public struct ModelFallback: Sendable, Equatable, Hashable {
    public var from: String
    public var to: String
    /// A short code: `rate_limited`, `overloaded`, `server_error`,
    /// `connect_error`, `timeout`, `first_token_timeout`, `idle_timeout`,
    /// `stream_error`, `stream_cut`, `malformed_stream`, `unauthorized`,
    /// `spend_limit`, `cooling_down`.
    public var reason: String
    /// The failure in words (redacted of secrets), for logs and the event.
    public var detail: String
    /// Whether answer text had already been delivered: the next model
    /// continues it.
    public var afterFirstToken: Bool

    public init(from: String, to: String, reason: String, detail: String, afterFirstToken: Bool) {
        self.from = from
        self.to = to
        self.reason = reason
        self.detail = detail
        self.afterFirstToken = afterFirstToken
    }
}

/// Which models answered and how: what a caller stores with the answer.
public struct RoutingSummary: Sendable, Equatable {
    /// The model that finished the answer.
    public var answeredBy: String
    /// Every model that produced part of the answer, in order.
    public var models: [String]
    public var fallbacks: [ModelFallback]
    /// Token usage by model, as the providers reported it.
    public var usage: [String: ChatUsage]
    /// The finishing model's reason (`stop`, `length`, `end_turn`, …).
    public var finishReason: String
    /// From the request to the first answer or reasoning text.
    public var timeToFirstToken: Duration?

    /// Usage by model, sorted by name, for accounting: a model that reported
    /// none counts with zero tokens (the request still counts).
    public var usageByModel: [(model: String, usage: ChatUsage)] {
        if self.usage.isEmpty { return [(self.answeredBy, ChatUsage(inputTokens: 0, outputTokens: 0))] }
        return self.usage.keys.sorted().map { ($0, self.usage[$0]!) }
    }

    public var totalUsage: ChatUsage {
        self.usage.values.reduce(ChatUsage(inputTokens: 0, outputTokens: 0)) {
            ChatUsage(inputTokens: $0.inputTokens + $1.inputTokens, outputTokens: $0.outputTokens + $1.outputTokens)
        }
    }
}

/// One event of a routed answer.
public enum RouterEvent: Sendable, Equatable {
    /// The model now answering (its Keel name and the provider's name).
    case model(name: String, provider: String)
    /// The router moved to another model; the text goes on where it stopped.
    case fallback(ModelFallback)
    case text(String)
    case reasoning(String)
    /// One model's token usage.
    case usage(model: String, ChatUsage)
    /// The answer is complete. Always the last event of a successful stream.
    case finished(RoutingSummary)
}

/// Why a routed request failed, with the HTTP status a server answers.
public struct RouterError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Code: String, Sendable {
        /// The request names no chain or model the file declares (404).
        case unknownModel = "unknown_model"
        /// No models file is loaded (503).
        case noModelsConfigured = "no_models_configured"
        /// A model refused the request itself (400 validation): another
        /// model would refuse it too.
        case invalidRequest = "model_request_invalid"
        /// Every model of the chain failed or is cooling down (503).
        case modelsUnavailable = "models_unavailable"
        /// The total time limit passed (504).
        case timeout = "model_timeout"
    }

    public var code: Code
    public var message: String
    /// When the chain's first model cools down enough to try again.
    public var retryAfter: Duration?
    /// The summary so far: models tried, fallbacks, usage.
    public var fallbacks: [ModelFallback]

    public init(_ code: Code, _ message: String, retryAfter: Duration? = nil, fallbacks: [ModelFallback] = []) {
        self.code = code
        self.message = message
        self.retryAfter = retryAfter
        self.fallbacks = fallbacks
    }

    public var status: Int {
        switch self.code {
        case .unknownModel: 404
        case .noModelsConfigured, .modelsUnavailable: 503
        case .invalidRequest: 400
        case .timeout: 504
        }
    }

    public var description: String { "RouterError(\(self.code.rawValue)): \(self.message)" }
}

/// The router's limits and cooldown policy; each is a `keel serve` knob.
public struct RouterLimits: Sendable, Equatable {
    /// A whole answer, every model and wait included (`model-total-timeout`).
    public var totalTimeout: Duration = .seconds(600)
    /// From sending a request to a model to its first token, per attempt
    /// (`model-first-token-timeout`).
    public var firstTokenTimeout: Duration = .seconds(60)
    /// Between two events of a streaming answer (`model-idle-timeout`).
    public var idleTimeout: Duration = .seconds(60)
    /// How long a rate-limited or overloaded model cools when the upstream
    /// names no wait, and a model that failed `failuresBeforeCooldown` times
    /// in a row (`model-cooldown`).
    public var cooldown: Duration = .seconds(30)
    /// How long bad credentials or a spent quota cool a model
    /// (`model-auth-cooldown`).
    public var authCooldown: Duration = .seconds(600)
    /// Failures in a row (errors without a wait of their own) before a model
    /// cools (`model-failures-before-cooldown`).
    public var failuresBeforeCooldown: Int = 3
    /// Passes over the chain after the first, when every model failed
    /// before answering (`model-chain-retries`).
    public var chainRetries: Int = 1
    /// The longest wait between passes the router sleeps for within one
    /// request (a longer `Retry-After` fails the request with it instead)
    /// (`model-retry-max-wait`).
    public var maxRetryWait: Duration = .seconds(10)
    /// How stale the shared health may be (DESIGN.md: at most a second).
    public var healthCacheAge: Duration = .seconds(1)

    public init() {}
}

/// The instruction that makes a model continue an answer another model
/// began. Kept here, with the router that sends it, so every caller words
/// continuation the same way.
public enum ContinuationPrompt {
    public static let instruction =
        "Your previous reply was cut off. Continue it from exactly where it stops, as if you had never been interrupted: "
        + "do not repeat any of it, do not start over, do not comment on the interruption."

    /// The conversation that asks a model to continue `partial`.
    public static func messages(_ messages: [ChatMessage], continuing partial: String) -> [ChatMessage] {
        guard !partial.isEmpty else { return messages }
        return messages + [.assistant(partial), .user(self.instruction)]
    }
}

extension ProviderError {
    /// The fallback reason code for this failure.
    public var reasonCode: String {
        switch self.kind {
        case .connect: "connect_error"
        case .busy: "connections_busy"
        case .timeout: "timeout"
        case .rateLimited: "rate_limited"
        case .overloaded: "overloaded"
        case .serverError: "server_error"
        case .badRequest: "bad_request"
        case .unauthorized: "unauthorized"
        case .spendLimit: "spend_limit"
        case .inBand: "stream_error"
        case .malformed: "malformed_stream"
        case .truncated: "stream_cut"
        }
    }
}
