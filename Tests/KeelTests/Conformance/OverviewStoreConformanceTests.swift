import Foundation
import KeelCore
import Testing

/// The contract of `OverviewStore`, run unchanged on every driver.
@Suite("Overview store conformance")
struct OverviewStoreConformanceTests {
    static let t0 = Date(timeIntervalSince1970: 1_800_000_000)

    static func report(_ id: String, seen offset: TimeInterval, streams: Int = 0) -> InstanceReport {
        InstanceReport(
            id: id, version: "1.2.3", startedAt: t0.addingTimeInterval(-60), seenAt: t0.addingTimeInterval(offset),
            figures: .object(["open_streams": .int(Int64(streams)), "models": .object([:])]))
    }

    @Test("an instance's report replaces its last; instances list by last seen, the most recent first; old ones are purged", arguments: Driver.available)
    func instances(driver: Driver) async throws {
        try await StoreFixture.make(driver).withStore { store in
            let overview = store.overview
            #expect(try await overview.instances(seenSince: Self.t0.addingTimeInterval(-3600)).isEmpty)
            try await overview.recordInstance(Self.report("a", seen: 0, streams: 1))
            try await overview.recordInstance(Self.report("b", seen: 5))
            try await overview.recordInstance(Self.report("c", seen: -600))
            try await overview.recordInstance(Self.report("a", seen: 10, streams: 3))
            let recent = try await overview.instances(seenSince: Self.t0.addingTimeInterval(-60))
            #expect(recent == [Self.report("a", seen: 10, streams: 3), Self.report("b", seen: 5)])
            #expect(try await overview.instances(seenSince: Self.t0.addingTimeInterval(-3600)).map(\.id) == ["a", "b", "c"])
            #expect(try await overview.purgeInstances(seenBefore: Self.t0) == 1)
            #expect(try await overview.instances(seenSince: .distantPast).map(\.id) == ["a", "b"])
        }
    }

    @Test("jobs counted by type and status; activity in buckets: created, and ended by final status", arguments: Driver.available)
    func jobs(driver: Driver) async throws {
        try await StoreFixture.make(driver).withStore { store in
            let jobs = store.jobs
            #expect(try await store.overview.jobCounts().isEmpty)
            #expect(try await store.overview.jobActivity(since: .distantPast, bucket: .seconds(60)).isEmpty)
            // t0 is a multiple of 60 s: buckets start at t0, t0 + 60, …
            func job(_ type: String, at offset: TimeInterval) async throws -> Job {
                try await jobs.enqueue(NewJob(sessionID: "s", type: type, inputJSON: "{}", maxAttempts: 1), now: Self.t0.addingTimeInterval(offset)).job
            }
            let early = try await job("a", at: -120)
            _ = try await job("a", at: 5)
            _ = try await job("a", at: 70)
            _ = try await job("b", at: 61)
            // `early` and one more run; `early` succeeds at t0 + 10, the other fails at t0 + 75.
            let first = try #require(try await jobs.claim(owner: "w", types: ["a"], leaseDuration: .seconds(30), now: Self.t0.addingTimeInterval(6)))
            #expect(first.job.id == early.id)
            _ = try await jobs.succeed(first.lease, resultJSON: "{}", timing: JobTiming(now: Self.t0.addingTimeInterval(10), resultTTL: .seconds(3600)))
            let second = try #require(try await jobs.claim(owner: "w", types: ["b"], leaseDuration: .seconds(30), now: Self.t0.addingTimeInterval(71)))
            _ = try await jobs.fail(
                second.lease, error: JobFailure(code: "x", message: "x"), retryAt: nil,
                timing: JobTiming(now: Self.t0.addingTimeInterval(75), resultTTL: .seconds(3600)))

            #expect(
                try await store.overview.jobCounts() == [
                    JobCount(type: "a", status: .queued, count: 2), JobCount(type: "a", status: .succeeded, count: 1),
                    JobCount(type: "b", status: .failed, count: 1),
                ])
            // From 30 s into the first bucket: the bucket is whole, the job created before it is not counted.
            let activity = try await store.overview.jobActivity(since: Self.t0.addingTimeInterval(30), bucket: .seconds(60))
            #expect(
                activity == [
                    JobActivity(start: Self.t0, created: 1, succeeded: 1),
                    JobActivity(start: Self.t0.addingTimeInterval(60), created: 2, failed: 1),
                ])
            let all = try await store.overview.jobActivity(since: Self.t0.addingTimeInterval(-120), bucket: .seconds(120))
            #expect(all.map(\.start) == [Self.t0.addingTimeInterval(-120), Self.t0])
            #expect(all.map(\.created) == [1, 3] && all.map(\.succeeded) == [0, 1] && all.map(\.failed) == [0, 1])
        }
    }

    @Test("uploads created since a time, by status, with the bytes they received", arguments: Driver.available)
    func uploads(driver: Driver) async throws {
        try await StoreFixture.make(driver).withStore { store in
            let uploads = store.uploads
            #expect(try await store.overview.uploadTotals(since: .distantPast) == UploadTotals())
            func upload(at offset: TimeInterval) -> Upload {
                Upload(
                    id: Identifiers.random(byteCount: 16), sessionID: "s", length: 10, metadata: "",
                    createdAt: Self.t0.addingTimeInterval(offset), expiresAt: Self.t0.addingTimeInterval(3600))
            }
            let expiry = UploadExpiry(unfinished: Self.t0.addingTimeInterval(3600), finished: nil)
            let complete = upload(at: 0)
            let partial = upload(at: 1)
            let ended = upload(at: 2)
            let old = upload(at: -7200)
            for item in [complete, partial, ended, old] { try await uploads.createUpload(item) }
            for (item, bytes) in [(complete, Int64(10)), (partial, 4), (old, 3)] {
                guard case .acquired(_, let lease, _) = try await uploads.acquire(uploadID: item.id, owner: "o", staleAfter: .seconds(5), now: Self.t0) else {
                    Issue.record("no lease")
                    return
                }
                _ = try await uploads.commit(
                    lease, segment: UploadSegment(start: 0, length: bytes, key: "\(item.id)/k"), declaredLength: nil, expiry: expiry, now: Self.t0)
                try await uploads.release(lease)
            }
            _ = try await uploads.terminate(uploadID: ended.id, now: Self.t0)
            let totals = try await store.overview.uploadTotals(since: Self.t0.addingTimeInterval(-60))
            #expect(totals == UploadTotals(byStatus: [.complete: 1, .uploading: 1, .terminated: 1], bytesReceived: 14))
            #expect(try await store.overview.uploadTotals(since: .distantPast).bytesReceived == 17)
        }
    }
}
