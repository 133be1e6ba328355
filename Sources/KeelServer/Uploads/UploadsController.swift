import Crypto
import Foundation
import Hummingbird
import KeelCore
import Logging
import NIOCore

/// tus 1.0.0 under `/api/uploads` (core, creation, creation-with-upload,
/// creation-defer-length, termination, expiration, checksum), downloads of
/// finished uploads, and the small-file endpoint `POST /api/files`.
///
/// Every byte goes to a new blob; the upload store commits it (moving the
/// offset) only after the blob is durable and only while this PATCH holds the
/// upload's lease, so the offset never runs ahead of the data and a stale
/// writer can never mix its bytes into the upload.
struct UploadsController: Sendable {
    let store: any UploadStore
    let blobs: any BlobStore
    let authenticator: SessionAuthenticator
    let settings: UploadSettings
    let clock: any KeelClock
    let instanceID: String
    let metrics: UploadMetrics
    let announcer: UploadAnnouncer
    let logger: Logger
    /// Starts `upload.digest` jobs for uploads too large to hash in a request.
    let digests: JobSubmitter

    static let tusVersion = "1.0.0"
    static let extensions = "creation,creation-with-upload,creation-defer-length,termination,expiration,checksum"
    static let offsetContentType = "application/offset+octet-stream"
    /// Bytes handed to the blob per write: big enough to amortize the hop to the I/O thread.
    static let stagingBytes = 1_048_576
    /// Bytes per read when downloading or hashing.
    static let readBytes = 1_048_576

    func register(on routes: inout RouteTable) {
        routes.add("/api/uploads", .options, self.tus(requireVersion: false, self.options))
        routes.add("/api/uploads", .post, self.tus(self.create))
        routes.add("/api/uploads/:id", .options, self.tus(requireVersion: false, self.options))
        routes.add("/api/uploads/:id", .head, self.tus(self.head))
        routes.add("/api/uploads/:id", .patch, self.tus(self.patch))
        routes.add("/api/uploads/:id", .delete, self.tus(self.terminate))
        routes.add("/api/uploads/:id", .get, self.download)
        routes.add("/api/uploads/:id/info", .get, self.info)
        routes.add("/api/files", .post, self.files)
    }

    // MARK: tus

    /// Wraps a tus handler: checks `Tus-Resumable` (412 with `Tus-Version`
    /// when unsupported) and puts `Tus-Resumable` on every answer, errors included.
    func tus(requireVersion: Bool = true, _ handler: @escaping RouteTable.Handler) -> RouteTable.Handler {
        { request, context in
            var response: Response
            do {
                if requireVersion, request.headers[.tusResumable] != Self.tusVersion {
                    throw KeelError(
                        .tusVersionUnsupported,
                        request.headers[.tusResumable].map { "tus version '\($0)' is not supported." } ?? "The Tus-Resumable header is missing.",
                        hint: "Send Tus-Resumable: 1.0.0."
                    )
                }
                response = try await handler(request, context)
            } catch {
                let keelError = KeelError.from(error, request: request)
                if keelError.code == .internalError || keelError.code == .storeUnavailable {
                    context.logger.error("upload request failed", metadata: ["keel.error.detail": "\(keelError.detail ?? keelError.message)"])
                }
                var headers: HTTPFields = [.tusVersion: Self.tusVersion]
                if keelError.code == .uploadLocked { headers[.retryAfter] = String(max(1, Int(self.settings.lockTimeout.timeInterval.rounded(.up)))) }
                response = keelError.response(headers: headers)
            }
            response.headers[.tusResumable] = Self.tusVersion
            return response
        }
    }

    @Sendable func options(_ request: Request, context: KeelRequestContext) async throws -> Response {
        Response(
            status: .noContent,
            headers: [
                .tusVersion: Self.tusVersion,
                .tusExtension: Self.extensions,
                .tusMaxSize: String(self.settings.maxSize),
                .tusChecksumAlgorithm: ChecksumAlgorithm.allCases.map(\.rawValue).joined(separator: ","),
                // What this path answers: creation on the collection, the rest on one upload.
                .allow: context.parameters.get("id") == nil ? "OPTIONS, POST" : "OPTIONS, HEAD, PATCH, DELETE, GET",
            ]
        )
    }

