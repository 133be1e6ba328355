import Foundation
import KeelCore
import Testing

/// The contract of `ModelHealthStore`, run unchanged on every driver.
@Suite("Model health conformance")
struct ModelHealthConformanceTests {
    static let t0 = Date(timeIntervalSince1970: 1_800_000_000)

    @Test("a model never seen is healthy; failures count until a success", arguments: Driver.available)
    func counting(driver: Driver) async throws {
        try await StoreFixture.make(driver).withStore { store in
            let health = store.modelHealth
            #expect(try await health.health(models: ["a"]) == ["a": ModelHealth(model: "a")])
            #expect(try await health.health(models: []).isEmpty)
            try await health.recordFailure(model: "a", reason: "server_error", cooldown: nil, now: Self.t0)
            let second = try await health.recordFailure(model: "a", reason: "server_error", cooldown: nil, now: Self.t0.addingTimeInterval(1))
            #expect(second.consecutiveFailures == 2 && second.lastFailureAt == Self.t0.addingTimeInterval(1) && second.cooldownUntil == nil)
            try await health.recordSuccess(model: "a", now: Self.t0.addingTimeInterval(2))
            let after = try #require(try await health.health(models: ["a", "b"])["a"])
            #expect(after.consecutiveFailures == 0 && after.lastSuccessAt == Self.t0.addingTimeInterval(2))
            #expect(after.lastFailureAt == Self.t0.addingTimeInterval(1))
        }
    }

    @Test("a cooldown is extended by a later one, never shortened, and outlives a success", arguments: Driver.available)
    func cooldowns(driver: Driver) async throws {
        try await StoreFixture.make(driver).withStore { store in
            let health = store.modelHealth
            let first = try await health.recordFailure(model: "m", reason: "rate_limited", cooldown: .seconds(60), now: Self.t0)
            #expect(first.cooldownUntil == Self.t0.addingTimeInterval(60) && first.cooldownReason == "rate_limited")
            #expect(first.isCooling(at: Self.t0.addingTimeInterval(59)) && !first.isCooling(at: Self.t0.addingTimeInterval(60)))
            // A shorter cooldown reported later does not cut the longer one short.
            let shorter = try await health.recordFailure(model: "m", reason: "server_error", cooldown: .seconds(5), now: Self.t0.addingTimeInterval(1))
            #expect(shorter.cooldownUntil == Self.t0.addingTimeInterval(60) && shorter.cooldownReason == "rate_limited")
            // No cooldown at all leaves it as it was.
            let plain = try await health.recordFailure(model: "m", reason: "timeout", cooldown: nil, now: Self.t0.addingTimeInterval(2))
            #expect(plain.cooldownUntil == Self.t0.addingTimeInterval(60) && plain.consecutiveFailures == 3)
            let longer = try await health.recordFailure(model: "m", reason: "unauthorized", cooldown: .seconds(3600), now: Self.t0.addingTimeInterval(3))
            #expect(longer.cooldownUntil == Self.t0.addingTimeInterval(3603) && longer.cooldownReason == "unauthorized")
            try await health.recordSuccess(model: "m", now: Self.t0.addingTimeInterval(4))
            let cooling = try #require(try await health.health(models: ["m"])["m"])
            #expect(cooling.isCooling(at: Self.t0.addingTimeInterval(5)) && cooling.consecutiveFailures == 0)
            try await health.clearCooldown(model: "m", now: Self.t0.addingTimeInterval(5))
            let cleared = try #require(try await health.health(models: ["m"])["m"])
            #expect(cleared.cooldownUntil == nil && cleared.cooldownReason == nil && !cleared.isCooling(at: Self.t0.addingTimeInterval(5)))
        }
    }

    @Test("one instance's cooldown is what every other instance reads; concurrent failures all count", arguments: Driver.available)
    func sharedAcrossInstances(driver: Driver) async throws {
        let fixture = try await StoreFixture.make(driver)
        try await fixture.withStore { first in
            let second = try fixture.openStore()
            try await second.withRunning {
                try await first.modelHealth.recordFailure(model: "shared", reason: "overloaded", cooldown: .seconds(30), now: Self.t0)
                let seen = try #require(try await second.modelHealth.health(models: ["shared"])["shared"])
                #expect(seen.isCooling(at: Self.t0.addingTimeInterval(1)) && seen.cooldownReason == "overloaded")
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for index in 0..<30 {
                        let store = index % 2 == 0 ? first : second
                        group.addTask { try await store.modelHealth.recordFailure(model: "busy", reason: "server_error", cooldown: nil, now: Self.t0) }
                    }
                    try await group.waitForAll()
                }
                #expect(try await first.modelHealth.health(models: ["busy"])["busy"]?.consecutiveFailures == 30)
            }
            try await second.close()
        }
    }
}
