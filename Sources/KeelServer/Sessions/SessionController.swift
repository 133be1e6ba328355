import Foundation
import Hummingbird
import KeelCore
import Metrics

/// `/api/session`: create, read, merge-patch and end the caller's session.
struct SessionController: Sendable {
    let store: any SessionStore
    let authenticator: SessionAuthenticator
    let policy: SessionPolicy
    let clock: any KeelClock
    let cookieSecure: CookieSecureMode
    let maxBodyBytes: Int
    let createdCounter: Metrics.Counter
    let createLimit: SessionCreateLimit

    func register(on routes: inout RouteTable) {
        routes.add("/api/session", .post, self.create)
        routes.add("/api/session", .get, self.read)
        routes.add("/api/session", .patch, self.patch)
        routes.add("/api/session", .delete, self.end)
    }

    @Sendable func create(_ request: Request, context: KeelRequestContext) async throws -> Response {
        var request = request
        try await self.createLimit.check(request, context: context)
        var data = JSONValue.object([:])
        if let body = try await request.jsonBody(limit: self.maxBodyBytes) {
            guard case .object(let members) = body, members.keys.allSatisfy({ $0 == "data" }) else {
                throw KeelError(.invalidInput, #"The body must be a JSON object, optionally {"data": {...}}."#)
            }
            if let initial = members["data"] {
                guard case .object = initial else {
                    throw KeelError(.invalidInput, "Session data must be a JSON object, not \(initial.kindName).")
                }
                data = initial
            }
        }
        let dataJSON = data.serialized()
        try self.policy.checkSize(of: dataJSON)
        let now = self.clock.now()
        let session = Session(
            id: Identifiers.random(byteCount: 32),
            dataJSON: dataJSON,
            version: 1,
            createdAt: now,
            lastSeenAt: now,
            expiresAt: self.policy.expiry(from: now)
        )
        try await self.store.createSession(session)
        self.createdCounter.increment()
        let token = self.authenticator.signer.token(for: session.id)
        var response = Self.sessionResponse(session, token: token, status: .created)
        response.headers[.location] = "/api/session"
        response.setCookie(self.cookie(token: token, request: request))
        return response
    }

    @Sendable func read(_ request: Request, context: KeelRequestContext) async throws -> Response {
        let authenticated = try await self.authenticator.authenticate(request)
        var response = Self.sessionResponse(authenticated.session)
        if authenticated.refreshed { response.setCookie(self.cookie(token: authenticated.token, request: request)) }
        return response
    }

    @Sendable func patch(_ request: Request, context: KeelRequestContext) async throws -> Response {
        var request = request
        let authenticated = try await self.authenticator.authenticate(request)
        let expectedVersion = try Self.expectedVersion(request)
        guard let patch = try await request.jsonBody(limit: self.maxBodyBytes, acceptedTypes: ["application/merge-patch+json", "application/json"]) else {
            throw KeelError(.invalidInput, "PATCH needs a JSON merge patch (RFC 7396) in the body.", hint: #"For example {"theme": "dark", "draft": null}."#)
        }
        guard case .object = patch else {
            throw KeelError(.invalidInput, "The merge patch must be a JSON object (session data is an object), not \(patch.kindName).")
        }
        let now = self.clock.now()
        let policy = self.policy
        let updated = try await self.store.updateSession(id: authenticated.session.id, expectedVersion: expectedVersion) { current in
            let data = try JSONValue.parse(Array(current.dataJSON.utf8)).applyingMergePatch(patch)
            let dataJSON = data.serialized()
            try policy.checkSize(of: dataJSON)
            var next = current
            next.dataJSON = dataJSON
            next.lastSeenAt = now
            next.expiresAt = max(current.expiresAt, policy.expiry(from: now))
            return next
        }
        guard let updated else {
            throw KeelError(.sessionExpired, "This session has ended or expired.", hint: "Create a new session with POST /api/session.")
        }
        var response = Self.sessionResponse(updated)
        if authenticated.refreshed { response.setCookie(self.cookie(token: authenticated.token, request: request)) }
        return response
    }

    @Sendable func end(_ request: Request, context: KeelRequestContext) async throws -> Response {
        let authenticated = try await self.authenticator.authenticate(request)
        try await self.store.deleteSession(id: authenticated.session.id)
        var response = Response(status: .noContent)
        response.setCookie(self.cookie(token: "", request: request, maxAge: 0))
        return response
    }

    // MARK: Helpers

    func cookie(token: String, request: Request, maxAge: Int? = nil) -> Cookie {
        SessionCookies(policy: self.policy, secure: self.cookieSecure).cookie(token: token, request: request, maxAge: maxAge)
    }

    static func sessionResponse(_ session: Session, token: String? = nil, status: HTTPResponse.Status = .ok) -> Response {
        var headers = HTTPFields()
        headers[.eTag] = "\"\(session.version)\""
        headers[.cacheControl] = "no-store"
        return .json(status: status, headers: headers) { json in
            json.field("id", session.id)
            if let token { json.field("token", token) }
            json.field("data", rawJSON: session.dataJSON)
            json.field("version", session.version)
            json.field("created_at", session.createdAt)
            json.field("expires_at", session.expiresAt)
        }
    }

    /// The version in an `If-Match: "N"` header, if any.
    static func expectedVersion(_ request: Request) throws -> Int64? {
        guard var value = request.headers[.ifMatch]?.trimmingCharacters(in: .whitespaces) else { return nil }
        if value.hasPrefix("W/") { value.removeFirst(2) }
        guard value.count >= 3, value.first == "\"", value.last == "\"", let version = Int64(value.dropFirst().dropLast()) else {
            throw KeelError(.badRequest, "If-Match must be an ETag from GET /api/session, such as \"3\".")
        }
        return version
    }
}

/// `--session-create-rate`: sessions one client address may create per
/// minute, counted in the store so the limit holds across every instance.
struct SessionCreateLimit: Sendable {
    let perMinute: Int
    let windows: any RateWindowStore
    let clients: ClientAddressResolver
    let clock: any KeelClock
    let refused: Metrics.Counter

    func check(_ request: Request, context: KeelRequestContext) async throws {
        guard self.perMinute > 0, let client = self.clients.clientAddress(request, context: context) else { return }
        let now = self.clock.now()
        let window = try await self.windows.hit(key: "session-create:\(client)", window: .seconds(60), now: now)
        guard window.count > self.perMinute else { return }
        self.refused.increment()
        throw KeelError(
            .rateLimited,
            "This address created \(self.perMinute) sessions in the last minute, the most allowed.",
            hint: "Reuse the session you have (its cookie or token); the limit is --session-create-rate.",
            retryAfterSeconds: Int(window.windowEnds.timeIntervalSince(now).rounded(.up))
        )
    }
}
