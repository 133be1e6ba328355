import Crypto
import Foundation
import HTTPTypes
import HummingbirdTesting
import KeelCore
import KeelServer
import NIOCore
import Synchronization
import Testing

/// The tus 1.0.0 protocol as clients see it, in process on SQLite.
@Suite("Uploads API (tus)", .timeLimit(.minutes(2)))
struct UploadsAPITests {
    static let tus: HTTPFields = [.init("Tus-Resumable")!: "1.0.0"]

    @Test("OPTIONS advertises version, extensions, max size and checksum algorithms")
    func options() async throws {
        try await withTestApp(configure: { $0.uploads.maxSize = 1_000_000 }) { _, client in
            let response = try await client.execute(uri: "/api/uploads", method: .options)
            #expect(response.status == .noContent)
            #expect(response.headers[.init("Tus-Version")!] == "1.0.0")
            #expect(response.headers[.init("Tus-Resumable")!] == "1.0.0")
            #expect(response.headers[.init("Tus-Max-Size")!] == "1000000")
            let extensions = Set((response.headers[.init("Tus-Extension")!] ?? "").split(separator: ",").map(String.init))
            #expect(extensions == ["creation", "creation-with-upload", "creation-defer-length", "termination", "expiration", "checksum"])
            #expect(response.headers[.init("Tus-Checksum-Algorithm")!] == "sha1,sha256,md5")
        }
    }

    @Test("create, HEAD, PATCH in pieces, complete, download whole and by range, info with sha256")
    func roundTrip() async throws {
        try await withTestApp { _, client in
            let token = try await client.createSession()
            let content = Array((0..<100_000).map { UInt8(truncatingIfNeeded: $0 &* 7) })
            let metadata = "filename \(Data("report é.pdf".utf8).base64EncodedString()),filetype \(Data("application/pdf".utf8).base64EncodedString()),flag"
            let created = try await client.tusCreate(token: token, length: content.count, metadata: metadata)
            #expect(created.status == .created)
            let location = try #require(created.headers[.location])
            #expect(location.hasPrefix("/api/uploads/"))
            #expect(created.headers[.init("Upload-Expires")!]?.hasSuffix(" GMT") == true)

            let head = try await client.execute(uri: location, method: .head, headers: Self.tus.bearer(token))
            #expect(head.status == .ok)
            #expect(head.headers[.init("Upload-Offset")!] == "0")
            #expect(head.headers[.init("Upload-Length")!] == "100000")
            #expect(head.headers[.cacheControl] == "no-store")
            #expect(head.headers[.init("Upload-Metadata")!] == metadata)

            let first = try await client.tusPatch(location, token: token, offset: 0, bytes: content[0..<40_000])
            #expect(first.status == .noContent)
            #expect(first.headers[.init("Upload-Offset")!] == "40000")
            let incomplete = try await client.send(.get, location, token: token)
            #expect(incomplete.status == .conflict)
            #expect(incomplete.errorCode == "upload_incomplete")
            let last = try await client.tusPatch(location, token: token, offset: 40_000, bytes: content[40_000...])
            #expect(last.status == .noContent)
            #expect(last.headers[.init("Upload-Offset")!] == "100000")
            #expect(last.headers[.init("Upload-Expires")!] == nil)

            let download = try await client.send(.get, location, token: token)
            #expect(download.status == .ok)
            #expect(Array(download.body.readableBytesView) == content)
            #expect(download.headers[.contentType] == "application/pdf")
            #expect(download.headers[.contentDisposition]?.contains("filename*=UTF-8''report%20%C3%A9.pdf") == true)
            let ranged = try await client.execute(uri: location, method: .get, headers: [.authorization: "Bearer \(token)", .range: "bytes=99990-"])
            #expect(ranged.status == .partialContent)
            #expect(ranged.headers[.contentRange] == "bytes 99990-99999/100000")
            #expect(Array(ranged.body.readableBytesView) == Array(content[99_990...]))
            let suffix = try await client.execute(uri: location, method: .get, headers: [.authorization: "Bearer \(token)", .range: "bytes=-5"])
            #expect(Array(suffix.body.readableBytesView) == Array(content[99_995...]))
            let outside = try await client.execute(uri: location, method: .get, headers: [.authorization: "Bearer \(token)", .range: "bytes=100000-"])
            #expect(outside.status == .rangeNotSatisfiable)
            #expect(outside.headers[.contentRange] == "bytes */100000")

            let info = try await client.send(.get, location + "/info", token: token)
            #expect(info.status == .ok)
            #expect(info.json["status"] == .string("complete"))
            #expect(info.json["filename"] == .string("report é.pdf"))
            #expect(info.json["metadata"]?.objectValue?["flag"] == .null)
            #expect(info.json["sha256"] == .string(try await sha256Hex(content)))
        }
    }

