import Foundation
import KeelCore
import Logging
import NIOCore
import PostgresNIO
import Synchronization

/// Upload records and segments in PostgreSQL. Lease checks lock the upload's
/// row (`SELECT … FOR UPDATE`) in the transaction that writes, so the check
/// and the write it guards are atomic across instances.
struct PostgresUploadStore: UploadStore, PostgresRole {
    let client: PostgresClient
    let logger: Logger
    let started: StartSignal

    static let columns = """
        id, session_id, length, upload_offset, metadata, status, created_at, updated_at, expires_at, completed_at,
        announced_at, sha256, lease_owner, lease_token, lease_renewed_at
        """

    func createUpload(_ upload: Upload) async throws {
        try await self.operation {
            try await self.client.query(
                """
                INSERT INTO keel_uploads (id, session_id, length, upload_offset, metadata, status, created_at, updated_at,
                    expires_at, completed_at, announced_at, sha256)
                VALUES (\(upload.id), \(upload.sessionID), \(upload.length), \(upload.offset), \(upload.metadata), \(upload.status.rawValue),
                    \(upload.createdAt.millisecondsSince1970), \(upload.updatedAt.millisecondsSince1970), \(upload.expiresAt?.millisecondsSince1970),
                    \(upload.completedAt?.millisecondsSince1970), \(upload.announcedAt?.millisecondsSince1970), \(upload.sha256))
                """,
                logger: self.logger
            )
        }
    }

    func upload(id: String) async throws -> Upload? {
        try await self.operation {
            try await Self.fetch(self.client.query("SELECT \(unescaped: Self.columns) FROM keel_uploads WHERE id = \(id)", logger: self.logger))
                .first?.upload
        }
    }

    func segments(uploadID: String) async throws -> [UploadSegment] {
        try await self.operation {
            try await Self.segments(
                self.client.query(
                    "SELECT start, length, blob_key FROM keel_upload_segments WHERE upload_id = \(uploadID) ORDER BY start", logger: self.logger)
            )
        }
    }

    func acquire(uploadID: String, owner: String, staleAfter: Duration, now: Date) async throws -> UploadAcquisition {
        let token = Identifiers.random(byteCount: 16)
        return try await self.transaction { connection -> UploadAcquisition in
            guard let stored = try await self.locked(connection, uploadID), stored.upload.status == .uploading else {
                return .unavailable(try await self.locked(connection, uploadID)?.upload)
            }
            let ms = now.millisecondsSince1970
            var tookOver = false
            if stored.leaseToken != nil {
                let quiet = Duration.milliseconds(ms - (stored.leaseRenewedAt ?? 0))
                guard quiet > staleAfter else { return .busy(owner: stored.leaseOwner ?? "", quietFor: quiet) }
                tookOver = true
            }
            try await connection.query(
                "UPDATE keel_uploads SET lease_token = \(token), lease_owner = \(owner), lease_renewed_at = \(ms) WHERE id = \(uploadID)",
                logger: self.logger
            )
            return .acquired(stored.upload, UploadLease(uploadID: uploadID, token: token, owner: owner), tookOver: tookOver)
        }
    }

    func renew(_ lease: UploadLease, now: Date) async throws -> Bool {
        try await self.operation {
            let rows = try await self.client.query(
                """
                UPDATE keel_uploads SET lease_renewed_at = \(now.millisecondsSince1970)
                WHERE id = \(lease.uploadID) AND lease_token = \(lease.token) AND status = 'uploading' RETURNING id
                """,
                logger: self.logger
            )
            var renewed = false
            for try await _ in rows.decode(String.self) { renewed = true }
            return renewed
        }
    }