    @Sendable func create(_ request: Request, context: KeelRequestContext) async throws -> Response {
        let session = try await self.authenticator.authenticate(request).session
        if request.headers[.uploadConcat] != nil {
            throw KeelError(.badRequest, "The concatenation extension is not supported.", hint: "Tus-Extension lists what this server supports.")
        }
        let length = try Self.length(request)
        let deferred = request.headers[.uploadDeferLength]
        if let deferred, deferred != "1" {
            throw KeelError(.badRequest, "Upload-Defer-Length must be 1.")
        }
        if length == nil && deferred == nil {
            throw KeelError(.badRequest, "Creating an upload needs Upload-Length or Upload-Defer-Length: 1.", hint: "Send the file's size in Upload-Length.")
        }
        if length != nil && deferred != nil {
            throw KeelError(.badRequest, "Send Upload-Length or Upload-Defer-Length, not both.")
        }
        if let length, length > self.settings.maxSize { throw self.tooLarge(length) }
        let metadata = request.headers[.uploadMetadata] ?? ""
        _ = try UploadMetadata.parse(metadata)
        let hasBody = Self.declaredBodyLength(request).map { $0 > 0 } ?? (request.headers[.transferEncoding] != nil)
        if hasBody {
            try Self.requireOffsetContentType(request)
        }
        let checksum = try request.headers[.uploadChecksum].map(UploadChecksum.init(header:))

        let now = self.clock.now()
        var upload = Upload(
            id: Identifiers.random(byteCount: 16), sessionID: session.id, length: length, metadata: metadata, createdAt: now,
            expiresAt: self.expiry(now).unfinished
        )
        if length == 0 {
            upload.status = .complete
            upload.completedAt = now
            upload.expiresAt = self.expiry(now).finished
        }
        try await self.store.createUpload(upload)
        self.metrics.created.increment()
        if upload.status == .complete {
            self.metrics.finished.increment()
            await self.announcer.announce(upload)
        } else if hasBody {
            do {
                upload = try await self.receive(request, upload: upload, offset: 0, declaredLength: nil, checksum: checksum)
            } catch {
                // The upload exists whatever happened to its first bytes: name it,
                // with the offset the store holds, so the client can resume.
                return await self.creationFailed(error, upload: upload, request: request)
            }
        }
        var headers = self.headers(for: upload)
        headers[.location] = "/api/uploads/\(upload.id)"
        if !hasBody && upload.status == .uploading { headers[.uploadOffset] = nil }
        return Response(status: .created, headers: headers)
    }

    @Sendable func head(_ request: Request, context: KeelRequestContext) async throws -> Response {
        let session = try await self.authenticator.authenticate(request).session
        let upload = try await self.owned(context, session: session)
        var headers = self.headers(for: upload)
        if let length = upload.length {
            headers[.uploadLength] = String(length)
        } else {
            headers[.uploadDeferLength] = "1"
        }
        if !upload.metadata.isEmpty { headers[.uploadMetadata] = upload.metadata }
        headers[.cacheControl] = "no-store"
        return Response(status: .ok, headers: headers)
    }

    @Sendable func patch(_ request: Request, context: KeelRequestContext) async throws -> Response {
        let session = try await self.authenticator.authenticate(request).session
        try Self.requireOffsetContentType(request)
        guard let offsetText = request.headers[.uploadOffset] else {
            throw KeelError(.badRequest, "PATCH needs an Upload-Offset header.", hint: "Send HEAD to learn the offset to continue from.")
        }
        guard let offset = Int64(offsetText), offset >= 0 else {
            throw KeelError(.badRequest, "Upload-Offset '\(offsetText)' is not a non-negative integer.")
        }
        let declaredLength = try Self.length(request)
        let checksum = try request.headers[.uploadChecksum].map(UploadChecksum.init(header:))
        let upload = try await self.owned(context, session: session)
        if upload.status == .complete {
            guard offset == upload.offset else { throw KeelError.offsetMismatch(expected: upload.offset, sent: offset) }
            // A repeated final PATCH with no bytes is harmless; bytes past the end are not.
            var request = request
            if try await Self.hasBodyBytes(&request) {
                throw KeelError(
                    .payloadTooLarge, "Upload \(upload.id) is complete at \(upload.offset) bytes; the PATCH sends bytes past its end.",
                    hint: "Nothing was stored. HEAD shows the final offset.")
            }
            return Response(status: .noContent, headers: self.headers(for: upload))
        }
        guard offset == upload.offset else { throw KeelError.offsetMismatch(expected: upload.offset, sent: offset) }
        if let declaredLength {
            if let length = upload.length, length != declaredLength {
                throw KeelError(.badRequest, "Upload-Length \(declaredLength) differs from the upload's length \(length).", hint: "The length is set once.")
            }
            if declaredLength > self.settings.maxSize { throw self.tooLarge(declaredLength) }
            if declaredLength < offset { throw KeelError(.badRequest, "Upload-Length \(declaredLength) is below the bytes already received (\(offset)).") }
        }
        let updated = try await self.receive(request, upload: upload, offset: offset, declaredLength: declaredLength, checksum: checksum)
        return Response(status: .noContent, headers: self.headers(for: updated))
    }

