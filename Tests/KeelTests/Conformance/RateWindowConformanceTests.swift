import Foundation
import KeelCore
import Testing

/// The contract of `RateWindowStore`, run unchanged on every driver.
@Suite("Rate window conformance")
struct RateWindowConformanceTests {
    static let t0 = Date(timeIntervalSince1970: 1_800_000_000)

    @Test("hits count per key within a fixed window; a new window starts from one", arguments: Driver.available)
    func counting(driver: Driver) async throws {
        try await StoreFixture.make(driver).withStore { store in
            let windows = store.rateWindows
            var counts: [Int] = []
            for second in 0..<5 {
                counts.append(try await windows.hit(key: "a", window: .seconds(60), now: Self.t0.addingTimeInterval(Double(second))).count)
            }
            #expect(counts == [1, 2, 3, 4, 5])
            #expect(try await windows.hit(key: "b", window: .seconds(60), now: Self.t0).count == 1)
            // 1_800_000_000 is a multiple of 60: the window is [t0, t0 + 60 s).
            let last = try await windows.hit(key: "a", window: .seconds(60), now: Self.t0.addingTimeInterval(59.9))
            #expect(last.count == 6 && last.windowEnds == Self.t0.addingTimeInterval(60))
            let next = try await windows.hit(key: "a", window: .seconds(60), now: Self.t0.addingTimeInterval(60))
            #expect(next.count == 1 && next.windowEnds == Self.t0.addingTimeInterval(120))
        }
    }

    @Test("concurrent hits from two store objects (two processes) are all counted", arguments: Driver.available)
    func concurrent(driver: Driver) async throws {
        let fixture = try await StoreFixture.make(driver)
        try await fixture.withStore { first in
            let second = try fixture.openStore()
            try await second.withRunning {
                let counts = try await withThrowingTaskGroup(of: Int.self) { group in
                    for index in 0..<40 {
                        let store = index % 2 == 0 ? first : second
                        group.addTask { try await store.rateWindows.hit(key: "shared", window: .seconds(60), now: Self.t0).count }
                    }
                    return try await group.reduce(into: [Int]()) { $0.append($1) }
                }
                #expect(counts.sorted() == Array(1...40))
            }
            try await second.close()
        }
    }

    @Test("windows that ended are purged, current ones kept", arguments: Driver.available)
    func purge(driver: Driver) async throws {
        try await StoreFixture.make(driver).withStore { store in
            _ = try await store.rateWindows.hit(key: "old", window: .seconds(60), now: Self.t0)
            _ = try await store.rateWindows.hit(key: "new", window: .seconds(60), now: Self.t0.addingTimeInterval(60))
            #expect(try await store.rateWindows.purgeExpired(now: Self.t0.addingTimeInterval(61), limit: 100) == 1)
            #expect(try await store.rateWindows.hit(key: "new", window: .seconds(60), now: Self.t0.addingTimeInterval(61)).count == 2)
            #expect(try await store.rateWindows.hit(key: "old", window: .seconds(60), now: Self.t0).count == 1)
        }
    }
}
