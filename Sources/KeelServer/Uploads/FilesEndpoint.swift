import Foundation
import Hummingbird
import KeelCore
import NIOCore

extension UploadsController {
    /// `POST /api/files`: an ordinary `multipart/form-data` upload of small
    /// files, for forms and scripts. Each part with a filename becomes a
    /// complete upload (stored like a resumable one, so it downloads from
    /// `/api/uploads/{id}`). Bodies over `--file-max-bytes` get 413 naming the
    /// resumable endpoint.
    @Sendable func files(_ request: Request, context: KeelRequestContext) async throws -> Response {
        var request = request
        let session = try await self.authenticator.authenticate(request).session
        let limit = self.settings.maxFileBytes
        guard let contentType = request.headers[.contentType] else {
            throw KeelError(.unsupportedMediaType, "POST /api/files takes multipart/form-data.", hint: "Send a form with file fields (curl -F file=@report.pdf).")
        }
        let boundary = try MultipartFormData.boundary(fromContentType: contentType)
        if let declared = request.headers[.contentLength].flatMap(Int.init), declared > limit {
            throw self.fileTooLarge(limit)
        }
        let body: ByteBuffer
        do {
            body = try await request.collectBody(upTo: limit)
        } catch is NIOTooManyBytesError {
            throw self.fileTooLarge(limit)
        }
        let parts = try MultipartFormData.parse(Array(body.readableBytesView), boundary: boundary)
        let fileParts = parts.filter { $0.filename != nil }
        guard !fileParts.isEmpty else {
            throw KeelError(.badRequest, "The form has no file part.", hint: "Send at least one field with a filename (curl -F file=@report.pdf).")
        }
        var stored: [Upload] = []
        for part in fileParts {
            stored.append(try await self.storeFile(part, sessionID: session.id))
        }
        var json = JSONWriter()
        json.object { json in
            json.field("files") { json in
                json.array { json in
                    for upload in stored { json.element(rawJSON: Self.json(upload)) }
                }
            }
        }
        return .json(json.text, status: .created, headers: [.cacheControl: "no-store"])
    }

    /// Stores one part through the same path as a resumable upload: a new
    /// upload, a durable blob, one fenced commit that completes it.
    private func storeFile(_ part: MultipartPart, sessionID: String) async throws -> Upload {
        let now = self.clock.now()
        // Browsers may send a path ("C:\\Users\\me\\a.txt"); keep the last component.
        let sent = part.filename ?? "file"
        let filename = sent.split(whereSeparator: { $0 == "/" || $0 == "\\" }).last.map(String.init) ?? "file"
        var metadata = "filename " + Data(filename.utf8).base64EncodedString()
        if let type = part.contentType { metadata += ",filetype " + Data(type.utf8).base64EncodedString() }
        metadata += ",field " + Data(part.name.utf8).base64EncodedString()
        let length = Int64(part.body.count)
        let upload = Upload(id: Identifiers.random(byteCount: 16), sessionID: sessionID, length: length, metadata: metadata, createdAt: now, expiresAt: self.expiry(now).unfinished)
        try await self.store.createUpload(upload)
        self.metrics.created.increment()
        guard case .acquired(_, let lease, _) = try await self.store.acquire(uploadID: upload.id, owner: self.instanceID, staleAfter: self.settings.lockTimeout, now: now) else {
            throw KeelError(.internalError, "A new upload could not be locked.")
        }
        var segment: UploadSegment?
        if length > 0 {
            let writer = try await self.blobs.makeWriter(uploadID: upload.id)
            do {
                try await writer.write(Array(part.body))
                try await writer.finish()
            } catch {
                await writer.discard()
                throw error
            }
            segment = UploadSegment(start: 0, length: length, key: writer.key)
        }
        self.metrics.bytesReceived.increment(by: Int(length))
        let completed = try await self.store.commit(
            lease, segment: segment, declaredLength: nil, expiry: self.expiry(self.clock.now()), now: self.clock.now(), releasing: true)
        self.metrics.finished.increment()
        await self.announcer.announce(completed)
        return completed
    }

    func fileTooLarge(_ limit: Int) -> KeelError {
        KeelError(
            .payloadTooLarge,
            "The form is larger than \(limit) bytes, the limit of POST /api/files.",
            hint: "Upload large files resumably with tus at POST /api/uploads (any tus client, or `keel upload FILE`); the limit here is --file-max-bytes."
        )
    }
}
