import Foundation
import KeelCore
import Logging
import Synchronization

/// Streams an answer from a chain of models (DESIGN.md "Models, chains,
/// fallback"):
///
/// - Models cooling down (in the shared ``ModelHealthStore``, read at most a
///   second stale) are skipped.
/// - Before the first token, a retryable failure moves to the next model;
///   a 400 fails the request; 401/403 and a spent quota cool the model for
///   long and move on. A `Retry-After` becomes the model's cooldown on every
///   instance, and the wait before another pass over the chain.
/// - After the first token, a broken stream (cut, in-band error, malformed
///   event, idle past the limit) continues on the next model, which gets the
///   partial answer and ``ContinuationPrompt``: the client's text goes on
///   with no reset and no repeat.
/// - Every switch is a ``RouterEvent/fallback(_:)``; the stream ends with
///   ``RouterEvent/finished(_:)`` (which models answered, every fallback,
///   usage) or throws a ``RouterError``.
/// - A total time limit, a first-token limit per attempt and an idle limit
///   between events (``RouterLimits``); an attempt that asked for its answer
///   whole (``RoutedRequest/stream`` false, a provider that
///   ``ChatProvider/answersWhole``) has only the total limit.
public final class ModelRouter: Sendable {
    public let catalog: ModelCatalog
    public let limits: RouterLimits
    private let providers: [String: any ChatProvider]
    private let healthStore: any ModelHealthStore
    private let healthCache: ModelHealthCache
    public let metrics: RouterMetrics?
    private let logger: Logger
    private let clock: any KeelClock

    /// - Parameter providers: the client for each model, by model name.
    public init(
        catalog: ModelCatalog, providers: [String: any ChatProvider], healthStore: any ModelHealthStore, limits: RouterLimits = RouterLimits(),
        metrics: RouterMetrics? = nil, logger: Logger = Logger(label: "keel.models"), clock: any KeelClock = SystemClock()
    ) {
        self.catalog = catalog
        self.limits = limits
        self.providers = providers
        self.healthStore = healthStore
        self.healthCache = ModelHealthCache(store: healthStore, models: catalog.modelOrder, maximumAge: limits.healthCacheAge, logger: logger)
        self.metrics = metrics
        self.logger = logger
        self.clock = clock
    }

    /// Every model's shared health, at most ``RouterLimits/healthCacheAge`` old.
    public func health() async -> [String: ModelHealth] {
        await self.healthCache.health()
    }

    /// Streams the answer to `request`. Cancelling the consuming task (or
    /// dropping the stream) cancels the model request in flight.
    public func stream(_ request: RoutedRequest) -> AsyncThrowingStream<RouterEvent, any Error> {
        let (stream, continuation) = AsyncThrowingStream<RouterEvent, any Error>.makeStream()
        let task = Task {
            do {
                try await self.run(request, continuation)
                continuation.finish()
            } catch {
                continuation.finish(throwing: error)
            }
        }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }

    /// The whole answer at once: its text, reasoning and summary.
    public func complete(_ request: RoutedRequest) async throws -> (text: String, reasoning: String, summary: RoutingSummary) {
        var text = ""
        var reasoning = ""
        for try await event in self.stream(request) {
            switch event {
            case .text(let piece): text += piece
            case .reasoning(let piece): reasoning += piece
            case .finished(let summary): return (text, reasoning, summary)
            case .model, .fallback, .usage: break
            }
        }
        throw RouterError(.modelsUnavailable, "the answer ended without finishing")
    }

    // MARK: - Routing

    private struct Pending {
        var from: String
        var reason: String
        var detail: String
    }

