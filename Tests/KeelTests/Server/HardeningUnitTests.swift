import Foundation
import HTTPTypes
import HummingbirdTesting
import KeelCore
@testable import KeelServer
import Logging
import Testing

@Suite("Hardening, in process")
struct HardeningUnitTests {
    @Test("the client address: the peer, or through trusted proxies the last untrusted X-Forwarded-For hop")
    func clientAddress() {
        let trusted: (String) -> Bool = { ["127.0.0.1", "10.0.0.5"].contains($0) }
        // An untrusted peer is the client, whatever it claims.
        #expect(ClientAddressResolver.resolve(peer: "203.0.113.1", forwardedFor: ["198.51.100.1"], isTrusted: trusted) == "203.0.113.1")
        // A trusted proxy names the client.
        #expect(ClientAddressResolver.resolve(peer: "127.0.0.1", forwardedFor: ["198.51.100.1"], isTrusted: trusted) == "198.51.100.1")
        // A client cannot hide behind an address it wrote itself: the last untrusted hop counts.
        #expect(ClientAddressResolver.resolve(peer: "127.0.0.1", forwardedFor: ["1.1.1.1, 198.51.100.2, 10.0.0.5"], isTrusted: trusted) == "198.51.100.2")
        #expect(ClientAddressResolver.resolve(peer: "127.0.0.1", forwardedFor: ["garbage"], isTrusted: trusted) == "127.0.0.1")
        #expect(ClientAddressResolver.resolve(peer: nil, forwardedFor: ["198.51.100.1"], isTrusted: trusted) == nil)
        // Ports and brackets are not part of the address; an IPv6 client counts as its /64.
        #expect(ClientAddressResolver.resolve(peer: "127.0.0.1", forwardedFor: ["198.51.100.3:5678"], isTrusted: trusted) == "198.51.100.3")
        #expect(
            ClientAddressResolver.resolve(peer: "127.0.0.1", forwardedFor: ["[2001:db8:1:2:aaaa::1]:443"], isTrusted: trusted)
                == ClientAddressResolver.resolve(peer: "2001:db8:1:2:bbbb::9", forwardedFor: [], isTrusted: trusted))
        #expect(ClientAddressResolver.resolve(peer: "2001:db8:1:3::1", forwardedFor: [], isTrusted: trusted) != ClientAddressResolver.resolve(peer: "2001:db8:1:2::1", forwardedFor: [], isTrusted: trusted))
    }

    @Test("credentials are taken out of text bound for the log")
    func redaction() {
        #expect(LogRedaction.redact("POST https://api.example.com/v1/chat?key=sk-live-SECRET failed: 401") == "POST https://api.example.com/v1/chat?<redacted> failed: 401")
        #expect(LogRedaction.redact("connect to postgres://keel:hunter2@db:5432/keel refused") == "connect to postgres://<redacted>@db:5432/keel refused")
        #expect(LogRedaction.redact("header Authorization: Bearer abc.def.ghi was refused") == "header Authorization: Bearer <redacted> was refused")
        #expect(LogRedaction.redact("nothing secret here?") == "nothing secret here?")
    }

    @Test("a handler's error reaches the client as a code and a safe message; its text goes only to the log")
    func handlerErrorsAreSanitized() {
        struct ProviderError: Error, CustomStringConvertible {
            var description: String { "POST https://api.example.com/v1/chat?key=sk-live-SECRET failed: 401" }
        }
        let failure = WorkerPool.clientFailure(for: ProviderError(), jobID: "job1", attempt: 2, logger: Logger(label: "test"))
        #expect(failure.code == "handler_error")
        #expect(!failure.message.contains("sk-live") && !failure.message.contains("example.com"))
        #expect(failure.message.contains("job1"))
        // A KeelError's message is written for clients; its detail is not sent.
        let keel = WorkerPool.clientFailure(
            for: KeelError(.storeUnavailable, "The store failed to answer.", detail: "postgres://keel:hunter2@db"), jobID: "j", attempt: 1,
            logger: Logger(label: "test"))
        #expect(keel.code == "store_unavailable" && !keel.message.contains("hunter2"))
    }

    @Test("HEAD answers every GET route without a body; TRACE is 405; OPTIONS lists HEAD")
    func methods() async throws {
        try await withTestApp { _, client in
            let token = try await client.createSession()
            let get = try await client.send(.get, "/api/session", token: token)
            let head = try await client.send(.head, "/api/session", token: token)
            #expect(head.status == .ok && head.body.readableBytes == 0)
            #expect(head.headers[.contentLength] == get.headers[.contentLength])
            let trace = try await client.send(.trace, "/api/jobs", token: token)
            #expect(trace.status == .methodNotAllowed && trace.errorCode == "method_not_allowed")
            let options = try await client.send(.options, "/api/session")
            #expect(options.headers[.allow]?.contains("HEAD") == true)
        }
    }

    @Test("a JSON route refuses a body without a Content-Type (415) and stores nothing")
    func jsonNeedsAType() async throws {
        try await withTestApp { _, client in
            let token = try await client.createSession(data: #"{"kept":true}"#)
            let patch = try await client.send(.patch, "/api/session", token: token, body: #"{"kept":false}"#, contentType: nil)
            #expect(patch.status == .unsupportedMediaType && patch.errorCode == "unsupported_media_type")
            let read = try await client.send(.get, "/api/session", token: token)
            #expect(read.json["data"]?.objectValue?["kept"] == .bool(true))
        }
    }

    @Test("demo.generate is offered only with --demo-jobs; keel.probe always")
    func demoJobsOptIn() async throws {
        try await withTestApp(configure: { $0.demoJobs = false }) { _, client in
            let token = try await client.createSession()
            let demo = try await client.send(.post, "/api/jobs", token: token, body: #"{"type":"demo.generate"}"#)
            #expect(demo.status == .badRequest && demo.errorCode == "unknown_job_type")
            let probe = try await client.send(.post, "/api/jobs", token: token, body: #"{"type":"keel.probe","input":{"tokens":2}}"#)
            #expect(probe.status == .accepted)
            let tooMuch = try await client.send(.post, "/api/jobs", token: token, body: #"{"type":"keel.probe","input":{"tokens":7}}"#)
            #expect(tooMuch.status == .badRequest && tooMuch.errorCode == "invalid_input")
        }
    }

    @Test("/metrics and /system-health need the ops token when one is configured")
    func opsToken() async throws {
        try await withTestApp(configure: { $0.opsToken = "0123456789abcdef-token" }) { _, client in
            for path in ["/metrics", "/system-health"] {
                let missing = try await client.send(.get, path)
                #expect(missing.status == .unauthorized && missing.errorCode == "ops_token_required", "\(path)")
                let wrong = try await client.send(.get, path, token: "0123456789abcdef-tokex")
                #expect(wrong.status == .unauthorized, "\(path)")
                let right = try await client.send(.get, path, token: "0123456789abcdef-token")
                #expect(right.status == .ok, "\(path)")
            }
            #expect(try await client.send(.get, "/health").status == .ok)
        }
    }

    @Test("in-process uploads keep their bytes beside the test's own store, not under the current directory")
    func uploadBytesInScratch() async throws {
        let before = FileManager.default.fileExists(atPath: "./keel-data/uploads")
        try await withTestApp { app, client in
            let token = try await client.createSession()
            let created = try await client.send(
                .post, "/api/uploads", token: token, headers: [HTTPField.Name("Tus-Resumable")!: "1.0.0", HTTPField.Name("Upload-Length")!: "3"],
                body: "abc", contentType: "application/offset+octet-stream")
            #expect(created.status == .created)
            guard case .sqlite(let path) = app.configuration.store else {
                Issue.record("the test app is not on SQLite")
                return
            }
            let uploads = URL(fileURLWithPath: path).deletingLastPathComponent().appendingPathComponent("uploads").path
            #expect(((try? FileManager.default.contentsOfDirectory(atPath: uploads)) ?? []).count == 1)
        }
        #expect(FileManager.default.fileExists(atPath: "./keel-data/uploads") == before)
    }
}

@Suite("Session cookie refresh")
struct SessionCookieRefreshTests {
    @Test("any route that extends a cookie session resends the cookie; a bearer-token request gets none")
    func resentEverywhere() async throws {
        let clock = ManualClock()
        try await withTestApp(clock: clock) { _, client in
            let token = try await client.createSession()
            let cookie: HTTPFields = [.cookie: "keel_session=\(token)"]
            clock.advance(by: .seconds(120))
            let jobs = try await client.send(.get, "/api/jobs", headers: cookie)
            #expect(jobs.status == .ok)
            #expect(jobs.headers[.setCookie]?.hasPrefix("keel_session=\(token)") == true, "\(jobs.headers)")
            // Within the refresh interval nothing is written, and nothing is resent.
            #expect(try await client.send(.get, "/api/jobs", headers: cookie).headers[.setCookie] == nil)
            clock.advance(by: .seconds(120))
            #expect(try await client.send(.get, "/api/jobs", token: token).headers[.setCookie] == nil)
        }
    }
}