    func commit(
        _ lease: UploadLease, segment: UploadSegment?, declaredLength: Int64?, expiry: UploadExpiry, now: Date, releasing: Bool
    ) async throws -> Upload {
        try await self.transaction { connection -> Upload in
            guard let stored = try await self.locked(connection, lease.uploadID), stored.leaseToken == lease.token,
                stored.upload.status == .uploading
            else {
                throw KeelError.uploadLeaseLost(lease.uploadID)
            }
            let transition = try UploadTransition(upload: stored.upload, segment: segment, declaredLength: declaredLength, expiry: expiry, now: now)
            let upload = transition.apply(to: stored.upload)
            let ms = now.millisecondsSince1970
            try await connection.query(
                """
                UPDATE keel_uploads SET upload_offset = \(upload.offset), length = \(upload.length), status = \(upload.status.rawValue),
                    updated_at = \(ms), expires_at = \(upload.expiresAt?.millisecondsSince1970),
                    completed_at = \(upload.completedAt?.millisecondsSince1970), lease_renewed_at = \(ms),
                    lease_token = CASE WHEN \(releasing) THEN NULL ELSE lease_token END,
                    lease_owner = CASE WHEN \(releasing) THEN NULL ELSE lease_owner END
                WHERE id = \(upload.id)
                """,
                logger: self.logger
            )
            if let segment, segment.length > 0 {
                try await connection.query(
                    """
                    INSERT INTO keel_upload_segments (upload_id, start, length, blob_key)
                    VALUES (\(upload.id), \(segment.start), \(segment.length), \(segment.key))
                    """,
                    logger: self.logger
                )
            }
            return upload
        }
    }

    func release(_ lease: UploadLease) async throws {
        try await self.operation {
            try await self.client.query(
                "UPDATE keel_uploads SET lease_token = NULL, lease_owner = NULL WHERE id = \(lease.uploadID) AND lease_token = \(lease.token)",
                logger: self.logger
            )
        }
    }

    func terminate(uploadID: String, now: Date) async throws -> [UploadSegment] {
        try await self.transaction { connection in
            _ = try await self.locked(connection, uploadID)
            let segments = try await Self.segments(
                connection.query("SELECT start, length, blob_key FROM keel_upload_segments WHERE upload_id = \(uploadID) ORDER BY start", logger: self.logger)
            )
            try await connection.query(
                """
                UPDATE keel_uploads SET status = 'terminated', updated_at = \(now.millisecondsSince1970), expires_at = NULL,
                    lease_token = NULL, lease_owner = NULL
                WHERE id = \(uploadID) AND status IN ('uploading', 'complete')
                """,
                logger: self.logger
            )
            try await connection.query("DELETE FROM keel_upload_segments WHERE upload_id = \(uploadID)", logger: self.logger)
            return segments
        }
    }

    func expire(now: Date, limit: Int) async throws -> [(upload: Upload, segments: [UploadSegment])] {
        let ms = now.millisecondsSince1970
        return try await self.transaction { connection in
            let due = try await Self.fetch(
                connection.query(
                    """
                    SELECT \(unescaped: Self.columns) FROM keel_uploads
                    WHERE expires_at IS NOT NULL AND expires_at <= \(ms) AND status IN ('uploading', 'complete')
                    LIMIT \(limit) FOR UPDATE SKIP LOCKED
                    """,
                    logger: self.logger
                )
            )
            return try await self.end(due.map(\.upload), connection, ms: ms)
        }
    }

    /// Ends uploads in one transaction: an unfinished one becomes `expired`
    /// (its row kept as a tombstone), a complete one is removed; either way
    /// its segments are forgotten and returned, so their blobs can be deleted.
    private func end(_ uploads: [Upload], _ connection: PostgresConnection, ms: Int64) async throws -> [(upload: Upload, segments: [UploadSegment])] {
        var ended: [(upload: Upload, segments: [UploadSegment])] = []
        for upload in uploads {
            let segments = try await Self.segments(
                connection.query("SELECT start, length, blob_key FROM keel_upload_segments WHERE upload_id = \(upload.id) ORDER BY start", logger: self.logger)
            )
            if upload.status == .uploading {
                try await connection.query(
                    """
                    UPDATE keel_uploads SET status = 'expired', updated_at = \(ms), expires_at = NULL, lease_token = NULL, lease_owner = NULL
                    WHERE id = \(upload.id)
                    """,
                    logger: self.logger
                )
            } else {
                try await connection.query("DELETE FROM keel_uploads WHERE id = \(upload.id)", logger: self.logger)
            }
            try await connection.query("DELETE FROM keel_upload_segments WHERE upload_id = \(upload.id)", logger: self.logger)
            ended.append((upload, segments))
        }
        return ended
    }