    @Test("status codes: 412 version, 415 content type, 409 offset, 413 size, 404 other session, 400 bad headers and metadata")
    func statusCodes() async throws {
        try await withTestApp(configure: { $0.uploads.maxSize = 1_000 }) { _, client in
            let token = try await client.createSession()
            // Missing and wrong Tus-Resumable.
            let missing = try await client.execute(uri: "/api/uploads", method: .post, headers: [.authorization: "Bearer \(token)", .init("Upload-Length")!: "10"])
            #expect(missing.status == .preconditionFailed)
            #expect(missing.headers[.init("Tus-Version")!] == "1.0.0")
            #expect(missing.errorCode == "tus_version_unsupported")
            var old = Self.tus.bearer(token)
            old[.init("Tus-Resumable")!] = "0.2.2"
            old[.init("Upload-Length")!] = "10"
            #expect(try await client.execute(uri: "/api/uploads", method: .post, headers: old).status == .preconditionFailed)
            // Creation errors.
            #expect(try await client.tusCreate(token: token, length: 1_001).status == .contentTooLarge)
            #expect(try await client.tusCreate(token: nil, length: 10).errorCode == "session_required")
            let noLength = try await client.execute(uri: "/api/uploads", method: .post, headers: Self.tus.bearer(token))
            #expect(noLength.status == .badRequest)
            let badBase64 = try await client.tusCreate(token: token, length: 10, metadata: "filename not*base64")
            #expect(badBase64.status == .badRequest)
            #expect(badBase64.json["error"]?.objectValue?["message"]?.stringValue?.contains("base64") == true)
            #expect(try await client.tusCreate(token: token, length: 10, metadata: "a YQ==,a YQ==").status == .badRequest)
            #expect(try await client.tusCreate(token: token, length: -1).status == .badRequest)

            let location = try #require(try await client.tusCreate(token: token, length: 10).headers[.location])
            // Wrong content type.
            var plain = Self.tus.bearer(token)
            plain[.init("Upload-Offset")!] = "0"
            plain[.contentType] = "application/octet-stream"
            let wrongType = try await client.execute(uri: location, method: .patch, headers: plain, body: ByteBuffer(string: "abc"))
            #expect(wrongType.status == .unsupportedMediaType)
            // Offset mismatch, then a body past the length.
            let mismatch = try await client.tusPatch(location, token: token, offset: 3, bytes: Array("abc".utf8)[...])
            #expect(mismatch.status == .conflict)
            #expect(mismatch.errorCode == "offset_mismatch")
            #expect(try await client.tusPatch(location, token: token, offset: 0, bytes: Array("abcdefghijkl".utf8)[...]).status == .contentTooLarge)
            #expect(try await client.tusHead(location, token: token).headers[.init("Upload-Offset")!] == "0")
            // Another session sees nothing.
            let other = try await client.createSession()
            #expect(try await client.tusHead(location, token: other).status == .notFound)
            #expect(try await client.tusPatch(location, token: other, offset: 0, bytes: Array("abc".utf8)[...]).status == .notFound)
            #expect(try await client.send(.get, location, token: other).status == .notFound)
            #expect(try await client.tusHead("/api/uploads/nonexistentnonexistent1", token: token).status == .notFound)
            #expect(try await client.tusHead(location, token: token).headers[.init("Upload-Offset")!] == "0")
        }
    }