    private func run(_ request: RoutedRequest, _ output: AsyncThrowingStream<RouterEvent, any Error>.Continuation) async throws {
        guard let chain = self.catalog.route(request.route) else {
            let known = (self.catalog.chainOrder + self.catalog.modelOrder).joined(separator: ", ")
            throw RouterError(.unknownModel, "no chain or model is named \"\(request.route ?? "default")\"; known: \(known)")
        }
        let started = ContinuousClock.now
        let deadline = started + self.limits.totalTimeout
        var delivered = request.continuing
        var summary = RoutingSummary(answeredBy: "", models: [], fallbacks: [], usage: [:], finishReason: "", timeToFirstToken: nil)
        var pending: Pending?
        var pass = 0
        while true {
            let health = await self.healthCache.health()
            var shortestWait: Duration?
            for name in chain {
                try Task.checkCancellation()
                guard let model = self.catalog.models[name], let provider = self.catalog.providers[model.provider] else { continue }
                let now = self.clock.now()
                if let state = health[name], state.isCooling(at: now), let until = state.cooldownUntil {
                    let wait = Duration.seconds(until.timeIntervalSince(now))
                    shortestWait = min(shortestWait ?? wait, wait)
                    if pending == nil {
                        pending = Pending(from: name, reason: "cooling_down", detail: "cooling down: \(state.cooldownReason ?? "earlier failures")")
                    }
                    continue
                }
                if let previous = pending, previous.from != name {
                    let fallback = ModelFallback(
                        from: previous.from, to: name, reason: previous.reason, detail: previous.detail, afterFirstToken: !delivered.isEmpty)
                    summary.fallbacks.append(fallback)
                    self.metrics?.fallback(fallback)
                    self.logger.warning(
                        "model fallback",
                        metadata: [
                            "keel.model.from": "\(fallback.from)", "keel.model.to": "\(fallback.to)", "keel.model.reason": "\(fallback.reason)",
                            "keel.model.detail": "\(fallback.detail)", "keel.model.after_first_token": "\(fallback.afterFirstToken)",
                        ])
                    output.yield(.fallback(fallback))
                }
                pending = nil
                output.yield(.model(name: name, provider: provider.name))
                let chatRequest = ChatRequest(
                    model: model.model, messages: ContinuationPrompt.messages(request.messages, continuing: delivered),
                    maxTokens: request.maxTokens ?? model.maxTokens, temperature: request.temperature, stop: request.stop, includeUsage: true,
                    thinkingBudget: model.thinkingBudget, stream: request.stream)
                let attempt = try await self.attempt(name, chatRequest, deadline: deadline, output: output)
                if !attempt.text.isEmpty {
                    delivered += attempt.text
                    if summary.models.last != name { summary.models.append(name) }
                }
                if summary.timeToFirstToken == nil, let first = attempt.firstTokenAt { summary.timeToFirstToken = first - started }
                if let usage = attempt.usage {
                    let before = summary.usage[name] ?? ChatUsage(inputTokens: 0, outputTokens: 0)
                    summary.usage[name] = ChatUsage(inputTokens: before.inputTokens + usage.inputTokens, outputTokens: before.outputTokens + usage.outputTokens)
                }
                switch attempt.end {
                case .finished(let reason):
                    self.metrics?.attempt(model: name, outcome: "success")
                    await self.recordSuccess(name, health: health[name])
                    summary.answeredBy = name
                    if summary.models.last != name { summary.models.append(name) }
                    summary.finishReason = reason
                    output.yield(.finished(summary))
                    return
                case .failed(let failure):
                    self.metrics?.attempt(model: name, outcome: failure.reason)
                    if failure.totalTimeLimit {
                        throw RouterError(.timeout, "no complete answer within \(self.limits.totalTimeout)", fallbacks: summary.fallbacks)
                    }
                    if case .badRequest = failure.error.kind, attempt.text.isEmpty {
                        throw RouterError(.invalidRequest, "\(name) refused the request: \(failure.error.message)", fallbacks: summary.fallbacks)
                    }
                    // This process's own connection limit says nothing of the model's health.
                    let cooled = failure.error.kind == .busy ? nil : await self.recordFailure(name, failure, health: health[name])
                    if let wait = failure.error.retryAfter ?? cooled { shortestWait = min(shortestWait ?? wait, wait) }
                    pending = Pending(from: name, reason: failure.reason, detail: failure.error.message)
                }
            }
            // Every model failed or is cooling: another pass, after the
            // shortest wait any of them asked for, if it fits.
            let wait = shortestWait ?? .milliseconds(250)
            let remaining = deadline - ContinuousClock.now
            guard pass < self.limits.chainRetries, wait <= self.limits.maxRetryWait, wait < remaining else {
                let tried = chain.joined(separator: ", ")
                let last = pending.map { " (last: \($0.from), \($0.detail))" } ?? ""
                throw RouterError(
                    .modelsUnavailable, "every model of the chain failed or is cooling down: \(tried)\(last)", retryAfter: shortestWait,
                    fallbacks: summary.fallbacks)
            }
            pass += 1
            try await Task.sleep(for: wait)
            self.healthCache.invalidate()
        }
    }

