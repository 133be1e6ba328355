import Logging
import ServiceLifecycle

/// The first service to hear about graceful shutdown: it turns readiness to
/// 503 and holds the shutdown for the drain delay, while the server still
/// serves, so the load balancer stops routing here before we stop accepting.
struct DrainService: Service {
    let state: DrainState
    let delay: Duration
    let logger: Logger
    /// Called at once when the drain begins (workers stop claiming).
    var onBegin: @Sendable () -> Void = {}
    /// Called when the delay is over and the server stops accepting (streams close).
    var onDelayOver: @Sendable () -> Void = {}

    func run() async throws {
        // Returns when graceful shutdown begins; throws only on cancellation.
        do {
            try await gracefulShutdown()
        } catch {
            return
        }
        self.state.begin()
        self.onBegin()
        self.logger.notice("draining: readiness now 503", metadata: ["keel.drain.delay": "\(self.delay)"])
        try? await Task.sleep(for: self.delay)
        self.logger.notice("drain delay over: no longer accepting connections; closing event streams")
        self.onDelayOver()
    }
}