    @Test("checksums: sha1, sha256 and md5 accepted; a mismatch is 460 and discards the chunk; unknown algorithm 400")
    func checksums() async throws {
        try await withTestApp { _, client in
            let token = try await client.createSession()
            let location = try #require(try await client.tusCreate(token: token, length: 9).headers[.location])
            let chunk = Array("abc".utf8)[...]
            let sha1 = "sha1 " + Data(Insecure.SHA1.hash(data: chunk)).base64EncodedString()
            let sha256 = "sha256 " + Data(SHA256.hash(data: chunk)).base64EncodedString()
            let md5 = "md5 " + Data(Insecure.MD5.hash(data: chunk)).base64EncodedString()
            let wrong = "sha1 " + Data(Insecure.SHA1.hash(data: Array("abd".utf8))).base64EncodedString()

            let mismatch = try await client.tusPatch(location, token: token, offset: 0, bytes: chunk, checksum: wrong)
            #expect(mismatch.status.code == 460)
            #expect(mismatch.errorCode == "checksum_mismatch")
            #expect(try await client.tusHead(location, token: token).headers[.init("Upload-Offset")!] == "0")
            #expect(try await client.tusPatch(location, token: token, offset: 0, bytes: chunk, checksum: "crc32 AAAA").status == .badRequest)
            #expect(try await client.tusPatch(location, token: token, offset: 0, bytes: chunk, checksum: "sha1 !!!").status == .badRequest)

            #expect(try await client.tusPatch(location, token: token, offset: 0, bytes: chunk, checksum: sha1).status == .noContent)
            #expect(try await client.tusPatch(location, token: token, offset: 3, bytes: chunk, checksum: sha256).status == .noContent)
            let done = try await client.tusPatch(location, token: token, offset: 6, bytes: chunk, checksum: md5)
            #expect(done.status == .noContent)
            #expect(done.headers[.init("Upload-Offset")!] == "9")
            #expect(String(buffer: try await client.send(.get, location, token: token).body) == "abcabcabc")
        }
    }

    @Test("deferred length, creation-with-upload, and a zero-length upload")
    func deferredAndCreationWithUpload() async throws {
        try await withTestApp { _, client in
            let token = try await client.createSession()
            var headers = UploadsAPITests.tus.bearer(token)
            headers[.init("Upload-Defer-Length")!] = "1"
            let created = try await client.execute(uri: "/api/uploads", method: .post, headers: headers)
            #expect(created.status == .created)
            let location = try #require(created.headers[.location])
            let head = try await client.tusHead(location, token: token)
            #expect(head.headers[.init("Upload-Defer-Length")!] == "1")
            #expect(head.headers[.init("Upload-Length")!] == nil)
            #expect(try await client.tusPatch(location, token: token, offset: 0, bytes: Array("hello ".utf8)[...]).status == .noContent)
            let last = try await client.tusPatch(location, token: token, offset: 6, bytes: Array("world".utf8)[...], length: 11)
            #expect(last.status == .noContent)
            let after = try await client.tusHead(location, token: token)
            #expect(after.headers[.init("Upload-Length")!] == "11")
            #expect(after.headers[.init("Upload-Defer-Length")!] == nil)
            #expect(String(buffer: try await client.send(.get, location, token: token).body) == "hello world")

            var withBody = UploadsAPITests.tus.bearer(token)
            withBody[.init("Upload-Length")!] = "5"
            withBody[.contentType] = "application/offset+octet-stream"
            let oneShot = try await client.execute(uri: "/api/uploads", method: .post, headers: withBody, body: ByteBuffer(string: "12345"))
            #expect(oneShot.status == .created)
            #expect(oneShot.headers[.init("Upload-Offset")!] == "5")
            let oneShotLocation = try #require(oneShot.headers[.location])
            #expect(String(buffer: try await client.send(.get, oneShotLocation, token: token).body) == "12345")

            let empty = try await client.tusCreate(token: token, length: 0)
            let emptyLocation = try #require(empty.headers[.location])
            let emptyDownload = try await client.send(.get, emptyLocation, token: token)
            #expect(emptyDownload.status == .ok)
            #expect(emptyDownload.body.readableBytes == 0)
        }
    }

