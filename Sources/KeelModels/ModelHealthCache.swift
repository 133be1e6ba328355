import Foundation
import KeelCore
import Logging
import Synchronization

/// The shared model health as one process sees it: read from the store at
/// most once per `maximumAge` (one read for every model at once, however
/// many requests ask meanwhile), and updated at once by this process's own
/// writes. A cooldown set by another instance is seen within `maximumAge`.
final class ModelHealthCache: Sendable {
    private let store: any ModelHealthStore
    private let models: [String]
    private let maximumAge: Duration
    private let logger: Logger
    private let state = Mutex(State())

    private struct State {
        var health: [String: ModelHealth] = [:]
        var fetchedAt: ContinuousClock.Instant?
        var inflight: Task<[String: ModelHealth], Never>?
        /// When this process last wrote each model's health: a read that
        /// started before it must not replace what was written.
        var updatedAt: [String: ContinuousClock.Instant] = [:]
    }

    init(store: any ModelHealthStore, models: [String], maximumAge: Duration, logger: Logger) {
        self.store = store
        self.models = models
        self.maximumAge = maximumAge
        self.logger = logger
    }

    /// Every model's health, at most `maximumAge` old. A store that cannot
    /// be read leaves the last known health (routing goes on; the error is
    /// logged).
    func health() async -> [String: ModelHealth] {
        let now = ContinuousClock.now
        let (fresh, task): ([String: ModelHealth]?, Task<[String: ModelHealth], Never>?) = self.state.withLock { state in
            if let fetchedAt = state.fetchedAt, now - fetchedAt < self.maximumAge { return (state.health, nil) }
            if let inflight = state.inflight { return (nil, inflight) }
            let task = Task { await self.fetch() }
            state.inflight = task
            return (nil, task)
        }
        if let fresh { return fresh }
        return await task!.value
    }

    private func fetch() async -> [String: ModelHealth] {
        let started = ContinuousClock.now
        do {
            let read = try await self.store.health(models: self.models)
            return self.state.withLock { state in
                var health = read
                for (model, written) in state.updatedAt where written >= started {
                    health[model] = state.health[model]
                }
                state.updatedAt = state.updatedAt.filter { $0.value >= started }
                state.health = health
                state.fetchedAt = started
                state.inflight = nil
                return health
            }
        } catch {
            self.logger.error("could not read the models' shared health; routing on the last known", metadata: ["keel.error": "\(error)"])
            return self.state.withLock { state in
                state.inflight = nil
                // Try again after a short pause, not on every request.
                state.fetchedAt = started
                return state.health
            }
        }
    }

    /// Records what this process just wrote (or learned) about a model.
    func update(_ health: ModelHealth) {
        let now = ContinuousClock.now
        self.state.withLock { state in
            state.health[health.model] = health
            state.updatedAt[health.model] = now
        }
    }

    /// The next read goes to the store.
    func invalidate() {
        self.state.withLock { $0.fetchedAt = nil }
    }
}
