import Foundation
import HTTPTypes
import HummingbirdTesting
import KeelCore
import KeelServer
import Testing

@Suite("Session API")
struct SessionAPITests {
    @Test("create answers 201 with a token and a cookie with the right flags")
    func create() async throws {
        try await withTestApp { _, client in
            let response = try await client.send(.post, "/api/session", body: #"{"data":{"theme":"dark"}}"#)
            #expect(response.status == .created)
            let token = try #require(response.json["token"]?.stringValue)
            #expect(response.json["data"] == .object(["theme": .string("dark")]))
            #expect(response.json["id"]?.stringValue == token.split(separator: ".").first.map(String.init))
            let cookie = try #require(response.headers[.setCookie])
            #expect(cookie.hasPrefix("keel_session=\(token);"))
            for attribute in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=86400"] {
                #expect(cookie.contains(attribute), "cookie lacks \(attribute): \(cookie)")
            }
            #expect(!cookie.contains("Secure"))
        }
    }

    @Test("the cookie is Secure behind an HTTPS-terminating proxy, or when configured")
    func secureCookie() async throws {
        try await withTestApp { _, client in
            let proxied = try await client.send(.post, "/api/session", headers: [HTTPField.Name("X-Forwarded-Proto")!: "https"])
            #expect(proxied.headers[.setCookie]?.contains("Secure") == true)
        }
        try await withTestApp(configure: { $0.cookieSecure = .always }) { _, client in
            let direct = try await client.send(.post, "/api/session")
            #expect(direct.headers[.setCookie]?.contains("Secure") == true)
        }
    }

