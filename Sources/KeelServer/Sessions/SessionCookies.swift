import Hummingbird
import KeelCore
import Synchronization

/// The `keel_session` cookie as this deployment sets it.
struct SessionCookies: Sendable {
    let policy: SessionPolicy
    let secure: CookieSecureMode

    func cookie(token: String, request: Request, maxAge: Int? = nil) -> Cookie {
        let secure: Bool =
            switch self.secure {
            case .always: true
            case .never: false
            case .auto: request.isSecure
            }
        return Cookie(
            name: SessionAuthenticator.cookieName,
            value: token,
            maxAge: maxAge ?? Int(self.policy.idleTimeout.timeInterval),
            path: "/",
            secure: secure,
            httpOnly: true,
            sameSite: .lax
        )
    }
}

/// For one request: the token of a cookie session that the request
/// extended, so that whichever route answered, the response resends the
/// cookie with a fresh Max-Age (a browser would otherwise drop it at its old
/// one while the session lives on in the store).
final class SessionRefreshNote: Sendable {
    let token = Mutex<String?>(nil)

    @TaskLocal static var current: SessionRefreshNote?
}

/// Resends the session cookie on any response to a request that extended
/// its cookie session (`/api/session` sets it itself).
struct SessionCookieMiddleware<Context: RequestContext>: RouterMiddleware {
    let cookies: SessionCookies

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let note = SessionRefreshNote()
        var response = try await SessionRefreshNote.$current.withValue(note) { try await next(request, context) }
        if let token = note.token.withLock({ $0 }), response.headers[.setCookie] == nil {
            response.setCookie(self.cookies.cookie(token: token, request: request))
        }
        return response
    }
}