    /// Whether a request body has at least one byte (read, for a chunked body).
    static func hasBodyBytes(_ request: inout Request) async throws -> Bool {
        if let declared = Self.declaredBodyLength(request) { return declared > 0 }
        guard request.headers[.transferEncoding] != nil else { return false }
        var iterator = request.body.makeAsyncIterator()
        while let buffer = try await iterator.next() {
            if buffer.readableBytes > 0 { return true }
        }
        return false
    }

    /// The error answer of a creation-with-upload whose body failed, naming
    /// the upload (`Location`, `Upload-Offset` as stored).
    func creationFailed(_ error: any Error, upload: Upload, request: Request) async -> Response {
        let keelError = KeelError.from(error, request: request)
        if keelError.code == .internalError || keelError.code == .storeUnavailable {
            self.logger.error("creation-with-upload failed", metadata: ["keel.upload": "\(upload.id)", "keel.error.detail": "\(keelError.detail ?? keelError.message)"])
        }
        var headers = HTTPFields()
        headers[.tusVersion] = Self.tusVersion
        headers[.location] = "/api/uploads/\(upload.id)"
        if let stored = try? await self.store.upload(id: upload.id) {
            headers[.uploadOffset] = String(stored.offset)
        }
        return keelError.response(headers: headers)
    }

    @Sendable func terminate(_ request: Request, context: KeelRequestContext) async throws -> Response {
        let session = try await self.authenticator.authenticate(request).session
        let upload = try await self.owned(context, session: session)
        let segments = try await self.store.terminate(uploadID: upload.id, now: self.clock.now())
        self.metrics.terminated.increment()
        do {
            try await self.blobs.deleteBlobs(uploadID: upload.id, keeping: [])
        } catch {
            self.logger.warning("could not delete a terminated upload's bytes", metadata: ["keel.upload": "\(upload.id)", "keel.error": "\(error)", "keel.segments": "\(segments.count)"])
        }
        return Response(status: .noContent)
    }

    // MARK: Receiving bytes

