import AsyncHTTPClient
import Foundation
import KeelCore
import NIOCore
import Testing

/// Documents across real processes: an instance SIGKILLed in the middle of
/// an ingest leaves nothing half-indexed, and the retry on another instance
/// finishes the document once.
@Suite("Documents across processes", .serialized)
struct MultiProcessDocumentTests {
    /// A Poppler whose pdftohtml first sleeps: the ingest is certainly
    /// mid-extraction when the test kills its instance. pdfinfo is the real one.
    static func slowPoppler() throws -> URL {
        let directory = try TestEnvironment.directory("slow-poppler")
        let pdftohtml = directory.appendingPathComponent("pdftohtml")
        try "#!/bin/sh\nsleep 20\nexec pdftohtml \"$@\"\n".write(to: pdftohtml, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: pdftohtml.path)
        let pdfinfo = directory.appendingPathComponent("pdfinfo")
        try "#!/bin/sh\nexec pdfinfo \"$@\"\n".write(to: pdfinfo, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: pdfinfo.path)
        return directory
    }

    @Test("an instance SIGKILLed mid-ingest leaves no half-indexed document; another instance's retry finishes it once", arguments: Driver.available)
    func killedMidIngest(driver: Driver) async throws {
        try DocumentTools.requirePoppler()
        let fixture = try await StoreFixture.make(driver)
        let common = ["--janitor-interval", "300ms", "--job-retry-backoff", "100ms", "--job-lease-duration", "6s", "--workers", "1"]
        let victim = try await KeelProcess.serve(store: fixture.location, arguments: common + ["--poppler-path", try Self.slowPoppler().path])
        defer { victim.signal(SIGKILL) }
        let token = try #require(try await HTTP.send(.POST, victim.baseURL + "/api/session").json["token"]?.stringValue)
        let upload = try await HTTP.tusUpload(victim.baseURL, token: token, bytes: try DocumentFixtures.bytes("report.pdf"), filename: "report.pdf")
        let created = try await HTTP.send(.POST, victim.baseURL + "/api/documents", token: token, body: #"{"upload_id":"\#(upload)"}"#)
        #expect(created.status == 202, "\(created.body)")
        let id = try #require(created.json["id"]?.stringValue)
        let jobID = try #require(created.json["job_id"]?.stringValue)

        try await waitFor("the ingest to be extracting") {
            let job = try await HTTP.send(.GET, victim.baseURL + "/api/jobs/\(jobID)", token: token).json
            return job["progress"]?.objectValue?["stage"]?.stringValue == "extracting"
        }
        victim.signal(SIGKILL)
        #expect(await victim.waitForExit() != 0)

        // Nothing of the document is readable or searchable in between: an
        // instance with no workers looks, so no retry can have finished it
        // first (on a loaded machine a new instance can take longer to start
        // than the victim's lease has left).
        let observer = try await KeelProcess.serve(store: fixture.location, arguments: ["--workers", "0"])
        defer { observer.signal(SIGKILL) }
        let between = try await HTTP.send(.GET, observer.baseURL + "/api/documents/\(id)", token: token).json
        #expect(between["status"]?.stringValue == "processing", "\(between)")
        #expect(between["sections"]?.arrayValue?.isEmpty == true && between["passage_count"] == .int(0))
        #expect(try await HTTP.send(.GET, observer.baseURL + "/api/search?q=snapshot", token: token).json["results"]?.arrayValue?.isEmpty == true)
        #expect(await observer.stop() == 0)

        let survivor = try await KeelProcess.serve(store: fixture.location, arguments: common)
        defer { survivor.signal(SIGKILL) }

        var document: [String: JSONValue] = [:]
        try await waitFor("the retry to finish the document", timeout: .seconds(60)) {
            document = try await HTTP.send(.GET, survivor.baseURL + "/api/documents/\(id)", token: token).json
            return document["status"]?.stringValue != "processing"
        }
        #expect(document["status"]?.stringValue == "ready", "\(document)\n\(survivor.logTail())")
        // The document is ready just before its job is marked done.
        var job: [String: JSONValue] = [:]
        try await waitFor("the ingest job to end") {
            job = try await HTTP.send(.GET, survivor.baseURL + "/api/jobs/\(jobID)", token: token).json
            return job["status"]?.stringValue != "running" && job["status"]?.stringValue != "queued"
        }
        #expect(job["status"]?.stringValue == "succeeded" && job["attempts"] == .int(2), "\(job)")
        let titles = (document["sections"]?.arrayValue ?? []).compactMap { $0.objectValue?["title"]?.stringValue }
        #expect(titles.filter(DocumentsAPITests.fiveSections.contains) == DocumentsAPITests.fiveSections, "\(titles)")
        // Every passage once: the search finds the recommendation one time.
        let results = try await HTTP.send(.GET, survivor.baseURL + "/api/search?q=%22snapshot%20retention%22", token: token).json["results"]?.arrayValue ?? []
        #expect(results.count == 1, "\(results)")
        let passages = try #require(document["passage_count"])
        // Ingesting the same file afresh gives the same passages.
        let fresh = try await HTTP.tusUpload(survivor.baseURL, token: token, bytes: try DocumentFixtures.bytes("report.pdf"), filename: "again.pdf")
        let second = try #require(try await HTTP.send(.POST, survivor.baseURL + "/api/documents", token: token, body: #"{"upload_id":"\#(fresh)"}"#).json["id"]?.stringValue)
        var again: [String: JSONValue] = [:]
        try await waitFor("the second document") {
            again = try await HTTP.send(.GET, survivor.baseURL + "/api/documents/\(second)", token: token).json
            return again["status"]?.stringValue == "ready"
        }
        #expect(again["passage_count"] == passages && again["section_count"] == document["section_count"])
        #expect(await survivor.stop() == 0)
    }
}

extension HTTP {
    /// A complete tus upload (create, then one PATCH); returns its id.
    static func tusUpload(_ server: String, token: String, bytes: [UInt8], filename: String) async throws -> String {
        var create = HTTPClientRequest(url: server + "/api/uploads")
        create.method = .POST
        create.headers.add(name: "Authorization", value: "Bearer \(token)")
        create.headers.add(name: "Tus-Resumable", value: "1.0.0")
        create.headers.add(name: "Upload-Length", value: String(bytes.count))
        create.headers.add(name: "Upload-Metadata", value: "filename \(Data(filename.utf8).base64EncodedString())")
        let created = try await HTTP.execute(create)
        let location = try #require(created.headers.first(name: "Location"), "\(created.status) \(created.body)")
        var patch = HTTPClientRequest(url: server + location)
        patch.method = .PATCH
        patch.headers.add(name: "Authorization", value: "Bearer \(token)")
        patch.headers.add(name: "Tus-Resumable", value: "1.0.0")
        patch.headers.add(name: "Upload-Offset", value: "0")
        patch.headers.add(name: "Content-Type", value: "application/offset+octet-stream")
        patch.body = .bytes(ByteBuffer(bytes: bytes))
        let patched = try await HTTP.execute(patch)
        #expect(patched.status == 204, "\(patched.body)")
        return String(location.split(separator: "/").last!)
    }
}
