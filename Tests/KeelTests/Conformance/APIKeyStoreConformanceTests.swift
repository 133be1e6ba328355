import Foundation
import KeelCore
import Testing

/// The contract of `APIKeyStore`, run unchanged on every driver.
@Suite("API key store conformance")
struct APIKeyStoreConformanceTests {
    static let t0 = Date(timeIntervalSince1970: 1_800_000_000)

    static func key(
        _ id: String, name: String? = nil, at offset: TimeInterval = 0, expiresIn: TimeInterval? = nil, requestsPerMinute: Int? = nil
    ) -> APIKey {
        APIKey(
            id: id, name: name ?? "name-\(id)", hash: String(repeating: "0", count: 48) + "hash" + id, prefix: "sk-keel-\(id.suffix(4))",
            createdAt: t0.addingTimeInterval(offset), expiresAt: expiresIn.map { t0.addingTimeInterval(offset + $0) },
            requestsPerMinute: requestsPerMinute)
    }

    @Test("keys list newest first and are found by hash with every field, revoked or expired ones included", arguments: Driver.available)
    func createAndList(driver: Driver) async throws {
        try await StoreFixture.make(driver).withStore { store in
            let keys = store.apiKeys
            #expect(try await keys.keys().isEmpty)
            let first = Self.key("key_0001", at: 0, expiresIn: 3600, requestsPerMinute: 120)
            let second = Self.key("key_0002", at: 5)
            let third = Self.key("key_0003", at: 2.5, expiresIn: 1)
            for key in [first, second, third] { try await keys.createKey(key) }
            #expect(try await keys.keys() == [second, third, first])
            #expect(try await keys.key(hash: first.hash) == first)
            #expect(try await keys.key(hash: third.hash) == third, "expiry is stored and left to the caller")
            #expect(try await keys.key(hash: "f" + first.hash.dropFirst()) == nil)
            #expect(try await keys.key(hash: "") == nil)
        }
    }

    @Test("a name is taken only by a key not revoked: a revoked key's name can be reused", arguments: Driver.available)
    func nameTaken(driver: Driver) async throws {
        try await StoreFixture.make(driver).withStore { store in
            let keys = store.apiKeys
            try await keys.createKey(Self.key("key_0001", name: "ci"))
            await expectKeelError(.keyNameTaken) { try await keys.createKey(Self.key("key_0002", name: "ci", at: 1)) }
            #expect(try await keys.keys().map(\.id) == ["key_0001"], "the refused key was not stored")

            let revoked = try #require(try await keys.revokeKey(idOrName: "ci", now: Self.t0.addingTimeInterval(2)))
            #expect(revoked.id == "key_0001" && revoked.revokedAt == Self.t0.addingTimeInterval(2))
            try await keys.createKey(Self.key("key_0003", name: "ci", at: 3))
            await expectKeelError(.keyNameTaken) { try await keys.createKey(Self.key("key_0004", name: "ci", at: 4)) }
            #expect(try await keys.keys().map(\.id) == ["key_0003", "key_0001"])
            #expect(try await keys.keys().map(\.name) == ["ci", "ci"])
        }
    }

    @Test("revoking by id or by name; a second revocation changes nothing; an unknown key is nil", arguments: Driver.available)
    func revoke(driver: Driver) async throws {
        try await StoreFixture.make(driver).withStore { store in
            let keys = store.apiKeys
            let a = Self.key("key_aaaa", name: "alpha")
            let b = Self.key("key_bbbb", name: "beta", at: 1)
            let c = Self.key("key_cccc", name: "gamma", at: 2)
            for key in [a, b, c] { try await keys.createKey(key) }
            let t1 = Self.t0.addingTimeInterval(10)
            let t2 = Self.t0.addingTimeInterval(20)

            let byID = try #require(try await keys.revokeKey(idOrName: a.id, now: t1))
            #expect(byID.id == a.id && byID.revokedAt == t1 && !byID.isUsable(at: t1))
            let byName = try #require(try await keys.revokeKey(idOrName: "beta", now: t1))
            #expect(byName.id == b.id && byName.revokedAt == t1)

            // By id again: returned unchanged, the first revocation time kept.
            #expect(try await keys.revokeKey(idOrName: a.id, now: t2) == byID)
            // By name again: no key not revoked has that name.
            #expect(try await keys.revokeKey(idOrName: "beta", now: t2) == nil)
            #expect(try await keys.revokeKey(idOrName: "nobody", now: t2) == nil)
            #expect(try await keys.revokeKey(idOrName: "key_missing", now: t2) == nil)

            #expect(try await keys.key(hash: a.hash)?.revokedAt == t1)
            #expect(try await keys.key(hash: b.hash)?.revokedAt == t1)
            #expect(try await keys.key(hash: c.hash) == c, "the other key is untouched")
            #expect(try await keys.keys().map { $0.revokedAt } == [nil, t1, t1])
        }
    }