    func removeOrphaned(completedBefore: Date, limit: Int) async throws -> [(upload: Upload, segments: [UploadSegment])] {
        try await self.transaction { connection in
            let due = try await Self.fetch(
                connection.query(
                    """
                    SELECT \(unescaped: Self.columns) FROM keel_uploads
                    WHERE status = 'complete' AND completed_at < \(completedBefore.millisecondsSince1970)
                      AND NOT EXISTS (SELECT 1 FROM keel_sessions WHERE keel_sessions.id = keel_uploads.session_id)
                    LIMIT \(limit) FOR UPDATE SKIP LOCKED
                    """,
                    logger: self.logger
                )
            )
            // Only complete uploads match: each is removed.
            return try await self.end(due.map(\.upload), connection, ms: completedBefore.millisecondsSince1970)
        }
    }

    func purgeEnded(before: Date, limit: Int) async throws -> Int {
        try await self.operation {
            let rows = try await self.client.query(
                """
                DELETE FROM keel_uploads WHERE id IN (
                    SELECT id FROM keel_uploads WHERE status IN ('terminated', 'expired') AND updated_at < \(before.millisecondsSince1970)
                    LIMIT \(limit))
                RETURNING id
                """,
                logger: self.logger
            )
            var count = 0
            for try await _ in rows.decode(String.self) { count += 1 }
            return count
        }
    }

    func unannounced(before: Date, limit: Int) async throws -> [Upload] {
        try await self.operation {
            try await Self.fetch(
                self.client.query(
                    """
                    SELECT \(unescaped: Self.columns) FROM keel_uploads
                    WHERE status = 'complete' AND announced_at IS NULL AND completed_at < \(before.millisecondsSince1970)
                    ORDER BY completed_at LIMIT \(limit)
                    """,
                    logger: self.logger
                )
            ).map(\.upload)
        }
    }

    func markAnnounced(uploadID: String, now: Date) async throws {
        try await self.operation {
            try await self.client.query(
                "UPDATE keel_uploads SET announced_at = \(now.millisecondsSince1970) WHERE id = \(uploadID) AND announced_at IS NULL",
                logger: self.logger
            )
        }
    }

    func setDigest(uploadID: String, sha256: String) async throws {
        try await self.operation {
            try await self.client.query(
                "UPDATE keel_uploads SET sha256 = \(sha256) WHERE id = \(uploadID) AND status = 'complete'", logger: self.logger)
        }
    }

    // MARK: Rows

    struct Stored {
        var upload: Upload
        var leaseOwner: String?
        var leaseToken: String?
        var leaseRenewedAt: Int64?
    }

    private func locked(_ connection: PostgresConnection, _ id: String) async throws -> Stored? {
        try await Self.fetch(connection.query("SELECT \(unescaped: Self.columns) FROM keel_uploads WHERE id = \(id) FOR UPDATE", logger: self.logger))
            .first
    }

    private static func fetch(_ rows: PostgresRowSequence) async throws -> [Stored] {
        var stored: [Stored] = []
        for try await row in rows {
            let columns = row.makeRandomAccess()
            func date(_ name: String) throws -> Date? {
                try columns[name].decode(Int64?.self).map(Date.init(millisecondsSince1970:))
            }
            let statusText = try columns["status"].decode(String.self)
            guard let status = UploadStatus(rawValue: statusText) else {
                throw KeelError(.internalError, "Upload has unknown status '\(statusText)'.")
            }
            let upload = Upload(
                id: try columns["id"].decode(String.self),
                sessionID: try columns["session_id"].decode(String.self),
                length: try columns["length"].decode(Int64?.self),
                offset: try columns["upload_offset"].decode(Int64.self),
                metadata: try columns["metadata"].decode(String.self),
                status: status,
                createdAt: try date("created_at") ?? Date(timeIntervalSince1970: 0),
                updatedAt: try date("updated_at"),
                expiresAt: try date("expires_at"),
                completedAt: try date("completed_at"),
                announcedAt: try date("announced_at"),
                sha256: try columns["sha256"].decode(String?.self)
            )
            stored.append(
                Stored(
                    upload: upload,
                    leaseOwner: try columns["lease_owner"].decode(String?.self),
                    leaseToken: try columns["lease_token"].decode(String?.self),
                    leaseRenewedAt: try columns["lease_renewed_at"].decode(Int64?.self)
                )
            )
        }
        return stored
    }

    private static func segments(_ rows: PostgresRowSequence) async throws -> [UploadSegment] {
        var segments: [UploadSegment] = []
        for try await (start, length, key) in rows.decode((Int64, Int64, String).self) {
            segments.append(UploadSegment(start: start, length: length, key: key))
        }
        return segments
    }
}

