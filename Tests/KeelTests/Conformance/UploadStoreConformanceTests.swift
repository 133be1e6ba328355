import Foundation
import KeelCore
import Testing

/// The blob backends a test can run against: a directory always, the
/// database when PostgreSQL is available.
enum BlobBackend: String, CaseIterable, CustomTestStringConvertible, Sendable {
    case directory
    case postgres

    /// Every backend; a PostgreSQL case without a server is reported as skipped.
    static var available: [BlobBackend] { BlobBackend.allCases }
    var testDescription: String { self.rawValue }
}

/// The contract of `UploadStore` (every store driver) and `BlobStore` (every blob backend), run unchanged.
@Suite("Upload conformance")
struct UploadStoreConformanceTests {
    static let t0 = Date(timeIntervalSince1970: 1_800_000_000)
    static let stale: Duration = .seconds(5)

    static func expiry(_ now: Date = t0) -> UploadExpiry { UploadExpiry(unfinished: now.addingTimeInterval(3600), finished: nil) }

    static func newUpload(_ id: String = Identifiers.random(byteCount: 16), length: Int64? = 10) -> Upload {
        Upload(id: id, sessionID: "s1", length: length, metadata: "filename YS50eHQ=", createdAt: t0, expiresAt: t0.addingTimeInterval(3600))
    }

    static func acquired(_ acquisition: UploadAcquisition) throws -> (Upload, UploadLease, Bool) {
        guard case .acquired(let upload, let lease, let tookOver) = acquisition else {
            Issue.record("expected the lease, got \(acquisition)")
            throw KeelError(.internalError, "no lease")
        }
        return (upload, lease, tookOver)
    }

    @Test("create, read, commit segments in order, complete at the length", arguments: Driver.available)
    func commitToCompletion(driver: Driver) async throws {
        try await StoreFixture.make(driver).withStore { store in
            let upload = Self.newUpload()
            try await store.uploads.createUpload(upload)
            #expect(try await store.uploads.upload(id: upload.id) == upload)
            #expect(try await store.uploads.upload(id: "missing") == nil)
            let (_, lease, tookOver) = try Self.acquired(try await store.uploads.acquire(uploadID: upload.id, owner: "a", staleAfter: Self.stale, now: Self.t0))
            #expect(!tookOver)
            let first = try await store.uploads.commit(
                lease, segment: UploadSegment(start: 0, length: 4, key: "\(upload.id)/k1"), declaredLength: nil, expiry: Self.expiry(), now: Self.t0)
            #expect(first.offset == 4 && first.status == .uploading)
            // A segment that does not continue at the offset is refused and changes nothing.
            await expectKeelError(.offsetMismatch) {
                try await store.uploads.commit(
                    lease, segment: UploadSegment(start: 3, length: 2, key: "\(upload.id)/bad"), declaredLength: nil, expiry: Self.expiry(), now: Self.t0)
            }
            // Past the length too.
            await expectKeelError(.payloadTooLarge) {
                try await store.uploads.commit(
                    lease, segment: UploadSegment(start: 4, length: 7, key: "\(upload.id)/big"), declaredLength: nil, expiry: Self.expiry(), now: Self.t0)
            }
            let done = try await store.uploads.commit(
                lease, segment: UploadSegment(start: 4, length: 6, key: "\(upload.id)/k2"), declaredLength: nil, expiry: Self.expiry(), now: Self.t0)
            #expect(done.offset == 10 && done.status == .complete && done.completedAt == Self.t0 && done.expiresAt == nil)
            #expect(try await store.uploads.segments(uploadID: upload.id).map(\.key) == ["\(upload.id)/k1", "\(upload.id)/k2"])
            // A complete upload takes no more leases.
            guard case .unavailable(let stored?) = try await store.uploads.acquire(uploadID: upload.id, owner: "b", staleAfter: Self.stale, now: Self.t0) else {
                Issue.record("a complete upload was acquired")
                return
            }
            #expect(stored.status == .complete)
            #expect(try await store.uploads.unannounced(before: Self.t0.addingTimeInterval(1), limit: 10).map(\.id) == [upload.id])
            try await store.uploads.markAnnounced(uploadID: upload.id, now: Self.t0)
            #expect(try await store.uploads.unannounced(before: Self.t0.addingTimeInterval(1), limit: 10).isEmpty)
            try await store.uploads.setDigest(uploadID: upload.id, sha256: "abc")
            #expect(try await store.uploads.upload(id: upload.id)?.sha256 == "abc")
        }
    }