    /// Takes the upload's lease and streams the request body into new blobs,
    /// committing a segment every `commitBytes` (without a checksum) and at
    /// the end. An interrupted body keeps what was committed plus, without a
    /// checksum, what arrived before the break.
    func receive(_ request: Request, upload: Upload, offset: Int64, declaredLength: Int64?, checksum: UploadChecksum?) async throws -> Upload {
        let started = ContinuousClock.now
        defer {
            let (seconds, attoseconds) = (ContinuousClock.now - started).components
            self.metrics.patchDuration.recordNanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
        }
        let limit = declaredLength ?? upload.length ?? self.settings.maxSize
        if let declared = Self.declaredBodyLength(request), offset + declared > limit {
            throw self.exceeds(limit: limit, isLength: declaredLength ?? upload.length != nil)
        }
        let lease: UploadLease
        switch try await self.store.acquire(uploadID: upload.id, owner: self.instanceID, staleAfter: self.settings.lockTimeout, now: self.clock.now()) {
        case .acquired(let current, let acquired, let tookOver):
            if tookOver {
                self.metrics.lockTakeovers.increment()
                self.logger.notice("took over an upload from a silent PATCH", metadata: ["keel.upload": "\(upload.id)"])
            }
            lease = acquired
            guard current.offset == offset else {
                try? await self.store.release(lease)
                throw KeelError.offsetMismatch(expected: current.offset, sent: offset)
            }
        case .busy(_, let quietFor):
            self.metrics.lockRefusals.increment()
            throw KeelError(
                .uploadLocked,
                "Another PATCH is writing to this upload (it sent bytes \(quietFor.timeInterval < 1 ? "just now" : "\(Int(quietFor.timeInterval)) s ago")).",
                hint: "Retry after Retry-After seconds; if that request died, this one takes over once it has been silent for \(self.settings.lockTimeout)."
            )
        case .unavailable(let current):
            throw self.unavailable(current, id: upload.id)
        }

        var session = PatchSession(controller: self, lease: lease, offset: offset, limit: limit, checksum: checksum)
        do {
            for try await buffer in request.body {
                try await session.take(buffer)
            }
        } catch let error as KeelError where error.code == .payloadTooLarge {
            // Past the length: none of this PATCH's bytes are kept.
            await session.discard()
            let (store, lease) = (self.store, lease)
            _ = try? await Task { try await store.release(lease) }.value
            throw error
        } catch {
            // Broken off: keep what arrived (unless a checksum must vouch for it), then answer with the error.
            await session.salvage()
            throw Self.explain(error)
        }
        return try await session.complete(declaredLength: declaredLength)
    }

    /// One PATCH's bytes on their way into blobs and commits.
    struct PatchSession {
        let controller: UploadsController
        let lease: UploadLease
        /// The committed offset.
        var offset: Int64
        let limit: Int64
        let checksum: UploadChecksum?
        var hasher: ChecksumHasher?
        var writer: (any BlobWriter)?
        /// Bytes in the current blob (written or staged).
        var segmentBytes: Int64 = 0
        var staging: [UInt8] = []
        /// The previous staged MiB on its way to the blob: written while the
        /// next one arrives; hands its buffer back for reuse.
        var pendingWrite: Task<[UInt8], any Error>?
        /// A written buffer, emptied, kept for the next MiB: two buffers per
        /// PATCH instead of a fresh allocation per MiB.
        var spare: [UInt8] = []
        var lastRenewal = ContinuousClock.now
        var upload: Upload?

        init(controller: UploadsController, lease: UploadLease, offset: Int64, limit: Int64, checksum: UploadChecksum?) {
            self.controller = controller
            self.lease = lease
            self.offset = offset
            self.limit = limit
            self.checksum = checksum
            self.hasher = checksum?.algorithm.makeHasher()
            self.staging.reserveCapacity(UploadsController.stagingBytes)
        }

        mutating func take(_ buffer: ByteBuffer) async throws {
            var buffer = buffer
            while buffer.readableBytes > 0 {
                guard self.offset + self.segmentBytes < self.limit else {
                    throw self.controller.exceeds(limit: self.limit, isLength: self.limit != self.controller.settings.maxSize)
                }
                let room = min(Int64(UploadsController.stagingBytes - self.staging.count), self.limit - self.offset - self.segmentBytes)
                let count = min(Int(room), buffer.readableBytes)
                buffer.withUnsafeReadableBytes { bytes in
                    let slice = UnsafeRawBufferPointer(rebasing: bytes.prefix(count))
                    self.staging.append(contentsOf: slice)
                    self.hasher?.update(slice)
                }
                buffer.moveReaderIndex(forwardBy: count)
                self.segmentBytes += Int64(count)
                self.controller.metrics.bytesReceived.increment(by: count)
                if self.staging.count >= UploadsController.stagingBytes { try await self.flush() }
                if self.checksum == nil, self.segmentBytes >= Int64(self.controller.settings.commitBytes) {
                    try await self.commitSegment(declaredLength: nil)
                }
            }
            if ContinuousClock.now - self.lastRenewal > self.controller.settings.lockTimeout / 4 {
                self.lastRenewal = .now
                guard try await self.controller.store.renew(self.lease, now: self.controller.clock.now()) else {
                    await self.discard()
                    throw KeelError.uploadLeaseLost(self.lease.uploadID)
                }
            }
        }

