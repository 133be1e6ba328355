import Hummingbird

/// Collects the API's routes, then installs them so that a known path asked
/// with a method it does not support answers 405 with `Allow`, and plain
/// `OPTIONS` answers 204 with `Allow` (Hummingbird alone answers 404).
/// Every GET route also answers HEAD, which `Allow` lists.
struct RouteTable: Sendable {
    typealias Handler = @Sendable (Request, KeelRequestContext) async throws -> Response

    private var entries: [(path: String, method: HTTPRequest.Method, handler: Handler)] = []

    mutating func add(_ path: String, _ method: HTTPRequest.Method, _ handler: @escaping Handler) {
        self.entries.append((path, method, handler))
    }

    /// Adds another table's routes (a module's) after these.
    mutating func append(_ other: RouteTable) {
        self.entries.append(contentsOf: other.entries)
    }

    /// Every route registered, as `(method, path)` with `:name` parameters:
    /// what the OpenAPI document must describe.
    var registered: [(method: String, path: String)] {
        self.entries.map { ($0.method.rawValue, $0.path) }
    }

    func install(on router: Router<KeelRequestContext>) {
        var methodsByPath: [String: [HTTPRequest.Method]] = [:]
        var order: [String] = []
        for entry in self.entries {
            router.on(RouterPath(entry.path), method: entry.method, use: entry.handler)
            if methodsByPath[entry.path] == nil { order.append(entry.path) }
            methodsByPath[entry.path, default: []].append(entry.method)
        }
        // TRACE is refused on every known path (405), never echoed.
        let standard: [HTTPRequest.Method] = [.get, .head, .post, .put, .patch, .delete, .options, .trace]
        for path in order {
            var methods = methodsByPath[path] ?? []
            // The router answers HEAD for every GET route (autoGenerateHeadEndpoints).
            if methods.contains(.get), !methods.contains(.head) { methods.append(.head) }
            let allow = (methods + (methods.contains(.options) ? [] : [.options])).map(\.rawValue).joined(separator: ", ")
            for method in standard where !methods.contains(method) {
                if method == .options {
                    router.on(RouterPath(path), method: .options) { _, _ in
                        Response(status: .noContent, headers: [.allow: allow])
                    }
                } else {
                    router.on(RouterPath(path), method: method) { request, _ -> Response in
                        throw HTTPError(.methodNotAllowed, headers: [.allow: allow], message: "\(request.method) is not allowed on \(path); allowed: \(allow).")
                    }
                }
            }
        }
    }
}