    @Test("one lease at a time: busy while the holder renews, taken over once it is silent, and the stale holder is fenced", arguments: Driver.available)
    func leases(driver: Driver) async throws {
        try await StoreFixture.make(driver).withStore { store in
            let upload = Self.newUpload(length: nil)
            try await store.uploads.createUpload(upload)
            let (_, first, _) = try Self.acquired(try await store.uploads.acquire(uploadID: upload.id, owner: "a", staleAfter: Self.stale, now: Self.t0))
            guard case .busy(let owner, _) = try await store.uploads.acquire(uploadID: upload.id, owner: "b", staleAfter: Self.stale, now: Self.t0.addingTimeInterval(4)) else {
                Issue.record("a held lease was handed out")
                return
            }
            #expect(owner == "a")
            #expect(try await store.uploads.renew(first, now: Self.t0.addingTimeInterval(4)))
            guard case .busy = try await store.uploads.acquire(uploadID: upload.id, owner: "b", staleAfter: Self.stale, now: Self.t0.addingTimeInterval(8)) else {
                Issue.record("a renewed lease was taken")
                return
            }
            let (_, second, tookOver) = try Self.acquired(
                try await store.uploads.acquire(uploadID: upload.id, owner: "b", staleAfter: Self.stale, now: Self.t0.addingTimeInterval(10)))
            #expect(tookOver)
            // The old holder can neither renew nor commit.
            #expect(try await !store.uploads.renew(first, now: Self.t0.addingTimeInterval(10)))
            await expectKeelError(.leaseLost) {
                try await store.uploads.commit(
                    first, segment: UploadSegment(start: 0, length: 3, key: "\(upload.id)/old"), declaredLength: nil, expiry: Self.expiry(), now: Self.t0)
            }
            // Deferred length declared with the last commit.
            let done = try await store.uploads.commit(
                second, segment: UploadSegment(start: 0, length: 3, key: "\(upload.id)/new"), declaredLength: 3, expiry: Self.expiry(), now: Self.t0)
            #expect(done.length == 3 && done.status == .complete)
            #expect(try await store.uploads.segments(uploadID: upload.id).map(\.key) == ["\(upload.id)/new"])
            // A commit that releases leaves the lease free for the next PATCH, with no takeover.
            let next = Self.newUpload()
            try await store.uploads.createUpload(next)
            let (_, first2, _) = try Self.acquired(try await store.uploads.acquire(uploadID: next.id, owner: "a", staleAfter: Self.stale, now: Self.t0))
            _ = try await store.uploads.commit(
                first2, segment: UploadSegment(start: 0, length: 4, key: "\(next.id)/k"), declaredLength: nil, expiry: Self.expiry(), now: Self.t0, releasing: true)
            let (resumed, _, nextTookOver) = try Self.acquired(try await store.uploads.acquire(uploadID: next.id, owner: "b", staleAfter: Self.stale, now: Self.t0))
            #expect(!nextTookOver && resumed.offset == 4)
            // Released leases are free at once.
            let other = Self.newUpload()
            try await store.uploads.createUpload(other)
            let (_, held, _) = try Self.acquired(try await store.uploads.acquire(uploadID: other.id, owner: "a", staleAfter: Self.stale, now: Self.t0))
            try await store.uploads.release(held)
            _ = try Self.acquired(try await store.uploads.acquire(uploadID: other.id, owner: "b", staleAfter: Self.stale, now: Self.t0))
        }
    }

    @Test("complete uploads of sessions that no longer exist are removed after the grace; others stay", arguments: Driver.available)
    func orphans(driver: Driver) async throws {
        try await StoreFixture.make(driver).withStore { store in
            let now = Self.t0
            try await store.sessions.createSession(
                Session(id: "s1", dataJSON: "{}", version: 1, createdAt: now, lastSeenAt: now, expiresAt: now.addingTimeInterval(3600)))
            func finished(_ session: String) async throws -> Upload {
                var upload = Upload(id: Identifiers.random(byteCount: 16), sessionID: session, length: 2, metadata: "", createdAt: now, expiresAt: nil)
                try await store.uploads.createUpload(upload)
                let (_, lease, _) = try Self.acquired(try await store.uploads.acquire(uploadID: upload.id, owner: "a", staleAfter: Self.stale, now: now))
                upload = try await store.uploads.commit(
                    lease, segment: UploadSegment(start: 0, length: 2, key: "\(upload.id)/k"), declaredLength: nil, expiry: Self.expiry(), now: now,
                    releasing: true)
                #expect(upload.status == .complete)
                return upload
            }
            let kept = try await finished("s1")
            let orphan = try await finished("ended")
            var unfinished = Upload(id: Identifiers.random(byteCount: 16), sessionID: "ended", length: 9, metadata: "", createdAt: now, expiresAt: nil)
            try await store.uploads.createUpload(unfinished)
            // Within the grace nothing goes.
            #expect(try await store.uploads.removeOrphaned(completedBefore: now, limit: 10).isEmpty)
            let removed = try await store.uploads.removeOrphaned(completedBefore: now.addingTimeInterval(1), limit: 10)
            #expect(removed.map(\.upload.id) == [orphan.id])
            #expect(removed.first?.segments.map(\.key) == ["\(orphan.id)/k"])
            #expect(try await store.uploads.upload(id: orphan.id) == nil)
            #expect(try await store.uploads.segments(uploadID: orphan.id).isEmpty)
            #expect(try await store.uploads.upload(id: kept.id)?.status == .complete)
            unfinished = try #require(try await store.uploads.upload(id: unfinished.id))
            #expect(unfinished.status == .uploading)
        }
    }

