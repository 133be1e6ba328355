import Metrics
import Synchronization

/// The router's Prometheus series, through swift-metrics:
/// - `keel_model_requests_total{model, outcome}`: every attempt on a model,
///   `outcome` = `success` or the failure's reason code;
/// - `keel_model_fallbacks_total{from, reason}`;
/// - `keel_model_time_to_first_token_seconds{model}`;
/// - `keel_model_tokens_total{model, direction}` (`in`, `out`);
/// - `keel_model_cooldowns_total{model, reason}`.
///
/// Beside them, the same figures tallied per model in memory
/// (``tallies()``), which this instance reports for the admin dashboard.
public final class RouterMetrics: Sendable {
    private let factory: any MetricsFactory
    private let counters = Mutex<[Key: Metrics.Counter]>([:])
    private let timers = Mutex<[String: Metrics.Timer]>([:])
    private let tally = Mutex<[String: ModelTally]>([:])

    private struct Key: Hashable {
        var label: String
        var first: String
        var second: String
    }

    public init(factory: any MetricsFactory) {
        self.factory = factory
    }

    private func counter(_ label: String, _ dimensions: (String, String), _ second: (String, String)) -> Metrics.Counter {
        let key = Key(label: label, first: dimensions.1, second: second.1)
        return self.counters.withLock { counters in
            if let counter = counters[key] { return counter }
            let counter = Metrics.Counter(label: label, dimensions: [dimensions, second], factory: self.factory)
            counters[key] = counter
            return counter
        }
    }

    /// Every model's figures since this process started, by model name.
    public func tallies() -> [String: ModelTally] {
        self.tally.withLock { $0 }
    }

    private func tally(_ model: String, _ change: (inout ModelTally) -> Void) {
        self.tally.withLock { change(&$0[model, default: ModelTally()]) }
    }

    func attempt(model: String, outcome: String) {
        self.counter("keel_model_requests_total", ("model", model), ("outcome", outcome)).increment()
        self.tally(model) { tally in
            tally.attempts += 1
            if outcome != "success" { tally.failures[outcome, default: 0] += 1 }
        }
    }

    func fallback(_ fallback: ModelFallback) {
        self.counter("keel_model_fallbacks_total", ("from", fallback.from), ("reason", fallback.reason)).increment()
        self.tally(fallback.from) { $0.fallbacksFrom += 1 }
    }

    func cooldown(model: String, reason: String) {
        self.counter("keel_model_cooldowns_total", ("model", model), ("reason", reason)).increment()
    }

    func tokens(model: String, _ usage: ChatUsage) {
        self.counter("keel_model_tokens_total", ("model", model), ("direction", "in")).increment(by: usage.inputTokens)
        self.counter("keel_model_tokens_total", ("model", model), ("direction", "out")).increment(by: usage.outputTokens)
        self.tally(model) { tally in
            tally.inputTokens += usage.inputTokens
            tally.outputTokens += usage.outputTokens
        }
    }

    func firstToken(model: String, after duration: Duration) {
        let timer = self.timers.withLock { timers in
            if let timer = timers[model] { return timer }
            let timer = Metrics.Timer(label: "keel_model_time_to_first_token_seconds", dimensions: [("model", model)], factory: self.factory)
            timers[model] = timer
            return timer
        }
        let (seconds, attoseconds) = duration.components
        let nanoseconds = seconds * 1_000_000_000 + attoseconds / 1_000_000_000
        timer.recordNanoseconds(nanoseconds)
        self.tally(model) { $0.recordFirstToken(milliseconds: Double(nanoseconds) / 1_000_000) }
    }
}

/// One model's figures in one process: attempts, failures by reason,
/// fallbacks away from it, tokens, and its times to first token (all of
/// them counted, the latest ``ModelTally/recentLimit`` kept for percentiles).
public struct ModelTally: Sendable, Equatable {
    public var attempts = 0
    public var failures: [String: Int] = [:]
    public var fallbacksFrom = 0
    public var inputTokens = 0
    public var outputTokens = 0
    public var firstTokenCount = 0
    public var firstTokenTotalMilliseconds = 0.0
    /// The latest times to first token, oldest first.
    public var recentFirstTokenMilliseconds: [Double] = []

    public static let recentLimit = 100

    public init() {}

    mutating func recordFirstToken(milliseconds: Double) {
        self.firstTokenCount += 1
        self.firstTokenTotalMilliseconds += milliseconds
        if self.recentFirstTokenMilliseconds.count == Self.recentLimit { self.recentFirstTokenMilliseconds.removeFirst() }
        self.recentFirstTokenMilliseconds.append(milliseconds)
    }
}
