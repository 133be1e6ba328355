import Metrics
import Synchronization

/// The router's Prometheus series, through swift-metrics:
/// - `keel_model_requests_total{model, outcome}`: every attempt on a model,
///   `outcome` = `success` or the failure's reason code;
/// - `keel_model_fallbacks_total{from, reason}`;
/// - `keel_model_time_to_first_token_seconds{model}`;
/// - `keel_model_tokens_total{model, direction}` (`in`, `out`);
/// - `keel_model_cooldowns_total{model, reason}`.
public final class RouterMetrics: Sendable {
    private let factory: any MetricsFactory
    private let counters = Mutex<[Key: Metrics.Counter]>([:])
    private let timers = Mutex<[String: Metrics.Timer]>([:])

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

    func attempt(model: String, outcome: String) {
        self.counter("keel_model_requests_total", ("model", model), ("outcome", outcome)).increment()
    }

    func fallback(_ fallback: ModelFallback) {
        self.counter("keel_model_fallbacks_total", ("from", fallback.from), ("reason", fallback.reason)).increment()
    }

    func cooldown(model: String, reason: String) {
        self.counter("keel_model_cooldowns_total", ("model", model), ("reason", reason)).increment()
    }

    func tokens(model: String, _ usage: ChatUsage) {
        self.counter("keel_model_tokens_total", ("model", model), ("direction", "in")).increment(by: usage.inputTokens)
        self.counter("keel_model_tokens_total", ("model", model), ("direction", "out")).increment(by: usage.outputTokens)
    }

    func firstToken(model: String, after duration: Duration) {
        let timer = self.timers.withLock { timers in
            if let timer = timers[model] { return timer }
            let timer = Metrics.Timer(label: "keel_model_time_to_first_token_seconds", dimensions: [("model", model)], factory: self.factory)
            timers[model] = timer
            return timer
        }
        let (seconds, attoseconds) = duration.components
        timer.recordNanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}
