import Foundation
import KeelCore
import KeelServer
import Testing

/// The OpenAPI document is the API's contract: it describes every route the
/// server registers and nothing it does not, and the server serves it.
@Suite("OpenAPI contract")
struct OpenAPIContractTests {
    static var documentURL: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Sources/KeelServer/OpenAPI/openapi.json")
    }

    static let methods = ["get", "put", "post", "delete", "options", "head", "patch", "trace"]

    /// `(METHOD, /path/{name})` of every operation in `document`.
    static func operations(_ document: JSONValue) throws -> Set<String> {
        let paths = try #require(document.objectValue?["paths"]?.objectValue)
        var operations = Set<String>()
        for (path, item) in paths {
            for method in Self.methods where item.objectValue?[method] != nil {
                operations.insert("\(method.uppercased()) \(path)")
            }
        }
        return operations
    }

    @Test("every registered route is documented, every documented route is registered, and /openapi.json serves the document")
    func routesMatch() async throws {
        let file = try Data(contentsOf: Self.documentURL)
        let document = try JSONValue.parse(Array(file))
        #expect(document.objectValue?["openapi"]?.stringValue?.hasPrefix("3.1") == true)
        let documented = try Self.operations(document)
        try await withTestApp { app, client in
            let registered = Set(app.routes.map { route -> String in
                let path = route.path.split(separator: "/", omittingEmptySubsequences: false)
                    .map { $0.hasPrefix(":") ? "{\($0.dropFirst())}" : String($0) }.joined(separator: "/")
                return "\(route.method) \(path)"
            })
            #expect(registered.subtracting(documented).sorted() == [], "registered but not documented")
            #expect(documented.subtracting(registered).sorted() == [], "documented but not registered")
            #expect(registered.count >= 23)

            let served = try await client.send(.get, "/openapi.json")
            #expect(served.status == .ok)
            #expect(served.headers[.contentType]?.hasPrefix("application/json") == true)
            #expect(Array(served.body.readableBytesView) == Array(file), "the served document is the repository's")
        }
    }

    @Test("every operation has a unique operationId and documents its answers")
    func operationsAreComplete() throws {
        let document = try JSONValue.parse(Array(try Data(contentsOf: Self.documentURL)))
        let paths = try #require(document.objectValue?["paths"]?.objectValue)
        var ids = Set<String>()
        for (path, item) in paths {
            for method in Self.methods {
                guard let operation = item.objectValue?[method]?.objectValue else { continue }
                let id = try #require(operation["operationId"]?.stringValue, "\(method) \(path) has no operationId")
                #expect(ids.insert(id).inserted, "operationId \(id) is used twice")
                #expect(operation["responses"]?.objectValue?.isEmpty == false, "\(id) documents no response")
            }
        }
    }
}