        /// Hands staged bytes to the blob without waiting for the write: the
        /// next bytes are received while these are written (one write in
        /// flight at a time, so the blob's bytes stay in order).
        mutating func flush() async throws {
            guard !self.staging.isEmpty else { return }
            if self.writer == nil { self.writer = try await self.controller.blobs.makeWriter(uploadID: self.lease.uploadID) }
            try await self.settle()
            let writer = self.writer!
            var bytes: [UInt8] = []
            swap(&bytes, &self.staging)
            swap(&self.staging, &self.spare)
            if self.staging.capacity < UploadsController.stagingBytes { self.staging.reserveCapacity(UploadsController.stagingBytes) }
            self.pendingWrite = Task {
                try await writer.write(bytes)
                bytes.removeAll(keepingCapacity: true)
                return bytes
            }
        }

        /// Waits for the write in flight, if any, and keeps its buffer.
        mutating func settle() async throws {
            guard let pending = self.pendingWrite else { return }
            self.pendingWrite = nil
            self.spare = try await pending.value
        }

        /// Makes the current blob durable and commits it as the next segment.
        mutating func commitSegment(declaredLength: Int64?, releasing: Bool = false) async throws {
            try await self.flush()
            try await self.settle()
            var segment: UploadSegment?
            if let writer = self.writer {
                try await writer.finish()
                segment = UploadSegment(start: self.offset, length: self.segmentBytes, key: writer.key)
            }
            let controller = self.controller
            let (lease, expiry) = (self.lease, controller.expiry(controller.clock.now()))
            do {
                // Its own task: a commit must not be skipped because the request's task was cancelled.
                let upload = try await Task {
                    try await controller.store.commit(
                        lease, segment: segment, declaredLength: declaredLength, expiry: expiry, now: controller.clock.now(), releasing: releasing)
                }.value
                self.upload = upload
                self.offset = upload.offset
                self.writer = nil
                self.segmentBytes = 0
                self.lastRenewal = .now
            } catch {
                await self.discard()
                throw error
            }
        }

        /// The body ended: check the checksum, commit, release the lease.
        mutating func complete(declaredLength: Int64?) async throws -> Upload {
            if let checksum = self.checksum, let hasher = self.hasher, hasher.finalize() != checksum.digest {
                await self.discard()
                try? await self.controller.store.release(self.lease)
                throw KeelError(
                    .checksumMismatch,
                    "The \(checksum.algorithm.rawValue) checksum of the body does not match Upload-Checksum; the bytes were discarded.",
                    hint: "Resend the chunk from Upload-Offset \(self.offset)."
                )
            }
            let controller = self.controller
            do {
                // The last commit gives the lease back in the same transaction.
                if self.segmentBytes > 0 || declaredLength != nil || self.upload == nil {
                    try await self.commitSegment(declaredLength: declaredLength, releasing: true)
                } else {
                    let lease = self.lease
                    _ = try? await Task { try await controller.store.release(lease) }.value
                }
            } catch {
                try? await controller.store.release(self.lease)
                throw error
            }
            guard let upload = self.upload else { throw KeelError(.internalError, "A PATCH ended without a commit.") }
            if upload.status == .complete {
                controller.metrics.finished.increment()
                controller.logger.info("upload complete", metadata: ["keel.upload": "\(upload.id)", "keel.bytes": "\(upload.offset)"])
                await controller.removeStrayBlobs(upload.id)
                await controller.announcer.announce(upload)
            }
            return upload
        }

        /// After a broken body: commit what arrived when no checksum has to vouch for it, then release.
        mutating func salvage() async {
            if self.checksum == nil, self.segmentBytes > 0, (try? await self.commitSegment(declaredLength: nil, releasing: true)) != nil {
                return
            }
            await self.discard()
            let (store, lease) = (self.controller.store, self.lease)
            _ = try? await Task { try await store.release(lease) }.value
        }

        mutating func discard() async {
            try? await self.settle()
            if let writer = self.writer { await writer.discard() }
            self.writer = nil
            self.staging.removeAll(keepingCapacity: true)
            self.segmentBytes = 0
        }
    }

