import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import KeelCore
import KeelServer
import ServiceLifecycle
import Synchronization
import Testing

/// A feature plugs in through one seam: its routes, job types, upload hooks
/// and services, registered by a `KeelModule`.
@Suite("Modules")
struct ModuleTests {
    /// What the test module saw.
    final class Seen: Sendable {
        let uploads = Mutex<[String]>([])
        let serviceRan = Atomic<Bool>(false)
    }

    /// Echoes its input, and says whose job it is.
    struct EchoJob: JobHandler {
        let type = "test.echo"
        func validate(_ input: JSONValue) throws -> JSONValue { input }
        func run(_ job: JobContext) async throws -> JSONValue {
            try await job.token("echo ")
            return .object(["input": job.input, "session": .string(job.sessionID)])
        }
    }

    struct RecordingService: Service {
        let seen: Seen
        func run() async throws {
            self.seen.serviceRan.store(true, ordering: .relaxed)
            try? await gracefulShutdown()
        }
    }

    struct TestModule: KeelModule {
        let seen: Seen

        func register(in app: inout KeelModuleBuilder) throws {
            let sessions = app.sessions
            let jobs = app.jobs
            app.route("/api/echo/:word", .get) { request, context in
                let session = try await sessions.session(for: request)
                let word = try context.parameters.require("word")
                return Response(
                    status: .ok, headers: [.contentType: "application/json"],
                    body: .init(byteBuffer: .init(string: #"{"word":"\#(word)","session":"\#(session.id)"}"#)))
            }
            app.route("/api/echo", .post) { request, _ in
                let session = try await sessions.session(for: request)
                let job = try await jobs.submit(
                    NewJob(sessionID: session.id, type: "test.echo", inputJSON: #"{"n":1}"#, maxAttempts: 1, idempotencyKey: nil))
                return Response(
                    status: .accepted, headers: [.contentType: "application/json"], body: .init(byteBuffer: .init(string: #"{"id":"\#(job.id)"}"#)))
            }
            app.jobType(EchoJob())
            let seen = self.seen
            app.onUploadCompletion { upload in seen.uploads.withLock { $0.append(upload.id) } }
            app.service(RecordingService(seen: seen))
        }
    }

    @Test("a module's routes, job type, upload hook and service all run; its routes get Keel's middleware and 405/HEAD answers")
    func seam() async throws {
        let seen = Seen()
        try await withTestApp(runJobs: true, modules: [TestModule(seen: seen)]) { app, client in
            #expect(app.routes.contains { $0.path == "/api/echo/:word" && $0.method == "GET" })
            let token = try await client.createSession()
            let session = try await client.send(.get, "/api/session", token: token).json["id"]?.stringValue
            let echoed = try await client.send(.get, "/api/echo/hello", token: token)
            #expect(echoed.status == .ok && echoed.json["word"] == .string("hello") && echoed.json["session"]?.stringValue == session)
            #expect(echoed.headers[HTTPField.Name("X-Request-Id")!] != nil)
            // Keel's answers around a module's route.
            #expect(try await client.send(.get, "/api/echo/hello").errorCode == "session_required")
            #expect(try await client.send(.delete, "/api/echo/hello", token: token).status == .methodNotAllowed)
            #expect(try await client.send(.head, "/api/echo/hello", token: token).status == .ok)

            // Its job type runs on the workers, and its context knows the session.
            let created = try await client.send(.post, "/api/echo", token: token)
            let id = try #require(created.json["id"]?.stringValue)
            var job: [String: JSONValue] = [:]
            for _ in 0..<200 {
                job = try await client.send(.get, "/api/jobs/\(id)", token: token).json
                if job["status"] == .string("succeeded") { break }
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(job["status"] == .string("succeeded"), "\(job)")
            #expect(job["result"]?.objectValue?["session"]?.stringValue == session)

            // Its upload hook runs when an upload completes.
            let upload = try await client.send(
                .post, "/api/uploads", token: token, headers: [HTTPField.Name("Tus-Resumable")!: "1.0.0", HTTPField.Name("Upload-Length")!: "2"],
                body: "ok", contentType: "application/offset+octet-stream")
            let uploadID = try #require(upload.headers[.location]?.split(separator: "/").last.map(String.init))
            #expect(seen.uploads.withLock { $0 } == [uploadID])
            // Its service ran beside the server.
            let ran = seen.serviceRan.load(ordering: .relaxed)
            #expect(ran)
        }
    }
}
