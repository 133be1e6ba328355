import Foundation
import GRDB
import KeelCore

/// Upload records and segments in SQLite. Every mutation is one
/// `BEGIN IMMEDIATE` transaction, so the lease check and the write it guards
/// are atomic across processes.
struct SQLiteUploadStore: UploadStore {
    let pool: DatabasePool

    static let columns = """
        id, session_id, length, upload_offset, metadata, status, created_at, updated_at, expires_at, completed_at,
        announced_at, sha256, lease_owner, lease_token, lease_renewed_at
        """

    func createUpload(_ upload: Upload) async throws {
        try await withStoreErrors {
            try await self.pool.write { db in
                try db.executeCached(
                    sql: """
                        INSERT INTO keel_uploads (id, session_id, length, upload_offset, metadata, status, created_at, updated_at,
                            expires_at, completed_at, announced_at, sha256)
                        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                        """,
                    arguments: [
                        upload.id, upload.sessionID, upload.length, upload.offset, upload.metadata, upload.status.rawValue,
                        upload.createdAt.millisecondsSince1970, upload.updatedAt.millisecondsSince1970,
                        upload.expiresAt?.millisecondsSince1970, upload.completedAt?.millisecondsSince1970,
                        upload.announcedAt?.millisecondsSince1970, upload.sha256,
                    ]
                )
            }
        }
    }

    func upload(id: String) async throws -> Upload? {
        try await withStoreErrors {
            try await self.pool.read { db in try Self.fetch(db, id: id)?.upload }
        }
    }

    func segments(uploadID: String) async throws -> [UploadSegment] {
        try await withStoreErrors {
            try await self.pool.read { db in try Self.segments(db, uploadID: uploadID) }
        }
    }

    func acquire(uploadID: String, owner: String, staleAfter: Duration, now: Date) async throws -> UploadAcquisition {
        let token = Identifiers.random(byteCount: 16)
        return try await withStoreErrors {
            try await self.pool.write { db -> UploadAcquisition in
                guard let stored = try Self.fetch(db, id: uploadID), stored.upload.status == .uploading else {
                    return .unavailable(try Self.fetch(db, id: uploadID)?.upload)
                }
                let ms = now.millisecondsSince1970
                var tookOver = false
                if stored.leaseToken != nil {
                    let quiet = Duration.milliseconds(ms - (stored.leaseRenewedAt ?? 0))
                    guard quiet > staleAfter else { return .busy(owner: stored.leaseOwner ?? "", quietFor: quiet) }
                    tookOver = true
                }
                try db.executeCached(
                    sql: "UPDATE keel_uploads SET lease_token = ?, lease_owner = ?, lease_renewed_at = ? WHERE id = ?",
                    arguments: [token, owner, ms, uploadID]
                )
                return .acquired(stored.upload, UploadLease(uploadID: uploadID, token: token, owner: owner), tookOver: tookOver)
            }
        }
    }

    func renew(_ lease: UploadLease, now: Date) async throws -> Bool {
        try await withStoreErrors {
            try await self.pool.write { db in
                try db.executeCached(
                    sql: "UPDATE keel_uploads SET lease_renewed_at = ? WHERE id = ? AND lease_token = ? AND status = 'uploading'",
                    arguments: [now.millisecondsSince1970, lease.uploadID, lease.token]
                )
                return db.changesCount > 0
            }
        }
    }