    /// Deletes blobs that no segment names: left by PATCHes killed or taken over before they committed.
    func removeStrayBlobs(_ uploadID: String) async {
        do {
            let keys = Set(try await self.store.segments(uploadID: uploadID).map(\.key))
            try await self.blobs.deleteBlobs(uploadID: uploadID, keeping: keys)
        } catch {
            self.logger.warning("could not remove stray blobs of a finished upload", metadata: ["keel.upload": "\(uploadID)", "keel.error": "\(error)"])
        }
    }

    // MARK: Downloads

    @Sendable func download(_ request: Request, context: KeelRequestContext) async throws -> Response {
        let session = try await self.authenticator.authenticate(request).session
        let upload = try await self.owned(context, session: session)
        guard upload.status == .complete, let length = upload.length else {
            throw KeelError(
                .uploadIncomplete, "Upload \(upload.id) has \(upload.offset) of \(upload.length.map(String.init) ?? "?") bytes; it can be downloaded once complete.",
                hint: "Finish it with PATCH (HEAD tells the offset to continue from).")
        }
        let segments = try await self.store.segments(uploadID: upload.id)
        var headers: HTTPFields = [
            .contentType: Self.safeContentType(upload.filetype), .acceptRanges: "bytes", .cacheControl: "private, no-cache",
            .eTag: "\"\(upload.id)\"",
        ]
        if let filename = upload.filename {
            headers[.contentDisposition] = Self.contentDisposition(filename)
        }
        var range: ClosedRange<Int64>? = nil
        if let header = request.headers[.range], length > 0 {
            switch Self.parseRange(header, length: length) {
            case .none: break
            case .some(.none):
                return KeelError(
                    .rangeNotSatisfiable, "Range '\(header)' is outside the \(length) bytes of this upload.", hint: "Ask for bytes 0 to \(length - 1)."
                ).response(headers: [.contentRange: "bytes */\(length)", .acceptRanges: "bytes"])
            case .some(.some(let satisfiable)): range = satisfiable
            }
        }
        let first = range?.lowerBound ?? 0
        let count = range.map { $0.upperBound - $0.lowerBound + 1 } ?? length
        if let range { headers[.contentRange] = "bytes \(range.lowerBound)-\(range.upperBound)/\(length)" }
        let blobs = self.blobs
        let body = ResponseBody(contentLength: Int(count)) { writer in
            try await Self.stream(segments: segments, from: first, count: count, blobs: blobs) { bytes in
                try await writer.write(ByteBuffer(bytes: bytes))
            }
            try await writer.finish(nil)
        }
        return Response(status: range == nil ? .ok : .partialContent, headers: headers, body: body)
    }

    @Sendable func info(_ request: Request, context: KeelRequestContext) async throws -> Response {
        let session = try await self.authenticator.authenticate(request).session
        var upload = try await self.owned(context, session: session)
        guard upload.status == .complete, upload.sha256 == nil, let length = upload.length else {
            return .json(Self.json(upload), headers: [.cacheControl: "no-store"])
        }
        if length <= self.settings.digestInlineMax {
            let digest = try await UploadDigestJob.sha256(of: upload, length: length, store: self.store, blobs: self.blobs)
            try await self.store.setDigest(uploadID: upload.id, sha256: digest)
            upload.sha256 = digest
            return .json(Self.json(upload), headers: [.cacheControl: "no-store"])
        }
        // Too large to hash while the client waits: a job does it once (the
        // idempotency key makes every caller share it), and the client asks again.
        let job = try await self.digests.submit(
            NewJob(
                sessionID: session.id, type: UploadDigestJob.type, inputJSON: JSONValue.object(["upload_id": .string(upload.id)]).serialized(),
                // A space: no client's Idempotency-Key (visible ASCII only) can take it first.
                maxAttempts: 3, idempotencyKey: "keel upload.digest \(upload.id)"
            )
        )
        if job.status == .succeeded, let fresh = try await self.store.upload(id: upload.id) { upload = fresh }
        if job.status == .failed || job.status == .cancelled {
            throw KeelError(
                .internalError, "Hashing upload \(upload.id) failed (job \(job.id)).",
                hint: "The server's log has the details; the digest is tried again once that job expires.")
        }
        var headers: HTTPFields = [.cacheControl: "no-store"]
        if upload.sha256 == nil { headers[.retryAfter] = "2" }
        return .json(Self.json(upload, digestJob: upload.sha256 == nil ? job.id : nil), headers: headers)
    }