/// Upload bytes inside PostgreSQL: each blob is a run of `bytea` parts of at
/// most ``partSize`` bytes, each inserted in its own (durable) statement.
/// A PostgreSQL cluster then needs no shared volume.
struct PostgresBlobStore: BlobStore {
    let kind = "postgres"
    let client: PostgresClient
    let logger: Logger
    let started: StartSignal

    static let partSize = 1_048_576

    func makeWriter(uploadID: String) async throws -> any BlobWriter {
        PostgresBlobWriter(store: self, uploadID: uploadID, key: uploadID + "/" + Identifiers.random(byteCount: 12))
    }

    func read(key: String, offset: Int64, count: Int) async throws -> [UInt8] {
        await self.started.wait()
        let size = Int64(Self.partSize)
        let first = Int32(offset / size)
        let last = Int32((offset + Int64(count) - 1) / size)
        return try await withStoreErrors {
            let rows = try await self.client.query(
                "SELECT part, data FROM keel_upload_blobs WHERE blob_key = \(key) AND part BETWEEN \(first) AND \(last) ORDER BY part",
                logger: self.logger
            )
            var bytes: [UInt8] = []
            bytes.reserveCapacity(count)
            for try await (part, data) in rows.decode((Int32, ByteBuffer).self) {
                let partStart = Int64(part) * size
                let from = max(0, Int(offset - partStart))
                let wanted = count - bytes.count
                let available = data.readableBytes - from
                guard available > 0, wanted > 0 else { continue }
                bytes += data.getBytes(at: data.readerIndex + from, length: min(available, wanted)) ?? []
            }
            return bytes
        }
    }

    func deleteBlobs(uploadID: String, keeping: Set<String>) async throws {
        await self.started.wait()
        try await withStoreErrors {
            try await self.client.query(
                "DELETE FROM keel_upload_blobs WHERE upload_id = \(uploadID) AND NOT (blob_key = ANY(\(Array(keeping))))", logger: self.logger)
        }
    }

    func insert(key: String, uploadID: String, part: Int32, bytes: ByteBuffer) async throws {
        await self.started.wait()
        try await withStoreErrors {
            try await self.client.query(
                "INSERT INTO keel_upload_blobs (blob_key, part, upload_id, data) VALUES (\(key), \(part), \(uploadID), \(bytes))", logger: self.logger)
        }
    }

    func delete(key: String) async {
        _ = try? await withStoreErrors {
            try await self.client.query("DELETE FROM keel_upload_blobs WHERE blob_key = \(key)", logger: self.logger)
        }
    }
}

/// Fills fixed-size parts and inserts each one when full; `finish` inserts the rest.
final class PostgresBlobWriter: BlobWriter {
    let store: PostgresBlobStore
    let uploadID: String
    let key: String
    private let state = Mutex<(pending: ByteBuffer, nextPart: Int32)>((ByteBuffer(), 0))

    init(store: PostgresBlobStore, uploadID: String, key: String) {
        self.store = store
        self.uploadID = uploadID
        self.key = key
    }

    func write(_ bytes: [UInt8]) async throws {
        var remaining = bytes[...]
        while !remaining.isEmpty {
            let full: (ByteBuffer, Int32)? = self.state.withLock { state in
                let room = PostgresBlobStore.partSize - state.pending.readableBytes
                let taken = remaining.prefix(room)
                _ = taken.withUnsafeBytes { state.pending.writeBytes($0) }
                remaining = remaining.dropFirst(taken.count)
                guard state.pending.readableBytes == PostgresBlobStore.partSize else { return nil }
                defer {
                    state.pending = ByteBuffer()
                    state.nextPart += 1
                }
                return (state.pending, state.nextPart)
            }
            if let (part, number) = full {
                try await self.store.insert(key: self.key, uploadID: self.uploadID, part: number, bytes: part)
            }
        }
    }

    func finish() async throws {
        let last: (ByteBuffer, Int32)? = self.state.withLock { state in
            guard state.pending.readableBytes > 0 else { return nil }
            defer {
                state.pending = ByteBuffer()
                state.nextPart += 1
            }
            return (state.pending, state.nextPart)
        }
        if let (part, number) = last {
            try await self.store.insert(key: self.key, uploadID: self.uploadID, part: number, bytes: part)
        }
    }

    func discard() async {
        await self.store.delete(key: self.key)
    }
}