    // MARK: - Health

    private func recordSuccess(_ name: String, health: ModelHealth?) async {
        // Only a model with failures on record needs the write: the hot path
        // of a healthy chain touches the store once a second, to read.
        guard let health, health.consecutiveFailures > 0 else { return }
        do {
            try await self.healthStore.recordSuccess(model: name, now: self.clock.now())
            var healed = health
            healed.consecutiveFailures = 0
            healed.lastSuccessAt = self.clock.now()
            self.healthCache.update(healed)
        } catch {
            self.logger.error("could not record a model's success", metadata: ["keel.model": "\(name)", "keel.error": "\(error)"])
        }
    }

    /// Counts the failure in the store, cooling the model when the policy
    /// says so; returns the cooldown set.
    private func recordFailure(_ name: String, _ failure: AttemptFailure, health: ModelHealth?) async -> Duration? {
        let cooldown = self.cooldown(for: failure.error, failuresBefore: health?.consecutiveFailures ?? 0)
        do {
            let updated = try await self.healthStore.recordFailure(model: name, reason: failure.reason, cooldown: cooldown, now: self.clock.now())
            self.healthCache.update(updated)
        } catch {
            self.logger.error("could not record a model's failure", metadata: ["keel.model": "\(name)", "keel.error": "\(error)"])
        }
        if cooldown != nil { self.metrics?.cooldown(model: name, reason: failure.reason) }
        return cooldown
    }

    /// The cooldown policy: long for credentials and spent quotas, the
    /// upstream's own wait when it named one, the configured cooldown for a
    /// rate limit or overload, and after enough failures in a row.
    func cooldown(for error: ProviderError, failuresBefore: Int) -> Duration? {
        let cooldown: Duration?
        if error.coolsLong {
            cooldown = self.limits.authCooldown
        } else if let wait = error.retryAfter, wait > .zero {
            cooldown = wait
        } else {
            switch error.kind {
            case .rateLimited, .overloaded: cooldown = self.limits.cooldown
            case .badRequest: cooldown = nil
            default: cooldown = failuresBefore + 1 >= self.limits.failuresBeforeCooldown ? self.limits.cooldown : nil
            }
        }
        // A zero cooldown (the knob set to 0s) is none: stored as "until now",
        // it would read as cooling for the millisecond the store rounds to.
        guard let cooldown, cooldown > .zero else { return nil }
        return cooldown
    }

    // MARK: - One attempt on one model

    struct AttemptFailure: Error {
        var reason: String
        var error: ProviderError
        var totalTimeLimit = false
    }

    private enum AttemptEnd {
        case finished(reason: String)
        case failed(AttemptFailure)
    }

    private struct AttemptResult {
        var end: AttemptEnd
        var text: String
        var usage: ChatUsage?
        var firstTokenAt: ContinuousClock.Instant?
    }

    /// What one attempt has seen so far, shared by its reader and its watchdog.
    private final class AttemptProgress: Sendable {
        struct Value {
            var text = ""
            var usage: ChatUsage?
            var finishReason: String?
            var firstTokenAt: ContinuousClock.Instant?
            var lastEventAt: ContinuousClock.Instant
        }

        let value: Mutex<Value>
        init(started: ContinuousClock.Instant) { self.value = Mutex(Value(lastEventAt: started)) }
    }