    /// Reads `count` bytes from `from` across segments, a piece at a time.
    static func stream(
        segments: [UploadSegment], from: Int64, count: Int64, blobs: any BlobStore, _ body: ([UInt8]) async throws -> Void
    ) async throws {
        var position = from
        let end = from + count
        for segment in segments where segment.end > position && segment.start < end {
            while position < min(segment.end, end) {
                let wanted = Int(min(Int64(Self.readBytes), min(segment.end, end) - position))
                let bytes = try await blobs.read(key: segment.key, offset: position - segment.start, count: wanted)
                guard bytes.count == wanted else {
                    throw KeelError(.internalError, "The bytes of upload segment \(segment.key) are missing or short.", detail: "wanted \(wanted), got \(bytes.count)")
                }
                try await body(bytes)
                position += Int64(wanted)
            }
        }
        guard position == end else { throw KeelError(.internalError, "The upload's segments do not cover its bytes.") }
    }

    /// `digestJob`: the job computing the SHA-256, named while it runs.
    static func json(_ upload: Upload, digestJob: String? = nil) -> String {
        var json = JSONWriter()
        json.object { json in
            json.field("id", upload.id)
            json.field("status", upload.status.rawValue)
            json.field("length", rawJSON: upload.length.map { String($0) })
            json.field("offset", upload.offset)
            json.field("filename", upload.filename)
            json.field("filetype", upload.filetype)
            json.field("metadata") { json in
                json.object { json in
                    for pair in upload.metadataPairs { json.field(pair.key, pair.value) }
                }
            }
            json.field("sha256", upload.sha256)
            if let digestJob { json.field("sha256_job", digestJob) }
            json.field("created_at", upload.createdAt)
            json.field("completed_at", upload.completedAt)
            json.field("expires_at", upload.expiresAt)
            json.field("links") { json in
                json.object { json in
                    json.field("self", "/api/uploads/\(upload.id)")
                    json.field("info", "/api/uploads/\(upload.id)/info")
                }
            }
        }
        return json.text
    }

    // MARK: Helpers

    func owned(_ context: KeelRequestContext, session: Session) async throws -> Upload {
        let id = try context.parameters.require("id")
        guard id.utf8.count <= 64, Identifiers.isBase64URL(Substring(id), length: id.utf8.count),
            let upload = try await self.store.upload(id: id), upload.sessionID == session.id
        else {
            throw Self.notFound(id)
        }
        switch upload.status {
        case .terminated: throw Self.notFound(id)
        case .expired: throw Self.expired(id)
        case .uploading:
            if let expiresAt = upload.expiresAt, expiresAt <= self.clock.now() { throw Self.expired(id) }
        case .complete: break
        }
        return upload
    }

    func unavailable(_ upload: Upload?, id: String) -> KeelError {
        switch upload?.status {
        case .expired?: Self.expired(id)
        case .complete?: KeelError(.offsetMismatch, "Upload \(id) is already complete.", hint: "HEAD shows its final offset.")
        default: Self.notFound(id)
        }
    }

    static func notFound(_ id: String) -> KeelError {
        KeelError(.notFound, "No upload '\(id)' for this session.", hint: "Uploads belong to the session that created them; terminated uploads are gone.")
    }

    static func expired(_ id: String) -> KeelError {
        KeelError(.uploadExpired, "Upload \(id) expired unfinished and its bytes were deleted.", hint: "Start a new upload with POST /api/uploads.")
    }

    func tooLarge(_ length: Int64) -> KeelError {
        KeelError(.payloadTooLarge, "Upload-Length \(length) exceeds this server's maximum of \(self.settings.maxSize) bytes.", hint: "See Tus-Max-Size; the limit is --upload-max-size.")
    }

    func exceeds(limit: Int64, isLength: Bool) -> KeelError {
        isLength
            ? KeelError(.payloadTooLarge, "The body goes past the upload's length of \(limit) bytes; nothing beyond the stored offset was kept.", hint: "Send exactly Upload-Length bytes in total.")
            : KeelError(.payloadTooLarge, "The upload would exceed this server's maximum of \(limit) bytes.", hint: "See Tus-Max-Size; the limit is --upload-max-size.")
    }

