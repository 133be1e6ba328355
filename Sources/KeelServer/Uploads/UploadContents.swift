import KeelCore

/// Finished uploads, for modules that turn them into something else
/// (documents): the record, and the bytes wherever they are kept (files or
/// the database).
public struct UploadContents: Sendable {
    let store: any UploadStore
    let blobs: any BlobStore

    /// The upload, if it exists (of any session: check `sessionID`).
    public func upload(id: String) async throws -> Upload? {
        try await self.store.upload(id: id)
    }

    /// A finished upload's bytes, read a piece at a time into one array.
    /// Throws `upload_incomplete` for an unfinished upload.
    public func bytes(of upload: Upload) async throws -> [UInt8] {
        guard upload.status == .complete, let length = upload.length else {
            throw KeelError(.uploadIncomplete, "Upload '\(upload.id)' has not finished.")
        }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(Int(length))
        let segments = try await self.store.segments(uploadID: upload.id)
        try await UploadsController.stream(segments: segments, from: 0, count: length, blobs: self.blobs) { piece in
            try Task.checkCancellation()
            bytes.append(contentsOf: piece)
        }
        return bytes
    }

    /// The first `count` bytes of a finished upload (fewer if it is shorter),
    /// to tell its type by content.
    public func prefix(of upload: Upload, count: Int) async throws -> [UInt8] {
        guard upload.status == .complete, let length = upload.length else {
            throw KeelError(.uploadIncomplete, "Upload '\(upload.id)' has not finished.")
        }
        var bytes: [UInt8] = []
        let segments = try await self.store.segments(uploadID: upload.id)
        try await UploadsController.stream(segments: segments, from: 0, count: min(length, Int64(count)), blobs: self.blobs) { piece in
            bytes.append(contentsOf: piece)
        }
        return bytes
    }
}
