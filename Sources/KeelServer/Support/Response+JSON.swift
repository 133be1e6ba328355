import Hummingbird
import KeelCore
import NIOCore

extension Response {
    /// A response whose body is the given JSON text.
    static func json(_ text: String, status: HTTPResponse.Status = .ok, headers: HTTPFields = [:]) -> Response {
        var fields = headers
        fields[.contentType] = "application/json; charset=utf-8"
        return Response(status: status, headers: fields, body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    static func json(status: HTTPResponse.Status = .ok, headers: HTTPFields = [:], _ build: (inout JSONWriter) -> Void) -> Response {
        var writer = JSONWriter()
        writer.object(build)
        return .json(writer.text, status: status, headers: headers)
    }
}
