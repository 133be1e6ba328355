import Hummingbird
import NIOCore

/// `GET /openapi.json`: the HTTP API as an OpenAPI 3.1 document, the
/// contract that `Sources/KeelServer/OpenAPI/openapi.json` keeps in the
/// repository (compiled in) and that CI fuzzes the live server against.
struct OpenAPIController: Sendable {
    static let document = ByteBuffer(bytes: PackageResources.openapi_json)

    func register(on routes: inout RouteTable) {
        routes.add("/openapi.json", .get, self.document)
    }

    @Sendable func document(_ request: Request, context: KeelRequestContext) async throws -> Response {
        Response(
            status: .ok,
            headers: [.contentType: "application/json; charset=utf-8", .cacheControl: "public, max-age=300"],
            body: .init(byteBuffer: Self.document)
        )
    }
}