    @Test("termination answers 204, then 404; expiry answers 410 and the janitor deletes the bytes")
    func terminationAndExpiry() async throws {
        let clock = ManualClock()
        try await withTestApp(clock: clock, configure: { $0.uploads.expiry = .seconds(3600) }) { app, client in
            let token = try await client.createSession()
            let location = try #require(try await client.tusCreate(token: token, length: 10).headers[.location])
            #expect(try await client.tusPatch(location, token: token, offset: 0, bytes: Array("abc".utf8)[...]).status == .noContent)
            let terminated = try await client.execute(uri: location, method: .delete, headers: Self.tus.bearer(token))
            #expect(terminated.status == .noContent)
            #expect(try await client.tusHead(location, token: token).status == .notFound)
            #expect(try await client.tusPatch(location, token: token, offset: 3, bytes: Array("abc".utf8)[...]).status == .notFound)

            let expiring = try #require(try await client.tusCreate(token: token, length: 10).headers[.location])
            #expect(try await client.tusPatch(expiring, token: token, offset: 0, bytes: Array("abc".utf8)[...]).status == .noContent)
            let id = String(expiring.split(separator: "/").last!)
            #expect(try await app.store.uploads.segments(uploadID: id).count == 1)
            clock.advance(by: .seconds(3601))
            #expect(try await client.tusHead(expiring, token: token).status == .gone)
            let expired = try await app.store.uploads.expire(now: clock.now(), limit: 10)
            #expect(expired.map(\.upload.id) == [id])
            #expect(try await client.tusHead(expiring, token: token).status == .gone)
            #expect(try await client.tusPatch(expiring, token: token, offset: 3, bytes: Array("abc".utf8)[...]).status == .gone)
        }
    }

    @Test("a PATCH while another holds the upload's lease gets 423 with Retry-After; a silent holder is taken over")
    func lockedAndTakeover() async throws {
        let clock = ManualClock()
        try await withTestApp(clock: clock, configure: { $0.uploads.lockTimeout = .seconds(5) }) { app, client in
            let token = try await client.createSession()
            let location = try #require(try await client.tusCreate(token: token, length: 6).headers[.location])
            let id = String(location.split(separator: "/").last!)
            // Another instance's PATCH holds the lease and has just written.
            guard case .acquired = try await app.store.uploads.acquire(uploadID: id, owner: "elsewhere", staleAfter: .seconds(5), now: clock.now()) else {
                Issue.record("could not take the lease")
                return
            }
            let locked = try await client.tusPatch(location, token: token, offset: 0, bytes: Array("abc".utf8)[...])
            #expect(locked.status.code == 423)
            #expect(locked.errorCode == "upload_locked")
            #expect(locked.headers[.retryAfter] == "5")
            // It went silent: the next PATCH takes over.
            clock.advance(by: .seconds(6))
            #expect(try await client.tusPatch(location, token: token, offset: 0, bytes: Array("abc".utf8)[...]).status == .noContent)
            #expect(try await client.tusHead(location, token: token).headers[.init("Upload-Offset")!] == "3")
            let metrics = String(decoding: app.metrics.render(), as: UTF8.self)
            #expect(metrics.contains("keel_upload_lock_takeovers_total 1"))
        }
    }

