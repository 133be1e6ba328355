import Foundation

/// What every instance knows about one model's recent health: whether it is
/// cooling down (and until when, and why) and how many calls in a row failed.
public struct ModelHealth: Sendable, Equatable {
    public var model: String
    /// While in the future, routers skip the model.
    public var cooldownUntil: Date?
    public var cooldownReason: String?
    /// Failures since the last success.
    public var consecutiveFailures: Int
    public var lastFailureAt: Date?
    public var lastSuccessAt: Date?

    public init(
        model: String, cooldownUntil: Date? = nil, cooldownReason: String? = nil, consecutiveFailures: Int = 0, lastFailureAt: Date? = nil,
        lastSuccessAt: Date? = nil
    ) {
        self.model = model
        self.cooldownUntil = cooldownUntil
        self.cooldownReason = cooldownReason
        self.consecutiveFailures = consecutiveFailures
        self.lastFailureAt = lastFailureAt
        self.lastSuccessAt = lastSuccessAt
    }

    /// Whether a router should skip the model at `now`.
    public func isCooling(at now: Date) -> Bool {
        guard let until = self.cooldownUntil else { return false }
        return until > now
    }
}

/// Model cooldowns and failure counts shared by every instance: one
/// instance's 429 makes every instance skip that model until it cools.
public protocol ModelHealthStore: Sendable {
    /// Counts a failed call. With `cooldown`, the model cools until
    /// `now + cooldown` (a cooldown is only ever extended by another
    /// failure, never shortened). Returns the model's health after it.
    @discardableResult
    func recordFailure(model: String, reason: String, cooldown: Duration?, now: Date) async throws -> ModelHealth

    /// Counts a successful call: the failures in a row start again from zero.
    /// A cooldown set by another instance stands until it ends.
    func recordSuccess(model: String, now: Date) async throws

    /// The health of each named model (a model never seen is healthy).
    func health(models: [String]) async throws -> [String: ModelHealth]

    /// Ends a model's cooldown now (an operator's decision).
    func clearCooldown(model: String, now: Date) async throws
}