    @Test("terminate, expire and purge", arguments: Driver.available)
    func endings(driver: Driver) async throws {
        try await StoreFixture.make(driver).withStore { store in
            let terminated = Self.newUpload()
            try await store.uploads.createUpload(terminated)
            let (_, lease, _) = try Self.acquired(try await store.uploads.acquire(uploadID: terminated.id, owner: "a", staleAfter: Self.stale, now: Self.t0))
            _ = try await store.uploads.commit(
                lease, segment: UploadSegment(start: 0, length: 2, key: "\(terminated.id)/k"), declaredLength: nil, expiry: Self.expiry(), now: Self.t0)
            #expect(try await store.uploads.terminate(uploadID: terminated.id, now: Self.t0).map(\.key) == ["\(terminated.id)/k"])
            #expect(try await store.uploads.upload(id: terminated.id)?.status == .terminated)
            #expect(try await store.uploads.segments(uploadID: terminated.id).isEmpty)
            // The writer that held the lease is fenced out.
            await expectKeelError(.leaseLost) {
                try await store.uploads.commit(
                    lease, segment: UploadSegment(start: 2, length: 2, key: "\(terminated.id)/k2"), declaredLength: nil, expiry: Self.expiry(), now: Self.t0)
            }

            let stale = Self.newUpload()
            try await store.uploads.createUpload(stale)
            var kept = Self.newUpload()
            kept.expiresAt = Self.t0.addingTimeInterval(7200)
            try await store.uploads.createUpload(kept)
            var retained = Self.newUpload(length: 0)
            retained.status = .complete
            retained.completedAt = Self.t0
            retained.expiresAt = Self.t0.addingTimeInterval(60)
            try await store.uploads.createUpload(retained)
            let expired = try await store.uploads.expire(now: Self.t0.addingTimeInterval(3600), limit: 10)
            #expect(Set(expired.map(\.upload.id)) == [stale.id, retained.id])
            #expect(try await store.uploads.upload(id: stale.id)?.status == .expired)
            #expect(try await store.uploads.upload(id: retained.id) == nil)
            #expect(try await store.uploads.upload(id: kept.id)?.status == .uploading)
            guard case .unavailable(let gone?) = try await store.uploads.acquire(uploadID: stale.id, owner: "a", staleAfter: Self.stale, now: Self.t0) else {
                Issue.record("an expired upload was acquired")
                return
            }
            #expect(gone.status == .expired)
            #expect(try await store.uploads.purgeEnded(before: Self.t0.addingTimeInterval(3601), limit: 10) == 2)
            #expect(try await store.uploads.upload(id: stale.id) == nil)
        }
    }

    @Test("blobs: written bytes read back at any offset once finished; discard and delete remove them", arguments: BlobBackend.available)
    func blobs(backend: BlobBackend) async throws {
        let fixture = try await StoreFixture.make(backend == .postgres ? .postgres : .sqlite)
        try await fixture.withStore { store in
            let blobs: any BlobStore =
                backend == .postgres ? try #require(store.databaseBlobs) : try DirectoryBlobStore(root: fixture.directory.appendingPathComponent("blobs").path)
            let uploadID = Identifiers.random(byteCount: 16)
            let content = (0..<2_500_000).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 11) }
            let writer = try await blobs.makeWriter(uploadID: uploadID)
            #expect(writer.key.hasPrefix(uploadID + "/"))
            for start in stride(from: 0, to: content.count, by: 700_000) {
                try await writer.write(Array(content[start..<min(start + 700_000, content.count)]))
            }
            try await writer.finish()
            #expect(try await blobs.read(key: writer.key, offset: 0, count: 10) == Array(content[0..<10]))
            #expect(try await blobs.read(key: writer.key, offset: 1_048_570, count: 20) == Array(content[1_048_570..<1_048_590]))
            #expect(try await blobs.read(key: writer.key, offset: 0, count: content.count) == content)
            #expect(try await blobs.read(key: writer.key, offset: 2_499_990, count: 100) == Array(content[2_499_990...]))

            let discarded = try await blobs.makeWriter(uploadID: uploadID)
            try await discarded.write([1, 2, 3])
            await discarded.discard()
            #expect(try await blobs.read(key: discarded.key, offset: 0, count: 3).isEmpty)

            let second = try await blobs.makeWriter(uploadID: uploadID)
            try await second.write([9, 9])
            try await second.finish()
            try await blobs.deleteBlobs(uploadID: uploadID, keeping: [writer.key])
            #expect(try await blobs.read(key: second.key, offset: 0, count: 2).isEmpty)
            #expect(try await blobs.read(key: writer.key, offset: 0, count: 2) == Array(content[0..<2]))
            try await blobs.deleteBlobs(uploadID: uploadID, keeping: [])
            #expect(try await blobs.read(key: writer.key, offset: 0, count: 2).isEmpty)
        }
    }
}