    private func attempt(
        _ name: String, _ request: ChatRequest, deadline: ContinuousClock.Instant,
        output: AsyncThrowingStream<RouterEvent, any Error>.Continuation
    ) async throws -> AttemptResult {
        guard let provider = self.providers[name] else {
            return AttemptResult(
                end: .failed(AttemptFailure(reason: "connect_error", error: ProviderError(.connect, "no client for model \(name)"))), text: "")
        }
        let started = ContinuousClock.now
        let progress = AttemptProgress(started: started)
        let limits = self.limits
        // An answer asked for whole comes all at once at the end: only the
        // total limit can apply to it.
        let whole = !request.stream && provider.answersWhole
        let metrics = self.metrics
        let end: AttemptEnd
        do {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    try await provider.run(request) { event in
                        switch event {
                        case .text(let piece):
                            guard !piece.isEmpty else { return }
                            let first = progress.value.withLock { value in
                                value.text += piece
                                value.lastEventAt = .now
                                defer { if value.firstTokenAt == nil { value.firstTokenAt = value.lastEventAt } }
                                return value.firstTokenAt == nil
                            }
                            if first { metrics?.firstToken(model: name, after: .now - started) }
                            output.yield(.text(piece))
                        case .reasoning(let piece):
                            guard !piece.isEmpty else { return }
                            let first = progress.value.withLock { value in
                                value.lastEventAt = .now
                                defer { if value.firstTokenAt == nil { value.firstTokenAt = value.lastEventAt } }
                                return value.firstTokenAt == nil
                            }
                            if first { metrics?.firstToken(model: name, after: .now - started) }
                            output.yield(.reasoning(piece))
                        case .usage(let usage):
                            progress.value.withLock { value in
                                value.usage = usage
                                value.lastEventAt = .now
                            }
                            metrics?.tokens(model: name, usage)
                            output.yield(.usage(model: name, usage))
                        case .finished(let reason):
                            progress.value.withLock { value in
                                value.finishReason = reason
                                value.lastEventAt = .now
                            }
                        }
                    }
                    try Task.checkCancellation()
                }
                group.addTask {
                    // The watchdog: the first-token limit until a token
                    // comes, then the idle limit; the total limit always.
                    while true {
                        let (first, last) = progress.value.withLock { ($0.firstTokenAt, $0.lastEventAt) }
                        let (limit, reason) =
                            whole
                            ? (deadline, "total")
                            : first == nil
                            ? (started + limits.firstTokenTimeout, "first_token_timeout")
                            : (last + limits.idleTimeout, "idle_timeout")
                        let (until, why) = deadline < limit ? (deadline, "total") : (limit, reason)
                        if ContinuousClock.now >= until {
                            let words =
                                switch why {
                                case "total": "the answer took longer than \(limits.totalTimeout)"
                                case "first_token_timeout": "no first token within \(limits.firstTokenTimeout)"
                                default: "no token for \(limits.idleTimeout)"
                                }
                            throw AttemptFailure(reason: why, error: ProviderError(.timeout, words), totalTimeLimit: why == "total")
                        }
                        // Before the first token, wake at least every idle
                        // limit: a token arriving now moves the next deadline
                        // to its idle limit, which may come before `until`.
                        let wake = first == nil && !whole ? min(until, .now + limits.idleTimeout) : until
                        try await Task.sleep(until: wake, clock: .continuous)
                    }
                }
                try await group.next()
                group.cancelAll()
            }
            let reason = progress.value.withLock { $0.finishReason } ?? "stop"
            end = .finished(reason: reason)
        } catch let failure as AttemptFailure {
            end = .failed(failure)
        } catch let error as ProviderError {
            end = .failed(AttemptFailure(reason: error.reasonCode, error: error))
        } catch {
            // Cancelled from outside (the client left): nothing to fall back to.
            try Task.checkCancellation()
            end = .failed(AttemptFailure(reason: "connect_error", error: ProviderError(.connect, "\(error)")))
        }
        let seen = progress.value.withLock { $0 }
        return AttemptResult(end: end, text: seen.text, usage: seen.usage, firstTokenAt: seen.firstTokenAt)
    }
}
