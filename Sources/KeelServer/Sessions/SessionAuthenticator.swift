import Foundation
import Hummingbird
import KeelCore

/// Finds the session a request belongs to, or says precisely why it has none.
///
/// Never hands out a silently fresh session: a missing, forged or expired
/// token is a 401 with its own code, and a store failure is a 503.
public struct SessionAuthenticator: Sendable {
    public static let cookieName = "keel_session"

    let store: any SessionStore
    let signer: SessionSigner
    let policy: SessionPolicy
    let clock: any KeelClock

    /// A session found for a request.
    struct Authenticated {
        var session: Session
        var token: String
        /// Whether this request extended the session's expiry (resend the cookie).
        var refreshed: Bool
    }

    func token(in request: Request) -> String? {
        if let authorization = request.headers[.authorization] {
            // "Bearer <token>", the scheme case-insensitive (RFC 9110 §11.1).
            // Another scheme (a proxy's Basic credentials, say) is not ours: the cookie decides.
            let scheme = authorization.utf8.prefix(7)
            if scheme.count == 7, scheme.elementsEqual("bearer ".utf8, by: { $0 | 0x20 == $1 }) {
                let token = authorization.utf8.dropFirst(7).drop(while: { $0 == 0x20 })
                return String(Substring(token.prefix(while: { $0 != 0x20 })))
            }
            return request.cookies[Self.cookieName]?.value ?? ""
        }
        return request.cookies[Self.cookieName]?.value
    }

    func authenticate(_ request: Request) async throws -> Authenticated {
        guard let token = self.token(in: request) else {
            throw KeelError(
                .sessionRequired,
                "This endpoint needs a session.",
                hint: "Create one with POST /api/session, then send its token as the keel_session cookie or as Authorization: Bearer <token>."
            )
        }
        guard let id = self.signer.verify(token) else {
            throw KeelError(
                .sessionInvalid,
                "The session token is malformed or was not signed by this deployment.",
                hint: "Create a new session with POST /api/session. If every instance rejects tokens another issued, give them the same KEEL_SECRET."
            )
        }
        let now = self.clock.now()
        guard var session = try await self.store.session(id: id), !session.isExpired(at: now) else {
            throw KeelError(.sessionExpired, "This session has ended or expired.", hint: "Create a new session with POST /api/session.")
        }
        var refreshed = false
        if self.policy.needsRefresh(session, at: now) {
            let expiresAt = self.policy.expiry(from: now)
            try await self.store.touchSession(id: id, lastSeenAt: now, expiresAt: expiresAt)
            session.lastSeenAt = now
            session.expiresAt = max(session.expiresAt, expiresAt)
            refreshed = true
            // A browser's cookie gets a fresh Max-Age with the response (SessionCookieMiddleware).
            if request.headers[.authorization] == nil || request.cookies[Self.cookieName]?.value == token {
                SessionRefreshNote.current?.token.withLock { $0 = token }
            }
        }
        return Authenticated(session: session, token: token, refreshed: refreshed)
    }
}
