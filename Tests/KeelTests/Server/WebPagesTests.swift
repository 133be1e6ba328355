import Foundation
import HTTPTypes
import HummingbirdTesting
import KeelCore
import KeelServer
import NIOCore
import Testing

/// The pages' files as Keel serves them, in process (the browser tests
/// drive them in Chromium: BrowserPageTests).
@Suite("Web pages")
struct WebPagesTests {
    @Test("/ and its assets: the right types, a strict CSP on pages, ETag revalidation; the admin page and script only with --admin-token")
    func served() async throws {
        try await withTestApp { _, client in
            let page = try await client.send(.get, "/")
            #expect(page.status == .ok && page.headers[.contentType] == "text/html; charset=utf-8")
            let csp = try #require(page.headers[.contentSecurityPolicy])
            #expect(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'") && !csp.contains("unsafe"))
            #expect(page.headers[.cacheControl] == "no-cache" && page.headers[.xContentTypeOptions] == "nosniff")
            // Everything the page loads comes from Keel.
            #expect(!page.text.contains("http://") && !page.text.contains("https://") && !page.text.contains("<script>"))
            for asset in ["/assets/app.js", "/assets/common.js", "/assets/app.css"] {
                let response = try await client.send(.get, asset)
                #expect(response.status == .ok, "\(asset)")
                #expect(response.headers[.contentType]?.hasPrefix(asset.hasSuffix(".css") ? "text/css" : "text/javascript") == true)
                let etag = try #require(response.headers[.eTag])
                let again = try await client.send(.get, asset, headers: [.ifNoneMatch: etag])
                #expect(again.status == .notModified && again.text.isEmpty)
                let stale = try await client.send(.get, asset, headers: [.ifNoneMatch: "\"other\""])
                #expect(stale.status == .ok)
            }
            for missing in ["/assets/admin.js", "/assets/nope.js", "/assets/..%2FWebModule.swift", "/admin"] {
                #expect(try await client.send(.get, missing).status == .notFound, "\(missing)")
            }
        }
        try await withTestApp(configure: { $0.adminToken = AdminAPITests.token }) { _, client in
            let admin = try await client.send(.get, "/admin")
            #expect(admin.status == .ok && admin.headers[.contentSecurityPolicy] != nil)
            #expect(try await client.send(.get, "/assets/admin.js").status == .ok)
        }
    }
}