    @Test("usage accumulates per model: requests, input and output tokens, last use", arguments: Driver.available)
    func usage(driver: Driver) async throws {
        try await StoreFixture.make(driver).withStore { store in
            let keys = store.apiKeys
            try await keys.createKey(Self.key("key_0001"))
            try await keys.createKey(Self.key("key_0002"))
            #expect(try await keys.usage(keyID: "key_0001").isEmpty)
            try await keys.recordUsage(keyID: "key_0001", model: "small", inputTokens: 10, outputTokens: 3, now: Self.t0.addingTimeInterval(1))
            try await keys.recordUsage(keyID: "key_0001", model: "big", inputTokens: 100, outputTokens: 50, now: Self.t0.addingTimeInterval(2))
            try await keys.recordUsage(keyID: "key_0001", model: "small", inputTokens: 7, outputTokens: 0, now: Self.t0.addingTimeInterval(3))
            // A report that arrives late does not move the last use backwards.
            try await keys.recordUsage(keyID: "key_0001", model: "small", inputTokens: 1, outputTokens: 1, now: Self.t0.addingTimeInterval(0.5))
            try await keys.recordUsage(keyID: "key_0002", model: "small", inputTokens: 5, outputTokens: 5, now: Self.t0.addingTimeInterval(4))
            #expect(
                try await keys.usage(keyID: "key_0001") == [
                    APIKeyUsage(keyID: "key_0001", model: "big", requests: 1, inputTokens: 100, outputTokens: 50, lastUsedAt: Self.t0.addingTimeInterval(2)),
                    APIKeyUsage(keyID: "key_0001", model: "small", requests: 3, inputTokens: 18, outputTokens: 4, lastUsedAt: Self.t0.addingTimeInterval(3)),
                ])
            #expect(
                try await keys.usage(keyID: "key_0002") == [
                    APIKeyUsage(keyID: "key_0002", model: "small", requests: 1, inputTokens: 5, outputTokens: 5, lastUsedAt: Self.t0.addingTimeInterval(4))
                ])
            #expect(try await keys.usage(keyID: "key_missing").isEmpty)
        }
    }

    @Test("concurrent usage reports from two store objects (two instances) lose no count", arguments: Driver.available)
    func concurrentUsage(driver: Driver) async throws {
        let fixture = try await StoreFixture.make(driver)
        try await fixture.withStore { first in
            try await first.apiKeys.createKey(Self.key("key_0001"))
            let second = try fixture.openStore()
            try await second.withRunning {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for index in 0..<40 {
                        let store = index % 2 == 0 ? first : second
                        let model = index % 4 < 2 ? "small" : "big"
                        group.addTask {
                            try await store.apiKeys.recordUsage(
                                keyID: "key_0001", model: model, inputTokens: index, outputTokens: 1, now: Self.t0.addingTimeInterval(Double(index)))
                        }
                    }
                    try await group.waitForAll()
                }
            }
            try await second.close()
            let usage = Dictionary(uniqueKeysWithValues: try await first.apiKeys.usage(keyID: "key_0001").map { ($0.model, $0) })
            let small = (0..<40).filter { $0 % 4 < 2 }
            let big = (0..<40).filter { $0 % 4 >= 2 }
            #expect(usage["small"]?.requests == 20 && usage["small"]?.inputTokens == small.reduce(0, +) && usage["small"]?.outputTokens == 20)
            #expect(usage["big"]?.requests == 20 && usage["big"]?.inputTokens == big.reduce(0, +) && usage["big"]?.outputTokens == 20)
            #expect(usage["small"]?.lastUsedAt == Self.t0.addingTimeInterval(37) && usage["big"]?.lastUsedAt == Self.t0.addingTimeInterval(39))
        }
    }

    @Test("a stored key is usable until it expires or is revoked, to the millisecond", arguments: Driver.available)
    func expiry(driver: Driver) async throws {
        try await StoreFixture.make(driver).withStore { store in
            let keys = store.apiKeys
            let expiring = Self.key("key_0001", expiresIn: 60)
            let forever = Self.key("key_0002")
            try await keys.createKey(expiring)
            try await keys.createKey(forever)
            let stored = try #require(try await keys.key(hash: expiring.hash))
            #expect(stored.expiresAt == Self.t0.addingTimeInterval(60))
            #expect(stored.isUsable(at: Self.t0.addingTimeInterval(59.999)))
            #expect(!stored.isUsable(at: Self.t0.addingTimeInterval(60)))
            let lasting = try #require(try await keys.key(hash: forever.hash))
            #expect(lasting.expiresAt == nil && lasting.isUsable(at: Self.t0.addingTimeInterval(86_400 * 3650)))
            _ = try await keys.revokeKey(idOrName: forever.id, now: Self.t0.addingTimeInterval(1))
            #expect(try await keys.key(hash: forever.hash)?.isUsable(at: Self.t0.addingTimeInterval(2)) == false)
        }
    }
}