    func expiry(_ now: Date) -> UploadExpiry {
        UploadExpiry(
            unfinished: now.addingTimeInterval(self.settings.expiry.timeInterval),
            finished: self.settings.retention > .zero ? now.addingTimeInterval(self.settings.retention.timeInterval) : nil
        )
    }

    /// `Upload-Offset` and (while unfinished) `Upload-Expires`.
    func headers(for upload: Upload) -> HTTPFields {
        var headers: HTTPFields = [.uploadOffset: String(upload.offset)]
        if upload.status == .uploading, let expiresAt = upload.expiresAt {
            headers[.uploadExpires] = HTTPDate.string(expiresAt)
        }
        return headers
    }

    static func length(_ request: Request) throws -> Int64? {
        guard let text = request.headers[.uploadLength] else { return nil }
        guard let length = Int64(text), length >= 0 else {
            throw KeelError(.badRequest, "Upload-Length '\(text)' is not a non-negative integer.")
        }
        return length
    }

    static func declaredBodyLength(_ request: Request) -> Int64? {
        request.headers[.contentLength].flatMap { Int64($0) }
    }

    static func requireOffsetContentType(_ request: Request) throws {
        let type = request.headers[.contentType]?.split(separator: ";").first?.trimmingCharacters(in: .whitespaces).lowercased()
        guard type == Self.offsetContentType else {
            throw KeelError(
                .unsupportedMediaType,
                "Upload bytes must be sent as \(Self.offsetContentType)\(type.map { ", not \($0)" } ?? "").",
                hint: "Set Content-Type: application/offset+octet-stream."
            )
        }
    }

    /// The error a broken body becomes.
    static func explain(_ error: any Error) -> any Error {
        if error is KeelError { return error }
        return KeelError(.badRequest, "The request body broke off; the bytes before the break were kept.", hint: "Send HEAD and resume from Upload-Offset.", detail: "\(error)")
    }

    /// nil: no usable Range header (serve everything); .some(nil): unsatisfiable.
    static func parseRange(_ header: String, length: Int64) -> ClosedRange<Int64>?? {
        let text = header.trimmingCharacters(in: .whitespaces)
        guard text.lowercased().hasPrefix("bytes=") else { return nil }
        let spec = text.dropFirst(6)
        guard !spec.contains(",") else { return nil }  // several ranges: answer with the whole body
        let parts = spec.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
        guard parts.count == 2 else { return nil }
        if parts[0].isEmpty {
            guard let suffix = Int64(parts[1]) else { return nil }
            guard suffix > 0 else { return .some(nil) }
            return .some(max(0, length - suffix)...(length - 1))
        }
        guard let start = Int64(parts[0]), start >= 0 else { return nil }
        let end: Int64
        if parts[1].isEmpty {
            end = length - 1
        } else {
            guard let parsed = Int64(parts[1]), parsed >= start else { return nil }
            end = min(parsed, length - 1)
        }
        guard start < length else { return .some(nil) }
        return .some(start...end)
    }

    /// A client-supplied type only when it is a plain `type/subtype`; never HTML or script (downloads are attachments anyway).
    static func safeContentType(_ filetype: String?) -> String {
        guard let filetype, filetype.utf8.count <= 100,
            filetype.range(of: #"^[a-zA-Z0-9][a-zA-Z0-9!#$&^_.+-]*/[a-zA-Z0-9][a-zA-Z0-9!#$&^_.+-]*$"#, options: .regularExpression) != nil
        else { return "application/octet-stream" }
        let lowered = filetype.lowercased()
        if lowered.contains("html") || lowered.contains("javascript") || lowered.contains("xml") { return "application/octet-stream" }
        return filetype
    }

    static func contentDisposition(_ filename: String) -> String {
        let ascii = String(filename.unicodeScalars.map { $0.isASCII && $0.value >= 0x20 && $0 != "\"" && $0 != "\\" ? Character($0) : "_" })
        let unreserved = Set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~".utf8)
        let encoded = filename.utf8.map { unreserved.contains($0) ? String(UnicodeScalar($0)) : String(format: "%%%02X", $0) }.joined()
        return "attachment; filename=\"\(ascii)\"; filename*=UTF-8''\(encoded)"
    }
}