    func commit(
        _ lease: UploadLease, segment: UploadSegment?, declaredLength: Int64?, expiry: UploadExpiry, now: Date, releasing: Bool
    ) async throws -> Upload {
        try await withStoreErrors {
            try await self.pool.write { db -> Upload in
                guard let stored = try Self.fetch(db, id: lease.uploadID), stored.leaseToken == lease.token, stored.upload.status == .uploading else {
                    throw KeelError.uploadLeaseLost(lease.uploadID)
                }
                var upload = stored.upload
                let transition = try UploadTransition(upload: upload, segment: segment, declaredLength: declaredLength, expiry: expiry, now: now)
                upload = transition.apply(to: upload)
                try db.executeCached(
                    sql: """
                        UPDATE keel_uploads SET upload_offset = ?, length = ?, status = ?, updated_at = ?, expires_at = ?, completed_at = ?,
                            lease_renewed_at = ?,
                            lease_token = CASE WHEN ? THEN NULL ELSE lease_token END,
                            lease_owner = CASE WHEN ? THEN NULL ELSE lease_owner END
                        WHERE id = ?
                        """,
                    arguments: [
                        upload.offset, upload.length, upload.status.rawValue, now.millisecondsSince1970, upload.expiresAt?.millisecondsSince1970,
                        upload.completedAt?.millisecondsSince1970, now.millisecondsSince1970, releasing, releasing, upload.id,
                    ]
                )
                if let segment, segment.length > 0 {
                    try db.executeCached(
                        sql: "INSERT INTO keel_upload_segments (upload_id, start, length, blob_key) VALUES (?, ?, ?, ?)",
                        arguments: [upload.id, segment.start, segment.length, segment.key]
                    )
                }
                return upload
            }
        }
    }

    func release(_ lease: UploadLease) async throws {
        try await withStoreErrors {
            try await self.pool.write { db in
                try db.executeCached(
                    sql: "UPDATE keel_uploads SET lease_token = NULL, lease_owner = NULL WHERE id = ? AND lease_token = ?",
                    arguments: [lease.uploadID, lease.token]
                )
            }
        }
    }

    func terminate(uploadID: String, now: Date) async throws -> [UploadSegment] {
        try await withStoreErrors {
            try await self.pool.write { db in
                let segments = try Self.segments(db, uploadID: uploadID)
                try db.execute(
                    sql: """
                        UPDATE keel_uploads SET status = 'terminated', updated_at = ?, expires_at = NULL, lease_token = NULL, lease_owner = NULL
                        WHERE id = ? AND status IN ('uploading', 'complete')
                        """,
                    arguments: [now.millisecondsSince1970, uploadID]
                )
                try db.execute(sql: "DELETE FROM keel_upload_segments WHERE upload_id = ?", arguments: [uploadID])
                return segments
            }
        }
    }

    func expire(now: Date, limit: Int) async throws -> [(upload: Upload, segments: [UploadSegment])] {
        try await withStoreErrors {
            try await self.pool.write { db in
                let ms = now.millisecondsSince1970
                let rows = try Row.fetchAll(
                    db,
                    sql: """
                        SELECT \(Self.columns) FROM keel_uploads
                        WHERE expires_at IS NOT NULL AND expires_at <= ? AND status IN ('uploading', 'complete') LIMIT ?
                        """,
                    arguments: [ms, limit]
                )
                return try Self.end(rows.map { try Self.decode($0).upload }, db, ms: ms)
            }
        }
    }

    /// Ends uploads in the caller's transaction: an unfinished one becomes
    /// `expired` (its row kept as a tombstone), a complete one is removed;
    /// either way its segments are forgotten and returned, so their blobs can
    /// be deleted.
    private static func end(_ uploads: [Upload], _ db: Database, ms: Int64) throws -> [(upload: Upload, segments: [UploadSegment])] {
        var ended: [(upload: Upload, segments: [UploadSegment])] = []
        for upload in uploads {
            let segments = try Self.segments(db, uploadID: upload.id)
            if upload.status == .uploading {
                try db.execute(
                    sql: """
                        UPDATE keel_uploads SET status = 'expired', updated_at = ?, expires_at = NULL, lease_token = NULL, lease_owner = NULL
                        WHERE id = ?
                        """,
                    arguments: [ms, upload.id]
                )
            } else {
                try db.execute(sql: "DELETE FROM keel_uploads WHERE id = ?", arguments: [upload.id])
            }
            try db.execute(sql: "DELETE FROM keel_upload_segments WHERE upload_id = ?", arguments: [upload.id])
            ended.append((upload, segments))
        }
        return ended
    }

