import Crypto
import Foundation
import KeelCore

/// `upload.digest {upload_id}`: computes a finished upload's SHA-256 off the
/// request path and keeps it, for `GET /api/uploads/{id}/info` on uploads
/// too large to hash while the client waits (`--upload-digest-inline-max`).
/// A durable job, so a process that dies mid-hash leaves the work to another.
struct UploadDigestJob: JobHandler {
    static let type = "upload.digest"
    var type: String { Self.type }

    let store: any UploadStore
    let blobs: any BlobStore

    func validate(_ input: JSONValue) throws -> JSONValue {
        guard case .object(let members) = input, members.count == 1, case .string(let id)? = members["upload_id"], !id.isEmpty, id.utf8.count <= 64 else {
            throw KeelError(.invalidInput, #"upload.digest takes {"upload_id": "…"}."#)
        }
        return .object(["upload_id": .string(id)])
    }

    func run(_ job: JobContext) async throws -> JSONValue {
        guard case .string(let id)? = job.input.objectValue?["upload_id"] else {
            throw JobHandlerFailure(code: "invalid_input", message: "upload.digest has no upload_id.", retryable: false)
        }
        // Another session's upload does not exist for this job.
        guard let upload = try await self.store.upload(id: id), upload.sessionID == job.sessionID, upload.status == .complete,
            let length = upload.length
        else {
            throw JobHandlerFailure(code: "not_found", message: "No finished upload '\(id)' for this session.", retryable: false)
        }
        if let known = upload.sha256 { return .object(["upload_id": .string(id), "sha256": .string(known)]) }
        try await job.progress(stage: "hashing", percent: 0)
        let digest = try await Self.sha256(of: upload, length: length, store: self.store, blobs: self.blobs)
        try await self.store.setDigest(uploadID: id, sha256: digest)
        return .object(["upload_id": .string(id), "sha256": .string(digest)])
    }

    /// The hex SHA-256 of a finished upload's bytes, read a piece at a time.
    static func sha256(of upload: Upload, length: Int64, store: any UploadStore, blobs: any BlobStore) async throws -> String {
        var hasher = SHA256()
        let segments = try await store.segments(uploadID: upload.id)
        try await UploadsController.stream(segments: segments, from: 0, count: length, blobs: blobs) { bytes in
            try Task.checkCancellation()
            hasher.update(data: bytes)
        }
        return hasher.finalize().map { String(format: "%02x", $0) }.joined()
    }
}