    @Test("POST /api/files stores multipart files as complete uploads; over the limit it is 413 naming /api/uploads")
    func smallFiles() async throws {
        try await withTestApp(configure: { $0.uploads.maxFileBytes = 1_000 }) { _, client in
            let token = try await client.createSession()
            let boundary = "----keel-test-boundary"
            func form(_ content: String) -> String {
                "--\(boundary)\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n"
                    + "--\(boundary)\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\n\(content)\r\n"
                    + "--\(boundary)--\r\n"
            }
            let stored = try await client.send(.post, "/api/files", token: token, body: form("file body\r\n--not a boundary"), contentType: "multipart/form-data; boundary=\(boundary)")
            #expect(stored.status == .created)
            let file = try #require(stored.json["files"]?.arrayValue?.first?.objectValue)
            #expect(file["filename"] == .string("a.txt"))
            #expect(file["status"] == .string("complete"))
            let id = try #require(file["id"]?.stringValue)
            let download = try await client.send(.get, "/api/uploads/\(id)", token: token)
            #expect(String(buffer: download.body) == "file body\r\n--not a boundary")
            #expect(download.headers[.contentType] == "text/plain")

            let big = try await client.send(.post, "/api/files", token: token, body: form(String(repeating: "x", count: 2_000)), contentType: "multipart/form-data; boundary=\(boundary)")
            #expect(big.status == .contentTooLarge)
            #expect(big.json["error"]?.objectValue?["hint"]?.stringValue?.contains("/api/uploads") == true)
            let notMultipart = try await client.send(.post, "/api/files", token: token, body: "{}")
            #expect(notMultipart.status == .unsupportedMediaType)
        }
    }

    @Test("completion hooks run once per upload; a failed hook is retried by the janitor; the janitor expires unfinished uploads and deletes their bytes")
    func hooksAndJanitor() async throws {
        let clock = ManualClock(Date())
        let calls = Mutex<[String]>([])
        let failFirst = Mutex(true)
        var hooks = UploadHooks()
        hooks.onCompletion { upload in
            #expect(upload.status == .complete)
            calls.withLock { $0.append(upload.id) }
            if failFirst.withLock({ flag in defer { flag = false }; return flag }) {
                throw KeelError(.internalError, "hook down")
            }
        }
        try await withTestApp(clock: clock, configure: { configuration in
            configuration.uploads.expiry = .seconds(3600)
            configuration.jobs.janitorInterval = .milliseconds(50)
            configuration.jobs.workers = 0
        }, runJobs: true, uploadHooks: hooks) { app, client in
            let token = try await client.createSession()
            let location = try #require(try await client.tusCreate(token: token, length: 3).headers[.location])
            let id = String(location.split(separator: "/").last!)
            #expect(try await client.tusPatch(location, token: token, offset: 0, bytes: Array("abc".utf8)[...]).status == .noContent)
            #expect(calls.withLock { $0 } == [id])
            #expect(try await app.store.uploads.upload(id: id)?.announcedAt == nil)
            // After the grace period the janitor runs the hook again, and this time it sticks.
            clock.advance(by: .seconds(31))
            try await waitFor("the janitor to announce the upload") { try await app.store.uploads.upload(id: id)?.announcedAt != nil }
            #expect(calls.withLock { $0 } == [id, id])

            // An unfinished upload with bytes on disk expires and its directory goes.
            let unfinished = try #require(try await client.tusCreate(token: token, length: 10).headers[.location])
            let unfinishedID = String(unfinished.split(separator: "/").last!)
            #expect(try await client.tusPatch(unfinished, token: token, offset: 0, bytes: Array("abc".utf8)[...]).status == .noContent)
            guard case .sqlite(let path) = app.configuration.store else { return }
            let directory = URL(fileURLWithPath: path).deletingLastPathComponent().appendingPathComponent("uploads/\(unfinishedID)").path
            #expect(FileManager.default.fileExists(atPath: directory))
            clock.advance(by: .seconds(3601))
            try await waitFor("the janitor to expire the upload") { try await app.store.uploads.upload(id: unfinishedID)?.status == .expired }
            try await waitFor("the bytes to be deleted") { !FileManager.default.fileExists(atPath: directory) }
            #expect(try await client.tusHead(unfinished, token: token).status == .gone)
            let metrics = String(decoding: app.metrics.render(), as: UTF8.self)
            for series in ["keel_uploads_created_total 2", "keel_uploads_finished_total 1", "keel_uploads_expired_total 1", "keel_upload_bytes_received_total 6"] {
                #expect(metrics.contains(series), "\(series)")
            }
            #expect(metrics.contains("keel_upload_patch_duration_seconds_count"))
        }
    }

