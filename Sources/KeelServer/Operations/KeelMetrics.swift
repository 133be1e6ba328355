import Foundation
import Metrics
import Prometheus
import Synchronization

/// The process's metrics: swift-metrics handles backed by one Prometheus
/// registry, which `/metrics` renders.
public final class KeelMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    public let factory: PrometheusMetricsFactory
    private let requestMetrics = Mutex<[RequestKey: (Metrics.Counter, Metrics.Timer)]>([:])

    struct RequestKey: Hashable {
        var method: String
        var route: String
        var status: Int
    }

    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = [
            .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25),
            .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2.5),
            .seconds(5), .seconds(10), .seconds(30), .seconds(60),
        ]
        self.factory = factory
    }

    /// Records one finished HTTP request.
    func recordRequest(method: String, route: String, status: Int, duration: Duration) {
        let key = RequestKey(method: method, route: route, status: status)
        let (counter, timer) = self.requestMetrics.withLock { cache in
            if let handles = cache[key] { return handles }
            let dimensions = [("method", method), ("route", route), ("status", String(status))]
            let handles = (
                Metrics.Counter(label: "keel_http_requests_total", dimensions: dimensions, factory: self.factory),
                Metrics.Timer(label: "keel_http_request_duration_seconds", dimensions: dimensions, factory: self.factory)
            )
            cache[key] = handles
            return handles
        }
        counter.increment()
        let (seconds, attoseconds) = duration.components
        timer.recordNanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }

    public func counter(_ label: String, _ dimensions: [(String, String)] = []) -> Metrics.Counter {
        Metrics.Counter(label: label, dimensions: dimensions, factory: self.factory)
    }

    public func gauge(_ label: String, _ dimensions: [(String, String)] = []) -> Metrics.Gauge {
        Metrics.Gauge(label: label, dimensions: dimensions, factory: self.factory)
    }

    /// The Prometheus text exposition of every metric.
    public func render() -> [UInt8] {
        var buffer: [UInt8] = []
        buffer.reserveCapacity(16_384)
        self.registry.emit(into: &buffer)
        return buffer
    }
}