    @Test("the token works as a cookie and as a bearer token")
    func readWithCookieAndBearer() async throws {
        try await withTestApp { _, client in
            let token = try await client.createSession(data: #"{"n":1}"#)
            let viaBearer = try await client.send(.get, "/api/session", token: token)
            #expect(viaBearer.status == .ok)
            #expect(viaBearer.json["data"] == .object(["n": .int(1)]))
            #expect(viaBearer.json["expires_at"] != nil && viaBearer.json["id"] != nil)
            let viaCookie = try await client.send(.get, "/api/session", headers: [.cookie: "other=1; keel_session=\(token)"])
            #expect(viaCookie.status == .ok)
            #expect(viaCookie.json["id"] == viaBearer.json["id"])
        }
    }

    @Test("PATCH applies an RFC 7396 merge patch")
    func mergePatch() async throws {
        try await withTestApp { _, client in
            let token = try await client.createSession(data: #"{"a":{"b":1,"c":2},"keep":true,"drop":1}"#)
            let response = try await client.send(
                .patch, "/api/session", token: token, body: #"{"a":{"b":null,"d":[1]},"drop":null,"new":"x"}"#,
                contentType: "application/merge-patch+json"
            )
            #expect(response.status == .ok)
            #expect(
                response.json["data"]
                    == .object(["a": .object(["c": .int(2), "d": .array([.int(1)])]), "keep": .bool(true), "new": .string("x")])
            )
            #expect(response.json["version"] == .int(2))
            #expect(response.headers[.eTag] == "\"2\"")
        }
    }

    @Test("If-Match with a stale version is refused with 412")
    func ifMatch() async throws {
        try await withTestApp { _, client in
            let token = try await client.createSession()
            let stale = try await client.send(.patch, "/api/session", token: token, headers: [.ifMatch: "\"5\""], body: #"{"x":1}"#)
            #expect(stale.status == .preconditionFailed)
            #expect(stale.errorCode == "version_conflict")
            let fresh = try await client.send(.patch, "/api/session", token: token, headers: [.ifMatch: "\"1\""], body: #"{"x":1}"#)
            #expect(fresh.status == .ok)
        }
    }

    @Test("DELETE ends the session and clears the cookie")
    func end() async throws {
        try await withTestApp { _, client in
            let token = try await client.createSession()
            let response = try await client.send(.delete, "/api/session", token: token)
            #expect(response.status == .noContent)
            #expect(response.headers[.setCookie]?.contains("Max-Age=0") == true)
            let after = try await client.send(.get, "/api/session", token: token)
            #expect(after.status == .unauthorized)
            #expect(after.errorCode == "session_expired")
        }
    }

    @Test("missing, malformed and foreign tokens get 401 with distinct codes")
    func unauthorized() async throws {
        try await withTestApp { _, client in
            let missing = try await client.send(.get, "/api/session")
            #expect(missing.status == .unauthorized)
            #expect(missing.errorCode == "session_required")
            #expect(missing.json["error"]?.objectValue?["hint"]?.stringValue?.isEmpty == false)

            let garbage = try await client.send(.get, "/api/session", token: "not-a-token")
            #expect(garbage.status == .unauthorized)
            #expect(garbage.errorCode == "session_invalid")

            let token = try await client.createSession()
            let id = try #require(token.split(separator: ".").first)
            let forged = "\(id).\(Identifiers.random())"
            let forgedResponse = try await client.send(.get, "/api/session", token: forged)
            #expect(forgedResponse.errorCode == "session_invalid")

            let basic = try await client.send(.get, "/api/session", headers: [.authorization: "Basic Zm9vOmJhcg=="])
            #expect(basic.errorCode == "session_invalid")

            for method in [HTTPRequest.Method.patch, .delete] {
                let response = try await client.send(method, "/api/session", body: method == .patch ? "{}" : nil)
                #expect(response.errorCode == "session_required")
            }
        }
    }

    @Test("an idle session expires, and activity slides its expiry at most once per refresh interval")
    func slidingExpiry() async throws {
        let clock = ManualClock()
        try await withTestApp(clock: clock, configure: { $0.session.idleTimeout = .seconds(600) }) { app, client in
            let token = try await client.createSession()
            let id = String(try #require(token.split(separator: ".").first))
            let created = try #require(try await app.store.sessions.session(id: id))

            clock.advance(by: .seconds(30))
            let early = try await client.send(.get, "/api/session", token: token)
            #expect(early.headers[.setCookie] == nil)
            #expect(try await app.store.sessions.session(id: id)?.expiresAt == created.expiresAt)

            clock.advance(by: .seconds(40))
            let refreshed = try await client.send(.get, "/api/session", token: token)
            #expect(refreshed.headers[.setCookie]?.contains("keel_session=\(token)") == true)
            let stored = try #require(try await app.store.sessions.session(id: id))
            #expect(stored.expiresAt == created.expiresAt.addingTimeInterval(70))
            #expect(stored.version == created.version)

            clock.advance(by: .seconds(601))
            let expired = try await client.send(.get, "/api/session", token: token)
            #expect(expired.status == .unauthorized)
            #expect(expired.errorCode == "session_expired")
        }
    }

    @Test("secrets rotate: the first signs, every configured secret verifies")
    func rotation() async throws {
        let old = String(repeating: "o", count: 40)
        let new = String(repeating: "n", count: 40)
        let fixture = try await StoreFixture.make(.sqlite)
        try await fixture.withStore { store in
            @Sendable func app(_ secrets: [String]) async throws -> KeelApplication {
                var configuration = KeelConfiguration.forTests(store: fixture.location)
                configuration.secrets = secrets
                return try await KeelApplication.build(configuration: configuration, store: store, logger: TestEnvironment.logger)
            }
            let oldToken = try await app([old]).http.test(.router) { try await $0.createSession() }
            let rotated = try await app([new, old])
            try await rotated.http.test(.router) { client in
                let status = try await client.send(.get, "/api/session", token: oldToken).status
                #expect(status == .ok)
                let newToken = try await client.createSession()
                let oldOnly = try await app([old])
                let code = try await oldOnly.http.test(.router) { try await $0.send(.get, "/api/session", token: newToken).errorCode }
                #expect(code == "session_invalid")
            }
        }
    }

    @Test("without KEEL_SECRET every application on one store signs alike")
    func storedSecretIsShared() async throws {
        let fixture = try await StoreFixture.make(.sqlite)
        try await fixture.withStore { store in
            let first = try await KeelApplication.build(configuration: .forTests(store: fixture.location), store: store, logger: TestEnvironment.logger)
            let second = try await KeelApplication.build(configuration: .forTests(store: fixture.location), store: store, logger: TestEnvironment.logger)
            let token = try await first.http.test(.router) { try await $0.createSession() }
            let status = try await second.http.test(.router) { try await $0.send(.get, "/api/session", token: token).status }
            #expect(status == .ok)
        }
    }
}
