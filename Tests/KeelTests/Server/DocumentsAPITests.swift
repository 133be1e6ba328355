import Foundation
import HTTPTypes
import HummingbirdTesting
import KeelCore
import KeelServer
import NIOCore
import Testing

/// `/api/documents` and `/api/search` in process, on SQLite, with workers
/// running the `document.ingest` jobs.
@Suite("Documents API")
struct DocumentsAPITests {
    static let fiveSections = ["Executive Summary", "Methodology", "Findings", "Recommendations", "Conclusion"]

    @Test("an upload becomes a document with sections, searchable by its session only, then deleted")
    func lifecycle() async throws {
        try await withTestApp(runJobs: true, modules: [DocumentsModule()]) { app, client in
            let token = try await client.createSession()
            let upload = try await client.upload(try DocumentFixtures.bytes("report.md"), filename: "report.md", token: token)
            let created = try await client.send(.post, "/api/documents", token: token, body: #"{"upload_id":"\#(upload)"}"#)
            #expect(created.status == .accepted, "\(created.text)")
            let id = try #require(created.json["id"]?.stringValue)
            #expect(created.headers[.location] == "/api/documents/\(id)")
            #expect(created.json["status"]?.stringValue == "processing" && created.json["format"]?.stringValue == "markdown")
            #expect(created.json["job"]?.objectValue?["type"]?.stringValue == "document.ingest")
            #expect(created.json["job_id"] == created.json["job"]?.objectValue?["id"])

            let document = try await client.waitForDocument(id, token: token)
            #expect(document["status"]?.stringValue == "ready" && document["title"]?.stringValue == "Quarterly Operations Report")
            let sections = try #require(document["sections"]?.arrayValue).compactMap(\.objectValue)
            let titles = sections.compactMap { $0["title"]?.stringValue }
            #expect(Self.fiveSections.allSatisfy(titles.contains), "\(titles)")
            #expect(sections.allSatisfy { $0["text"] == nil && $0["chars"] != nil && $0["path"]?.arrayValue != nil })
            let findings = try #require(sections.first { $0["title"]?.stringValue == "Latency" })
            #expect(findings["path"]?.arrayValue?.compactMap(\.stringValue) == ["Quarterly Operations Report", "Findings", "Latency"])
            let index = try #require(findings["index"].flatMap { if case .int(let value) = $0 { Int(value) } else { nil } })

            let section = try await client.send(.get, "/api/documents/\(id)/sections/\(index)", token: token)
            #expect(section.status == .ok)
            #expect(section.json["title"]?.stringValue == "Latency" && section.json["document_id"]?.stringValue == id)
            #expect(section.json["text"]?.stringValue?.contains("Frankfurt") == true)
            #expect(try await client.send(.get, "/api/documents/\(id)/sections/999", token: token).status == .notFound)
            #expect(try await client.send(.get, "/api/documents/\(id)/sections/x", token: token).status == .badRequest)

            let search = try await client.send(.get, "/api/search?q=frankfurt%20caches", token: token)
            #expect(search.status == .ok)
            let results = try #require(search.json["results"]?.arrayValue).compactMap(\.objectValue)
            #expect(results.first?["section_title"]?.stringValue == "Latency" && results.first?["document_id"]?.stringValue == id)
            #expect(results.first?["snippet"]?.stringValue?.contains("**Frankfurt**") == true, "\(results)")
            #expect(results.first?["heading"]?.stringValue == "Quarterly Operations Report › Findings › Latency")
            // As forms send it: `+` for a space.
            let form = try await client.send(.get, "/api/search?q=frankfurt+caches", token: token)
            #expect(form.json["results"]?.arrayValue?.first?.objectValue?["section_title"]?.stringValue == "Latency", "\(form.text)")
            let restricted = try await client.send(.get, "/api/search?q=frankfurt&document=\(id)&limit=1", token: token)
            #expect(restricted.json["results"]?.arrayValue?.count == 1)

            // Another session: the document does not exist.
            let other = try await client.createSession()
            #expect(try await client.send(.get, "/api/documents/\(id)", token: other).status == .notFound)
            #expect(try await client.send(.get, "/api/documents/\(id)/sections/0", token: other).status == .notFound)
            #expect(try await client.send(.delete, "/api/documents/\(id)", token: other).status == .notFound)
            #expect(try await client.send(.get, "/api/search?q=frankfurt", token: other).json["results"]?.arrayValue?.isEmpty == true)
            #expect(try await client.send(.get, "/api/search?q=frankfurt&document=\(id)", token: other).status == .notFound)
            #expect(try await client.send(.post, "/api/documents", token: other, body: #"{"upload_id":"\#(upload)"}"#).status == .notFound)
            #expect(try await client.send(.get, "/api/documents", token: other).json["documents"]?.arrayValue?.isEmpty == true)

            // Asking again for the same upload is the same document, and no new job.
            let again = try await client.send(.post, "/api/documents", token: token, body: #"{"upload_id":"\#(upload)"}"#)
            #expect(again.status == .ok && again.json["id"]?.stringValue == id && again.json["job"] == nil)
            let listed = try await client.send(.get, "/api/documents", token: token)
            #expect(listed.json["documents"]?.arrayValue?.compactMap { $0.objectValue?["id"]?.stringValue } == [id])

            #expect(try await client.send(.delete, "/api/documents/\(id)", token: token).status == .noContent)
            #expect(try await client.send(.get, "/api/documents/\(id)", token: token).status == .notFound)
            #expect(try await client.send(.get, "/api/search?q=frankfurt", token: token).json["results"]?.arrayValue?.isEmpty == true)
            #expect(try await app.store.documents.outline(documentID: id).isEmpty)
        }
    }

    @Test("the report in each of the five formats gives the same sections through the API", arguments: ["report.md", "report.txt", "report.html", "report.docx", "report.pdf"])
    func formats(file: String) async throws {
        if file.hasSuffix(".pdf") { try DocumentTools.requirePoppler() }
        try await withTestApp(runJobs: true, modules: [DocumentsModule()]) { _, client in
            let token = try await client.createSession()
            let upload = try await client.upload(try DocumentFixtures.bytes(file), filename: file, token: token)
            let created = try await client.send(.post, "/api/documents", token: token, body: #"{"upload_id":"\#(upload)"}"#)
            let id = try #require(created.json["id"]?.stringValue, "\(created.text)")
            let document = try await client.waitForDocument(id, token: token)
            #expect(document["status"]?.stringValue == "ready", "\(document)")
            let titles = (document["sections"]?.arrayValue ?? []).compactMap { $0.objectValue?["title"]?.stringValue }
            #expect(titles.filter(Self.fiveSections.contains) == Self.fiveSections, "\(file): \(titles)")
            if file.hasSuffix(".pdf") {
                #expect(document["pages"] != nil && document["pages"] != .null)
                let first = document["sections"]?.arrayValue?.first?.objectValue
                #expect(first?["first_page"] == .int(1), "\(String(describing: first))")
            }
            let search = try await client.send(.get, "/api/search?q=snapshot%20retention", token: token)
            let sectionsFound = (search.json["results"]?.arrayValue ?? []).compactMap { $0.objectValue?["section_title"]?.stringValue }
            #expect(sectionsFound.contains("Recommendations"), "\(file): \(sectionsFound)")
        }
    }

    @Test("documents posted at once, with workers waiting, all become ready")
    func burst() async throws {
        try await withTestApp(configure: { $0.jobs.workers = 4 }, runJobs: true, modules: [DocumentsModule()]) { _, client in
            let token = try await client.createSession()
            var uploads: [String] = []
            for index in 0..<8 {
                uploads.append(try await client.upload(Array("# Note \(index)\n\nBody \(index) text.\n".utf8), filename: "n\(index).md", token: token))
            }
            let ids = try await withThrowingTaskGroup(of: String.self) { group in
                for upload in uploads {
                    group.addTask {
                        let created = try await client.send(.post, "/api/documents", token: token, body: #"{"upload_id":"\#(upload)"}"#)
                        return try #require(created.json["id"]?.stringValue)
                    }
                }
                return try await group.reduce(into: [String]()) { $0.append($1) }
            }
            for id in ids {
                let document = try await client.waitForDocument(id, token: token)
                #expect(document["status"]?.stringValue == "ready", "\(document)")
            }
        }
    }

    @Test("a document whose ingest job never reached the queue: reading it later says so, asking again ingests it")
    func lostIngest() async throws {
        let clock = ManualClock(Date())
        try await withTestApp(clock: clock, runJobs: true, modules: [DocumentsModule()]) { app, client in
            let token = try await client.createSession()
            let bytes = try DocumentFixtures.bytes("report.md")
            let upload = try await client.upload(bytes, filename: "report.md", token: token)
            let sessionID = try #require(try await app.store.uploads.upload(id: upload)?.sessionID)
            // What a request that died between naming the job and queuing it leaves behind.
            _ = try await app.store.documents.createDocument(
                Document(id: "lost", sessionID: sessionID, uploadID: upload, filename: "report.md", format: "markdown", mediaType: "text/markdown",
                    byteSize: Int64(bytes.count), createdAt: clock.now()))
            let named = Identifiers.random(byteCount: 16)
            #expect(try await app.store.documents.assignIngest(documentID: "lost", jobID: named, replacing: nil, now: clock.now()) != nil)
            // Within a minute it may still be on its way; after that it is lost.
            #expect(try await client.send(.get, "/api/documents/lost", token: token).json["status"]?.stringValue == "processing")
            clock.advance(by: .seconds(61))
            let lost = try await client.send(.get, "/api/documents/lost", token: token).json
            #expect(lost["status"]?.stringValue == "failed" && lost["error"]?.objectValue?["code"]?.stringValue == "ingest_lost", "\(lost)")
            let again = try await client.send(.post, "/api/documents", token: token, body: #"{"upload_id":"\#(upload)"}"#)
            #expect(again.status == .accepted && again.json["id"]?.stringValue == "lost")
            #expect(try await client.waitForDocument("lost", token: token)["status"]?.stringValue == "ready")
        }
    }

    @Test("a document that names a job the queue never got: the next request queues that job")
    func jobNeverQueued() async throws {
        try await withTestApp(runJobs: true, modules: [DocumentsModule()]) { app, client in
            let token = try await client.createSession()
            let bytes = try DocumentFixtures.bytes("report.md")
            let upload = try await client.upload(bytes, filename: "report.md", token: token)
            let sessionID = try #require(try await app.store.uploads.upload(id: upload)?.sessionID)
            _ = try await app.store.documents.createDocument(
                Document(id: "named", sessionID: sessionID, uploadID: upload, filename: "report.md", format: "markdown", mediaType: "text/markdown",
                    byteSize: Int64(bytes.count), createdAt: Date()))
            let named = Identifiers.random(byteCount: 16)
            _ = try await app.store.documents.assignIngest(documentID: "named", jobID: named, replacing: nil, now: Date())
            let again = try await client.send(.post, "/api/documents", token: token, body: #"{"upload_id":"\#(upload)"}"#)
            #expect(again.status == .accepted && again.json["job"]?.objectValue?["id"]?.stringValue == named, "\(again.text)")
            #expect(try await client.waitForDocument("named", token: token)["status"]?.stringValue == "ready")
            // And once queued, asking again finds it (200, the same job).
            let third = try await client.send(.post, "/api/documents", token: token, body: #"{"upload_id":"\#(upload)"}"#)
            #expect(third.status == .ok && third.json["job"] == nil)
        }
    }

    @Test("Upload-Metadata: document 1 makes the document when the upload completes")
    func uploadMetadata() async throws {
        try await withTestApp(runJobs: true, modules: [DocumentsModule()]) { _, client in
            let token = try await client.createSession()
            _ = try await client.upload(try DocumentFixtures.bytes("report.html"), filename: "report.html", token: token, document: true)
            var id: String?
            try await waitFor("the document to appear") {
                let listed = try await client.send(.get, "/api/documents", token: token)
                id = listed.json["documents"]?.arrayValue?.first?.objectValue?["id"]?.stringValue
                return id != nil
            }
            let document = try await client.waitForDocument(try #require(id), token: token)
            #expect(document["status"]?.stringValue == "ready" && document["format"]?.stringValue == "html")
            // A plain upload makes no document.
            _ = try await client.upload(Array("plain".utf8), filename: "notes.txt", token: token)
            try await Task.sleep(for: .milliseconds(200))
            #expect(try await client.send(.get, "/api/documents", token: token).json["documents"]?.arrayValue?.count == 1)
        }
    }

    @Test("bad requests get clear JSON errors and store nothing")
    func badRequests() async throws {
        try await withTestApp(configure: { $0.documents.maxBytes = 4096 }, runJobs: true, modules: [DocumentsModule()]) { app, client in
            let token = try await client.createSession()
            func post(_ body: String, contentType: String? = "application/json") async throws -> TestResponse {
                try await client.send(.post, "/api/documents", token: token, body: body, contentType: contentType)
            }
            #expect(try await client.send(.post, "/api/documents", body: #"{"upload_id":"x"}"#).status == .unauthorized)
            #expect(try await post("{}").errorCode == "invalid_input")
            #expect(try await post(#"{"upload_id":"x","extra":1}"#).errorCode == "invalid_input")
            #expect(try await post(#"{"upload_id":5}"#).errorCode == "invalid_input")
            #expect(try await post(#"{"upload_id":"x"}"#, contentType: "text/plain").status == .unsupportedMediaType)
            #expect(try await post(#"{"upload_id":"nope"}"#).status == .notFound)

            let binary = try await client.upload([0x7F, 0x45, 0x4C, 0x46, 0, 0, 1, 2, 3, 0, 0, 0], filename: "tool.bin", token: token)
            let refused = try await post(#"{"upload_id":"\#(binary)"}"#)
            #expect(refused.status == .unsupportedMediaType && refused.errorCode == "unsupported_document_type", "\(refused.text)")
            let large = try await client.upload(Array(repeating: UInt8(ascii: "a"), count: 5000), filename: "big.txt", token: token)
            let tooLarge = try await post(#"{"upload_id":"\#(large)"}"#)
            #expect(tooLarge.status == .contentTooLarge && tooLarge.errorCode == "document_too_large")
            let unfinished = try #require(try await client.tusCreate(token: token, length: 10).headers[.location]).split(separator: "/").last!
            let incomplete = try await post(#"{"upload_id":"\#(unfinished)"}"#)
            #expect(incomplete.status == .conflict && incomplete.errorCode == "upload_incomplete")
            #expect(try await client.send(.get, "/api/documents", token: token).json["documents"]?.arrayValue?.isEmpty == true)

            #expect(try await client.send(.get, "/api/search", token: token).errorCode == "invalid_input")
            #expect(try await client.send(.get, "/api/search?q=%20", token: token).errorCode == "invalid_input")
            #expect(try await client.send(.get, "/api/search?q=a&limit=0", token: token).errorCode == "invalid_input")
            #expect(try await client.send(.get, "/api/search?q=a&limit=51", token: token).errorCode == "invalid_input")
            #expect(try await client.send(.get, "/api/search?q=" + String(repeating: "a", count: 1001), token: token).errorCode == "invalid_input")
            #expect(try await client.send(.get, "/api/documents?limit=0", token: token).errorCode == "invalid_input")
            #expect(try await client.send(.get, "/api/documents?cursor=zzz", token: token).errorCode == "invalid_cursor")
            #expect(try await client.send(.get, "/api/documents/nope", token: token).status == .notFound)
            // Engine syntax in a query is only words.
            #expect(try await client.send(.get, "/api/search?q=%22NEAR(a*%20OR", token: token).status == .ok)
            #expect(try await app.store.documents.documents(sessionID: "x", after: nil, limit: 10).documents.isEmpty)
        }
    }

    @Test("documents that cannot be read fail with the reason as the job's error, and nothing is searchable",
        arguments: [("bomb.docx", "archive_too_large"), ("malformed.docx", "malformed_document"), ("scanned.pdf", "no_text_layer"), ("truncated.pdf", "malformed_document")])
    func failures(file: String, code: String) async throws {
        if file.hasSuffix(".pdf") { try DocumentTools.requirePoppler() }
        try await withTestApp(runJobs: true, modules: [DocumentsModule()]) { app, client in
            let token = try await client.createSession()
            let upload = try await client.upload(try DocumentFixtures.bytes(file), filename: file, token: token)
            let created = try await client.send(.post, "/api/documents", token: token, body: #"{"upload_id":"\#(upload)"}"#)
            let id = try #require(created.json["id"]?.stringValue, "\(created.text)")
            let document = try await client.waitForDocument(id, token: token)
            #expect(document["status"]?.stringValue == "failed")
            #expect(document["error"]?.objectValue?["code"]?.stringValue == code, "\(document)")
            let jobID = try #require(document["job_id"]?.stringValue)
            // The document is failed just before its job finishes failing.
            var job = try await client.send(.get, "/api/jobs/\(jobID)", token: token)
            try await waitFor("the ingest job to end") {
                job = try await client.send(.get, "/api/jobs/\(jobID)", token: token)
                return job.json["status"]?.stringValue != "running" && job.json["status"]?.stringValue != "queued"
            }
            #expect(job.json["status"]?.stringValue == "failed" && job.json["error"]?.objectValue?["code"]?.stringValue == code)
            #expect(job.json["attempts"] == .int(1), "extraction failures are not retried")
            #expect(try await app.store.documents.outline(documentID: id).isEmpty)
            #expect(try await client.send(.get, "/api/documents/\(id)/sections/0", token: token).errorCode == "document_not_ready")
        }
    }

    @Test("without Poppler a PDF fails with pdf_support_missing naming the package; other formats still work")
    func withoutPoppler() async throws {
        let empty = try TestEnvironment.directory("no-poppler")
        try await withTestApp(configure: { $0.documents.popplerPath = empty.path }, runJobs: true, modules: [DocumentsModule()]) { _, client in
            let token = try await client.createSession()
            let upload = try await client.upload(try DocumentFixtures.bytes("report.pdf"), filename: "report.pdf", token: token)
            let id = try #require(try await client.send(.post, "/api/documents", token: token, body: #"{"upload_id":"\#(upload)"}"#).json["id"]?.stringValue)
            let document = try await client.waitForDocument(id, token: token)
            let error = document["error"]?.objectValue
            #expect(error?["code"]?.stringValue == "pdf_support_missing")
            #expect(error?["message"]?.stringValue?.contains("poppler-utils") == true)
            #expect(error?["message"]?.stringValue?.contains(empty.path) == false, "no server path in the message")
        }
    }

    @Test("an extraction past its time limit is stopped and the document fails with extraction_timeout")
    func timeout() async throws {
        try DocumentTools.requirePoppler()
        try await withTestApp(configure: { $0.documents.extractTimeout = .milliseconds(1) }, runJobs: true, modules: [DocumentsModule()]) { _, client in
            let token = try await client.createSession()
            let upload = try await client.upload(try DocumentFixtures.bytes("report.pdf"), filename: "report.pdf", token: token)
            let id = try #require(try await client.send(.post, "/api/documents", token: token, body: #"{"upload_id":"\#(upload)"}"#).json["id"]?.stringValue)
            let document = try await client.waitForDocument(id, token: token)
            #expect(document["error"]?.objectValue?["code"]?.stringValue == "extraction_timeout", "\(document)")
        }
    }

    @Test("a failed document is ingested again when asked again; a cancelled ingest fails its document")
    func retryAfterFailure() async throws {
        // No workers: jobs stay queued, so each step is observed in place.
        try await withTestApp(configure: { $0.jobs.workers = 0 }, runJobs: true, modules: [DocumentsModule()]) { app, client in
            let token = try await client.createSession()
            let upload = try await client.upload(try DocumentFixtures.bytes("report.md"), filename: "report.md", token: token)
            let created = try await client.send(.post, "/api/documents", token: token, body: #"{"upload_id":"\#(upload)"}"#)
            let id = try #require(created.json["id"]?.stringValue)
            let firstJob = try #require(created.json["job_id"]?.stringValue)
            #expect(try await app.store.documents.failIngest(documentID: id, jobID: firstJob, attempt: nil, code: "ingest_failed", message: "x", now: Date()))
            #expect(try await client.send(.get, "/api/documents/\(id)", token: token).json["status"]?.stringValue == "failed")

            let again = try await client.send(.post, "/api/documents", token: token, body: #"{"upload_id":"\#(upload)"}"#)
            #expect(again.status == .accepted && again.json["id"]?.stringValue == id)
            let secondJob = try #require(again.json["job_id"]?.stringValue)
            #expect(secondJob != firstJob && again.json["status"]?.stringValue == "processing" && again.json["error"] == .null)

            // Cancelling the ingest job fails the document instead of leaving it processing.
            #expect(try await client.send(.post, "/api/jobs/\(secondJob)/cancel", token: token).status == .ok)
            let document = try await client.send(.get, "/api/documents/\(id)", token: token).json
            #expect(document["status"]?.stringValue == "failed" && document["error"]?.objectValue?["code"]?.stringValue == "ingest_cancelled")
        }
    }
}

/// Poppler's tools, which CI always has (scripts/test installs poppler-utils).
enum DocumentTools {
    static var popplerAvailable: Bool {
        (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").contains { FileManager.default.isExecutableFile(atPath: "\($0)/pdftohtml") }
    }

    static func requirePoppler() throws {
        if !self.popplerAvailable {
            if ProcessInfo.processInfo.environment["CI"] == "true" { Issue.record("CI must have Poppler (scripts/test installs poppler-utils)") }
            try Test.cancel("skipped: Poppler's pdftohtml is not on PATH (apt-get install poppler-utils)")
        }
    }
}

extension TestClientProtocol {
    /// A complete tus upload of `bytes`; returns its id.
    func upload(_ bytes: [UInt8], filename: String, token: String, document: Bool = false) async throws -> String {
        var metadata = "filename \(Data(filename.utf8).base64EncodedString())"
        if document { metadata += ",document \(Data("1".utf8).base64EncodedString())" }
        let created = try await self.tusCreate(token: token, length: bytes.count, metadata: metadata)
        let location = try #require(created.headers[.location], "\(created.status)")
        if !bytes.isEmpty {
            let patched = try await self.tusPatch(location, token: token, offset: 0, bytes: bytes[...])
            #expect(patched.status == .noContent)
        }
        return String(location.split(separator: "/").last!)
    }

    /// The document once it is no longer processing.
    func waitForDocument(_ id: String, token: String, timeout: Duration = .seconds(60)) async throws -> [String: JSONValue] {
        var document: [String: JSONValue] = [:]
        try await waitFor("document \(id) to finish processing", timeout: timeout) {
            document = try await self.send(.get, "/api/documents/\(id)", token: token).json
            return document["status"]?.stringValue != "processing"
        }
        return document
    }
}