    func removeOrphaned(completedBefore: Date, limit: Int) async throws -> [(upload: Upload, segments: [UploadSegment])] {
        try await withStoreErrors {
            try await self.pool.write { db in
                let rows = try Row.fetchAll(
                    db,
                    sql: """
                        SELECT \(Self.columns) FROM keel_uploads
                        WHERE status = 'complete' AND completed_at < ?
                          AND NOT EXISTS (SELECT 1 FROM keel_sessions WHERE keel_sessions.id = keel_uploads.session_id)
                        LIMIT ?
                        """,
                    arguments: [completedBefore.millisecondsSince1970, limit]
                )
                // Only complete uploads match: each is removed.
                return try Self.end(rows.map { try Self.decode($0).upload }, db, ms: completedBefore.millisecondsSince1970)
            }
        }
    }

    func purgeEnded(before: Date, limit: Int) async throws -> Int {
        try await withStoreErrors {
            try await self.pool.write { db in
                try db.execute(
                    sql: """
                        DELETE FROM keel_uploads WHERE id IN (
                            SELECT id FROM keel_uploads WHERE status IN ('terminated', 'expired') AND updated_at < ? LIMIT ?)
                        """,
                    arguments: [before.millisecondsSince1970, limit]
                )
                return db.changesCount
            }
        }
    }

    func unannounced(before: Date, limit: Int) async throws -> [Upload] {
        try await withStoreErrors {
            try await self.pool.read { db in
                try Row.fetchAll(
                    db,
                    sql: """
                        SELECT \(Self.columns) FROM keel_uploads
                        WHERE status = 'complete' AND announced_at IS NULL AND completed_at < ? ORDER BY completed_at LIMIT ?
                        """,
                    arguments: [before.millisecondsSince1970, limit]
                ).map { try Self.decode($0).upload }
            }
        }
    }

    func markAnnounced(uploadID: String, now: Date) async throws {
        try await withStoreErrors {
            try await self.pool.write { db in
                try db.execute(
                    sql: "UPDATE keel_uploads SET announced_at = ? WHERE id = ? AND announced_at IS NULL",
                    arguments: [now.millisecondsSince1970, uploadID]
                )
            }
        }
    }

    func setDigest(uploadID: String, sha256: String) async throws {
        try await withStoreErrors {
            try await self.pool.write { db in
                try db.execute(sql: "UPDATE keel_uploads SET sha256 = ? WHERE id = ? AND status = 'complete'", arguments: [sha256, uploadID])
            }
        }
    }

    // MARK: Rows

    struct Stored {
        var upload: Upload
        var leaseOwner: String?
        var leaseToken: String?
        var leaseRenewedAt: Int64?
    }

    static func fetch(_ db: Database, id: String) throws -> Stored? {
        try Row.fetchOne(cached: db, sql: "SELECT \(Self.columns) FROM keel_uploads WHERE id = ?", arguments: [id]).map(Self.decode)
    }

    static func segments(_ db: Database, uploadID: String) throws -> [UploadSegment] {
        try Row.fetchAll(
            cached: db,
            sql: "SELECT start, length, blob_key FROM keel_upload_segments WHERE upload_id = ? ORDER BY start",
            arguments: [uploadID]
        ).map { UploadSegment(start: $0["start"], length: $0["length"], key: $0["blob_key"]) }
    }

    static func decode(_ row: Row) throws -> Stored {
        func date(_ column: String) -> Date? {
            (row[column] as Int64?).map(Date.init(millisecondsSince1970:))
        }
        let statusText: String = row["status"]
        guard let status = UploadStatus(rawValue: statusText) else {
            throw KeelError(.internalError, "Upload has unknown status '\(statusText)'.")
        }
        let upload = Upload(
            id: row["id"], sessionID: row["session_id"], length: row["length"], offset: row["upload_offset"], metadata: row["metadata"],
            status: status, createdAt: date("created_at")!, updatedAt: date("updated_at"), expiresAt: date("expires_at"),
            completedAt: date("completed_at"), announcedAt: date("announced_at"), sha256: row["sha256"]
        )
        return Stored(upload: upload, leaseOwner: row["lease_owner"], leaseToken: row["lease_token"], leaseRenewedAt: row["lease_renewed_at"])
    }
}
