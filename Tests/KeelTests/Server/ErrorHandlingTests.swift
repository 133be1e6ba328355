import Foundation
import HTTPTypes
import HummingbirdTesting
import KeelCore
import KeelServer
import Testing

/// Every error is JSON with the right status, and bad input leaves stored state intact.
@Suite("Errors")
struct ErrorHandlingTests {
    /// Asserts that the session's data and version are unchanged.
    func expectUnchanged(_ client: any TestClientProtocol, token: String, data: JSONValue) async throws {
        let current = try await client.send(.get, "/api/session", token: token)
        #expect(current.json["data"] == data)
        #expect(current.json["version"] == .int(1))
    }

    @Test("malformed JSON is 400 invalid_json and changes nothing")
    func malformedJSON() async throws {
        try await withTestApp { _, client in
            let token = try await client.createSession(data: #"{"a":1}"#)
            for body in ["{bad", "[1,", #"{"a": tru}"#, "\u{FF}"] {
                let response = try await client.send(.patch, "/api/session", token: token, body: body)
                #expect(response.status == .badRequest)
                #expect(response.errorCode == "invalid_json")
                #expect(response.headers[.contentType]?.hasPrefix("application/json") == true)
            }
            let create = try await client.send(.post, "/api/session", body: "{nope")
            #expect(create.errorCode == "invalid_json")
            try await self.expectUnchanged(client, token: token, data: .object(["a": .int(1)]))
        }
    }

    @Test("a patch that is not an object, or an empty body, is 400 invalid_input")
    func invalidPatch() async throws {
        try await withTestApp { _, client in
            let token = try await client.createSession(data: #"{"a":1}"#)
            for body in ["[1,2]", "\"text\"", "42", "null"] {
                let response = try await client.send(.patch, "/api/session", token: token, body: body)
                #expect(response.status == .badRequest)
                #expect(response.errorCode == "invalid_input")
            }
            let empty = try await client.send(.patch, "/api/session", token: token)
            #expect(empty.errorCode == "invalid_input")
            let badCreate = try await client.send(.post, "/api/session", body: #"{"data":[1]}"#)
            #expect(badCreate.errorCode == "invalid_input")
            try await self.expectUnchanged(client, token: token, data: .object(["a": .int(1)]))
        }
    }

    @Test("session data over the limit is 413 and changes nothing")
    func sessionDataTooLarge() async throws {
        try await withTestApp(configure: { $0.session.maxDataBytes = 100 }) { _, client in
            let token = try await client.createSession(data: #"{"a":1}"#)
            let big = String(repeating: "x", count: 200)
            let response = try await client.send(.patch, "/api/session", token: token, body: #"{"big":"\#(big)"}"#)
            #expect(response.status == .contentTooLarge)
            #expect(response.errorCode == "session_data_too_large")
            try await self.expectUnchanged(client, token: token, data: .object(["a": .int(1)]))
            let create = try await client.send(.post, "/api/session", body: #"{"data":{"big":"\#(big)"}}"#)
            #expect(create.errorCode == "session_data_too_large")
        }
    }

    @Test("a body over the request limit is 413 payload_too_large")
    func bodyTooLarge() async throws {
        try await withTestApp(configure: { $0.maxBodyBytes = 1024 }) { _, client in
            let token = try await client.createSession(data: #"{"a":1}"#)
            let big = String(repeating: "y", count: 5000)
            let response = try await client.send(.patch, "/api/session", token: token, body: #"{"big":"\#(big)"}"#)
            #expect(response.status == .contentTooLarge)
            #expect(response.errorCode == "payload_too_large")
            try await self.expectUnchanged(client, token: token, data: .object(["a": .int(1)]))
        }
    }

    @Test("a non-JSON content type is 415")
    func unsupportedMediaType() async throws {
        try await withTestApp { _, client in
            let token = try await client.createSession()
            let response = try await client.send(.patch, "/api/session", token: token, body: "a=1", contentType: "application/x-www-form-urlencoded")
            #expect(response.status == .unsupportedMediaType)
            #expect(response.errorCode == "unsupported_media_type")
        }
    }

    @Test("an unknown route is 404 JSON, a wrong method 405 with Allow")
    func routing() async throws {
        try await withTestApp { _, client in
            let missing = try await client.send(.get, "/api/nothing-here")
            #expect(missing.status == .notFound)
            #expect(missing.errorCode == "not_found")
            let wrong = try await client.send(.put, "/api/session", body: "{}")
            #expect(wrong.status == .methodNotAllowed)
            #expect(wrong.errorCode == "method_not_allowed")
            #expect(wrong.headers[.allow]?.contains("PATCH") == true)
            let options = try await client.send(.options, "/api/session")
            #expect(options.status == .noContent)
            #expect(options.headers[.allow]?.contains("GET") == true)
            let wrongHealth = try await client.send(.post, "/health")
            #expect(wrongHealth.status == .methodNotAllowed)
        }
    }

    @Test("every response, errors included, carries Keel-Instance and X-Request-Id")
    func identityHeaders() async throws {
        try await withTestApp { _, client in
            for (method, path) in [(HTTPRequest.Method.get, "/health"), (.get, "/api/session"), (.get, "/nope"), (.delete, "/health")] {
                let response = try await client.send(method, path)
                #expect(response.headers[HTTPField.Name("Keel-Instance")!] == "test-instance")
                #expect(response.headers[HTTPField.Name("X-Request-Id")!]?.isEmpty == false)
            }
            let echoed = try await client.send(.get, "/health", headers: [HTTPField.Name("X-Request-Id")!: "abc-123"])
            #expect(echoed.headers[HTTPField.Name("X-Request-Id")!] == "abc-123")
            let unsafe = try await client.send(.get, "/health", headers: [HTTPField.Name("X-Request-Id")!: "bad id with spaces"])
            #expect(unsafe.headers[HTTPField.Name("X-Request-Id")!] != "bad id with spaces")
            // A client that will close its connection is told the server closes it too.
            let closing = try await client.send(.get, "/health", headers: [.connection: "keep-alive, Close"])
            #expect(closing.headers[.connection] == "close")
            let keeping = try await client.send(.get, "/health", headers: [.connection: "keep-alive, closed-loop"])
            #expect(keeping.headers[.connection] != "close")
        }
    }
}

@Suite("CORS")
struct CORSTests {
    let origin = "https://app.example.com"

    @Test("an allowed origin gets its own origin back, with credentials and Vary")
    func allowedOrigin() async throws {
        try await withTestApp(configure: { $0.cors.allowedOrigins = [self.origin] }) { _, client in
            let response = try await client.send(.post, "/api/session", headers: [.origin: self.origin])
            #expect(response.headers[.accessControlAllowOrigin] == self.origin)
            #expect(response.headers[.accessControlAllowCredentials] == "true")
            #expect(response.headers[.vary]?.contains("Origin") == true)
            #expect(response.headers[.accessControlExposeHeaders]?.contains("X-Request-Id") == true)
            // A chat message streamed straight from its POST names the job to resume by these.
            for name in ["Keel-Job-Id", "Keel-Message-Id", "Idempotent-Replayed"] {
                #expect(response.headers[.accessControlExposeHeaders]?.contains(name) == true, "\(name)")
            }
            let error = try await client.send(.get, "/api/session", headers: [.origin: self.origin])
            #expect(error.status == .unauthorized)
            #expect(error.headers[.accessControlAllowOrigin] == self.origin)
        }
    }

    @Test("another origin gets no CORS grant")
    func otherOrigin() async throws {
        try await withTestApp(configure: { $0.cors.allowedOrigins = [self.origin] }) { _, client in
            let response = try await client.send(.get, "/health", headers: [.origin: "https://evil.example"])
            #expect(response.headers[.accessControlAllowOrigin] == nil)
            #expect(response.headers[.vary]?.contains("Origin") == true)
            let preflight = try await client.send(
                .options, "/api/session", headers: [.origin: "https://evil.example", .accessControlRequestMethod: "PATCH"]
            )
            #expect(preflight.status == .forbidden)
            #expect(preflight.errorCode == "cors_origin_not_allowed")
        }
    }

    @Test("a preflight from an allowed origin is answered with methods, headers and max-age")
    func preflight() async throws {
        try await withTestApp(configure: { $0.cors.allowedOrigins = [self.origin] }) { _, client in
            let response = try await client.send(
                .options, "/api/session",
                headers: [.origin: self.origin, .accessControlRequestMethod: "PATCH", .accessControlRequestHeaders: "Content-Type, Authorization"]
            )
            #expect(response.status == .noContent)
            #expect(response.headers[.accessControlAllowOrigin] == self.origin)
            #expect(response.headers[.accessControlAllowCredentials] == "true")
            #expect(response.headers[.accessControlAllowMethods]?.contains("PATCH") == true)
            #expect(response.headers[.accessControlAllowHeaders] == "content-type, authorization")
            #expect(response.headers[.accessControlMaxAge] == "600")
        }
    }

    @Test("origin * with credentials is refused at start with the reason")
    func wildcardWithCredentials() async throws {
        var configuration = KeelConfiguration()
        configuration.cors.allowedOrigins = ["*"]
        let error = #expect(throws: KeelError.self) { try ConfigurationLoader.validate(configuration) }
        #expect(error?.message.contains("credentials") == true)
        configuration.cors.allowCredentials = false
        try ConfigurationLoader.validate(configuration)
    }
}

@Suite("Operations endpoints")
struct OperationsTests {
    @Test("health, readiness, system health and metrics answer")
    func endpoints() async throws {
        try await withTestApp { app, client in
            #expect(try await client.send(.get, "/health").json["status"] == .string("ok"))
            #expect(try await client.send(.get, "/ready").status == .ok)
            let system = try await client.send(.get, "/system-health")
            #expect(system.json["instance"] == .string("test-instance"))
            #expect(system.json["draining"] == .bool(false))
            let store = try #require(system.json["store"]?.objectValue)
            #expect(store["driver"] == .string("sqlite"))
            #expect(store["ok"] == .bool(true))
            #expect(store["schema_version"] == .int(Int64(app.store.supportedSchemaVersion)))

            _ = try await client.send(.get, "/api/session")
            let metrics = try await client.send(.get, "/metrics")
            #expect(metrics.headers[.contentType]?.hasPrefix("text/plain") == true)
            #expect(metrics.text.contains(#"keel_http_requests_total{method="GET",route="/api/session",status="401"} 1"#))
            #expect(metrics.text.contains("keel_http_request_duration_seconds_bucket"))

            app.drain.begin()
            let draining = try await client.send(.get, "/ready")
            #expect(draining.status == .serviceUnavailable)
            #expect(draining.errorCode == "draining")
            #expect(try await client.send(.get, "/health").status == .ok)
        }
    }
}
