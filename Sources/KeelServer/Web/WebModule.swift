import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import KeelCore
import NIOCore

/// The browser client at `/` and the admin dashboard at `/admin`: plain
/// HTML, CSS and JavaScript compiled into the binary (no build step, no
/// CDN: everything the pages load comes from Keel). `/admin` and its script
/// exist only with `--admin-token`; the data behind the dashboard is
/// `GET /api/admin/overview` (``AdminController``).
///
/// The pages run under a strict Content-Security-Policy (scripts, styles
/// and connections to this origin only, no inline code), revalidate with
/// an ETag, and also work served from another origin against a Keel named
/// by `?api=` (with `--cors-origins`).
public struct WebModule: KeelModule {
    public init() {}

    public func register(in app: inout KeelModuleBuilder) {
        let admin = app.configuration.adminToken != nil
        let assets = WebAssets.standard
        app.route("/", .get) { request, _ in try assets.response(for: "index.html", request: request) }
        app.route("/admin", .get) { request, _ in
            guard admin else { throw WebAssets.notFound(request) }
            return try assets.response(for: "admin.html", request: request)
        }
        app.route("/assets/:name", .get) { request, context in
            let name = context.parameters.get("name") ?? ""
            guard admin || !WebAssets.adminOnly.contains(name) else { throw WebAssets.notFound(request) }
            return try assets.response(for: "assets/" + name, request: request)
        }
    }
}

/// The pages' files, with their content types and ETags, made once.
struct WebAssets: Sendable {
    struct Asset: Sendable {
        let bytes: ByteBuffer
        let contentType: String
        let etag: String
    }

    let assets: [String: Asset]

    /// Files only the admin dashboard loads.
    static let adminOnly: Set<String> = ["admin.js"]

    /// Scripts, styles, images and connections from this origin only; no
    /// inline code, no framing.
    static let contentSecurityPolicy =
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        + "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

    static let standard = WebAssets(files: [
        ("index.html", PackageResources.index_html), ("admin.html", PackageResources.admin_html),
        ("assets/app.css", PackageResources.app_css), ("assets/common.js", PackageResources.common_js),
        ("assets/app.js", PackageResources.app_js), ("assets/admin.js", PackageResources.admin_js),
    ])

    init(files: [(String, [UInt8])]) {
        var assets: [String: Asset] = [:]
        for (name, bytes) in files {
            let digest = SHA256.hash(data: bytes).prefix(12).map { String(format: "%02x", $0) }.joined()
            assets[name] = Asset(bytes: ByteBuffer(bytes: bytes), contentType: Self.contentType(name), etag: "\"\(digest)\"")
        }
        self.assets = assets
    }

    static func contentType(_ name: String) -> String {
        if name.hasSuffix(".html") { return "text/html; charset=utf-8" }
        if name.hasSuffix(".js") { return "text/javascript; charset=utf-8" }
        if name.hasSuffix(".css") { return "text/css; charset=utf-8" }
        return "application/octet-stream"
    }

    static func notFound(_ request: Request) -> KeelError {
        KeelError(.notFound, "No route matches \(request.uri.path).")
    }

    /// The file, or 304 when the client's copy is current. `no-cache`: the
    /// browser revalidates every time, so a deploy is seen at once.
    func response(for name: String, request: Request) throws -> Response {
        guard let asset = self.assets[name] else { throw Self.notFound(request) }
        var headers: HTTPFields = [
            .contentType: asset.contentType, .eTag: asset.etag, .cacheControl: "no-cache",
            .init("Referrer-Policy")!: "no-referrer",
        ]
        if name.hasSuffix(".html") { headers[.contentSecurityPolicy] = Self.contentSecurityPolicy }
        if let match = request.headers[.ifNoneMatch], match.split(separator: ",").contains(where: { $0.trimmingCharacters(in: .whitespaces) == asset.etag }) {
            return Response(status: .notModified, headers: headers)
        }
        headers[.contentLength] = String(asset.bytes.readableBytes)
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: asset.bytes))
    }
}
