import Foundation

/// Resumable uploads' records: lengths, offsets, which blobs hold their
/// bytes, and the one-writer-at-a-time lease. The bytes themselves live in a
/// ``BlobStore``.
///
/// The invariant every driver keeps: an upload's offset equals the sum of its
/// committed segments, and a segment is committed only after its bytes are
/// durable, so the offset never runs ahead of the data.
public protocol UploadStore: Sendable {
    /// Stores a new upload (offset 0, or complete when its length is 0).
    func createUpload(_ upload: Upload) async throws

    func upload(id: String) async throws -> Upload?

    /// The committed segments in order of `start`; they tile `0..<offset`.
    func segments(uploadID: String) async throws -> [UploadSegment]

    /// Takes the upload's lease for one PATCH. Succeeds when nobody holds it,
    /// or the holder renewed it more than `staleAfter` ago (it died or went
    /// silent: a takeover). Only `uploading` uploads can be acquired.
    func acquire(uploadID: String, owner: String, staleAfter: Duration, now: Date) async throws -> UploadAcquisition

    /// Tells other PATCHes the holder is alive and writing; false once the lease is lost.
    func renew(_ lease: UploadLease, now: Date) async throws -> Bool

    /// Appends a durable segment (whose `start` must equal the current
    /// offset) and, when given, records the length a deferred-length upload
    /// declared. Completes the upload when the offset reaches the length,
    /// and sets the new expiry. Fenced by the lease: throws
    /// ``KeelError/Code/leaseLost`` once another PATCH took it over or the
    /// upload ended, and ``KeelError/Code/offsetMismatch`` when `start` is not the offset.
    /// With `releasing`, the lease is given back in the same transaction (a PATCH's last commit).
    func commit(
        _ lease: UploadLease, segment: UploadSegment?, declaredLength: Int64?, expiry: UploadExpiry, now: Date, releasing: Bool
    ) async throws -> Upload

    /// Gives the lease back (a no-op once lost).
    func release(_ lease: UploadLease) async throws

    /// Ends an upload at its owner's request: it becomes `terminated`, and its
    /// segments are forgotten and returned so their blobs can be deleted.
    func terminate(uploadID: String, now: Date) async throws -> [UploadSegment]

    /// Unfinished uploads past their expiry become `expired`, complete ones past
    /// their retention are removed; returns them with their segments so their
    /// blobs can be deleted. At most `limit` per call.
    func expire(now: Date, limit: Int) async throws -> [(upload: Upload, segments: [UploadSegment])]

    /// Removes complete uploads, finished before `completedBefore`, whose
    /// session no longer exists (ended, or expired and purged): nobody can
    /// read them. Returns them with their segments so their blobs can be
    /// deleted. At most `limit` per call.
    func removeOrphaned(completedBefore: Date, limit: Int) async throws -> [(upload: Upload, segments: [UploadSegment])]

    /// Removes the records of terminated and expired uploads that ended before `before`.
    func purgeEnded(before: Date, limit: Int) async throws -> Int

    /// Complete uploads whose completion was not announced, finished before `before`.
    func unannounced(before: Date, limit: Int) async throws -> [Upload]

    func markAnnounced(uploadID: String, now: Date) async throws

    /// Records the content's SHA-256 (hex) once computed.
    func setDigest(uploadID: String, sha256: String) async throws
}

extension UploadStore {
    /// A commit that keeps the lease (more bytes follow in this PATCH).
    public func commit(_ lease: UploadLease, segment: UploadSegment?, declaredLength: Int64?, expiry: UploadExpiry, now: Date) async throws -> Upload {
        try await self.commit(lease, segment: segment, declaredLength: declaredLength, expiry: expiry, now: now, releasing: false)
    }
}

/// The expiry a commit sets: `unfinished` while bytes are missing, `finished`
/// (retention; `nil` keeps it) once the upload completes.
public struct UploadExpiry: Sendable, Equatable {
    public var unfinished: Date
    public var finished: Date?

    public init(unfinished: Date, finished: Date?) {
        self.unfinished = unfinished
        self.finished = finished
    }
}

extension KeelError {
    public static func uploadLeaseLost(_ id: String) -> KeelError {
        KeelError(
            .leaseLost,
            "Another request took over upload \(id), or it ended, while this PATCH was writing; its bytes were discarded.",
            hint: "Send HEAD to learn the stored offset and resume from there."
        )
    }

    public static func offsetMismatch(expected: Int64, sent: Int64) -> KeelError {
        KeelError(
            .offsetMismatch,
            "Upload-Offset \(sent) does not match the upload's offset \(expected).",
            hint: "Send HEAD to learn the stored offset and resume from there."
        )
    }
}

/// Where upload bytes live: a local (or shared) directory, or the database.
///
/// A blob is written once by one writer and becomes part of an upload only
/// when the ``UploadStore`` commits a segment naming it; a writer that lost
/// its lease discards its blob, so concurrent writers never share bytes.
public protocol BlobStore: Sendable {
    /// Short name for logs and `/system-health`: `directory` or `postgres`.
    var kind: String { get }

    /// A new, empty blob for bytes of `uploadID`.
    func makeWriter(uploadID: String) async throws -> any BlobWriter

    /// Up to `count` bytes of blob `key` from `offset` (fewer only at its end;
    /// none for a blob that does not exist).
    func read(key: String, offset: Int64, count: Int) async throws -> [UInt8]

    /// Deletes every blob of `uploadID` except those in `keeping`.
    func deleteBlobs(uploadID: String, keeping: Set<String>) async throws
}

/// Appends to one new blob. Not safe to use from two tasks at once.
public protocol BlobWriter: Sendable {
    var key: String { get }
    /// Appends bytes (durable only after ``finish()``).
    func write(_ bytes: [UInt8]) async throws
    /// Makes every byte written durable and closes the blob; it takes no more bytes.
    func finish() async throws
    /// Deletes the blob (it will not be committed).
    func discard() async
}

/// What a commit does to an upload, the same on every driver: checks the
/// segment continues at the offset and fits the length, then moves the
/// offset, records a declared length, completes and sets the expiry.
public struct UploadTransition: Sendable {
    public var offset: Int64
    public var length: Int64?
    public var complete: Bool
    public var expiresAt: Date?
    public var now: Date

    public init(upload: Upload, segment: UploadSegment?, declaredLength: Int64?, expiry: UploadExpiry, now: Date) throws {
        if let segment, segment.start != upload.offset {
            throw KeelError.offsetMismatch(expected: upload.offset, sent: segment.start)
        }
        var length = upload.length
        if let declaredLength {
            if let length, length != declaredLength {
                throw KeelError(.invalidInput, "Upload-Length \(declaredLength) differs from the upload's length \(length).", hint: "The length can be declared once.")
            }
            length = declaredLength
        }
        let offset = upload.offset + (segment?.length ?? 0)
        if let length, offset > length {
            throw KeelError(.payloadTooLarge, "The upload would exceed its length of \(length) bytes.", hint: "Send exactly Upload-Length bytes in total.")
        }
        self.offset = offset
        self.length = length
        self.complete = length == offset
        self.expiresAt = self.complete ? expiry.finished : expiry.unfinished
        self.now = now
    }

    public func apply(to upload: Upload) -> Upload {
        var upload = upload
        upload.offset = self.offset
        upload.length = self.length
        upload.updatedAt = self.now
        upload.expiresAt = self.expiresAt
        if self.complete {
            upload.status = .complete
            upload.completedAt = self.now
        }
        return upload
    }
}