    @Test("a blob left by a PATCH that never committed is removed when the upload completes; bytes past the length are refused whole")
    func strayBlobs() async throws {
        try await withTestApp { app, client in
            let token = try await client.createSession()
            let location = try #require(try await client.tusCreate(token: token, length: 6).headers[.location])
            let id = String(location.split(separator: "/").last!)
            guard case .sqlite(let path) = app.configuration.store else { return }
            let blobs = try DirectoryBlobStore(root: URL(fileURLWithPath: path).deletingLastPathComponent().appendingPathComponent("uploads").path)
            // A PATCH killed before its commit left this behind.
            let stray = try await blobs.makeWriter(uploadID: id)
            try await stray.write(Array("zzz".utf8))
            try await stray.finish()
            #expect(try await client.tusPatch(location, token: token, offset: 0, bytes: Array("abc".utf8)[...]).status == .noContent)
            #expect(try await blobs.read(key: stray.key, offset: 0, count: 3) == Array("zzz".utf8))
            #expect(try await client.tusPatch(location, token: token, offset: 3, bytes: Array("def".utf8)[...]).status == .noContent)
            #expect(try await blobs.read(key: stray.key, offset: 0, count: 3).isEmpty)
            #expect(String(buffer: try await client.send(.get, location, token: token).body) == "abcdef")
            let directory = URL(fileURLWithPath: path).deletingLastPathComponent().appendingPathComponent("uploads/\(id)").path
            #expect(try FileManager.default.contentsOfDirectory(atPath: directory).count == 2)
        }
    }

    @Test("CORS exposes the tus headers and Location to browsers")
    func corsExposesTusHeaders() async throws {
        try await withTestApp(configure: { $0.cors.allowedOrigins = ["https://app.example.com"] }) { _, client in
            let token = try await client.createSession()
            var headers = UploadsAPITests.tus.bearer(token)
            headers[.init("Upload-Length")!] = "3"
            headers[.origin] = "https://app.example.com"
            let created = try await client.execute(uri: "/api/uploads", method: .post, headers: headers)
            let exposed = (created.headers[.accessControlExposeHeaders] ?? "").lowercased()
            for name in ["location", "upload-offset", "upload-length", "tus-resumable", "upload-expires"] {
                #expect(exposed.contains(name))
            }
        }
    }
}

extension HTTPFields {
    func bearer(_ token: String?) -> HTTPFields {
        var fields = self
        if let token { fields[.authorization] = "Bearer \(token)" }
        return fields
    }
}

extension TestClientProtocol {
    func tusCreate(token: String?, length: Int, metadata: String? = nil) async throws -> TestResponse {
        var headers = UploadsAPITests.tus.bearer(token)
        headers[.init("Upload-Length")!] = String(length)
        if let metadata { headers[.init("Upload-Metadata")!] = metadata }
        return try await self.execute(uri: "/api/uploads", method: .post, headers: headers)
    }

    func tusHead(_ location: String, token: String) async throws -> TestResponse {
        try await self.execute(uri: location, method: .head, headers: UploadsAPITests.tus.bearer(token))
    }

    func tusPatch(_ location: String, token: String, offset: Int, bytes: ArraySlice<UInt8>, checksum: String? = nil, length: Int? = nil) async throws -> TestResponse {
        var headers = UploadsAPITests.tus.bearer(token)
        headers[.init("Upload-Offset")!] = String(offset)
        headers[.contentType] = "application/offset+octet-stream"
        if let checksum { headers[.init("Upload-Checksum")!] = checksum }
        if let length { headers[.init("Upload-Length")!] = String(length) }
        return try await self.execute(uri: location, method: .patch, headers: headers, body: ByteBuffer(bytes: bytes))
    }
}
