import KeelCore
import Testing

@testable import KeelServer

@Suite("Multipart form data")
struct MultipartFormDataTests {
    /// `text` as bytes, with `\r\n` written out so line breaks are explicit.
    func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

    /// A well-formed body with the given parts, each `(headers, content)`.
    func body(boundary: String, _ parts: [(headers: [String], content: [UInt8])]) -> [UInt8] {
        var result: [UInt8] = []
        for part in parts {
            result += bytes("--\(boundary)\r\n")
            for header in part.headers { result += bytes(header + "\r\n") }
            result += bytes("\r\n")
            result += part.content
            result += bytes("\r\n")
        }
        result += bytes("--\(boundary)--\r\n")
        return result
    }

    func expectBadRequest(_ body: [UInt8], boundary: String, maxParts: Int = 100, sourceLocation: SourceLocation = #_sourceLocation) {
        let error = #expect(throws: KeelError.self, sourceLocation: sourceLocation) {
            try MultipartFormData.parse(body, boundary: boundary, maxParts: maxParts)
        }
        #expect(error?.code == .badRequest, sourceLocation: sourceLocation)
    }

    @Test("a text field and two binary files round-trip exactly")
    func roundTrip() throws {
        let boundary = "----KeelFormBoundary7MA4YWxkTrZu0gW"
        // Bytes that tempt a sloppy parser: CR, LF, CRLF, partial delimiters,
        // the boundary without its CRLF, and a trailing CRLF of its own.
        var first: [UInt8] = Array(0...255)
        first += bytes("\r\n\r\n--\r\n-\r\n--")
        first += bytes("\r\n--\(boundary.dropLast())")
        first += bytes("\n--\(boundary)\r--\(boundary)")
        first += [0x0D, 0x0D, 0x0A, 0x00, 0x0A]
        first += bytes("\r\n")
        let second: [UInt8] = bytes("\r\n--") + [0xFF, 0xFE, 0x00] + bytes("\r")
        let text = "Hello, wörld\r\nsecond line"

        var input = bytes("This preamble is ignored.\r\n")
        input += body(boundary: boundary, [
            (["Content-Disposition: form-data; name=\"title\""], bytes(text)),
            (["content-disposition: form-data; name=\"file\"; filename=\"a.bin\"", "CONTENT-TYPE: application/octet-stream"], first),
            (["Content-Type: image/png", "Content-Disposition: form-data; name=\"file2\"; filename=\"b.png\""], second),
        ])
        input += bytes("This epilogue is ignored, even --\(boundary)--.\r\n")

        let parts = try MultipartFormData.parse(input, boundary: boundary)
        #expect(parts.count == 3)
        #expect(parts.map(\.name) == ["title", "file", "file2"])
        #expect(parts.map(\.filename) == [nil, "a.bin", "b.png"])
        #expect(parts.map(\.contentType) == [nil, "application/octet-stream", "image/png"])
        #expect(Array(parts[0].body) == bytes(text))
        #expect(Array(parts[1].body) == first)
        #expect(Array(parts[2].body) == second)
    }

    @Test("an empty part body, transport padding and a body that opens with the boundary")
    func paddingAndEmptyBody() throws {
        let input = bytes("--xyz \t\r\nContent-Disposition: form-data; name=\"empty\"; filename=\"\"\r\n\r\n\r\n--xyz\t\r\nContent-Disposition: form-data; name=a\r\n\r\n1\r\n--xyz--")
        let parts = try MultipartFormData.parse(input, boundary: "xyz")
        #expect(parts.count == 2)
        #expect(parts.first?.filename == "")
        #expect(parts.first?.body.isEmpty == true)
        #expect(parts.last?.name == "a")
        #expect(parts.last.map { Array($0.body) } == bytes("1"))
    }

    @Test("a boundary in a part without a preceding CRLF does not split it")
    func boundaryWithoutLineBreak() throws {
        let content = bytes("abc--b0undary--def\n--b0undary\r\n\r--b0undary--\r\n-- b0undary")
        let input = body(boundary: "b0undary", [(["Content-Disposition: form-data; name=\"f\"; filename=\"f.txt\""], content)])
        let parts = try MultipartFormData.parse(input, boundary: "b0undary")
        #expect(parts.count == 1)
        #expect(parts.first.map { Array($0.body) } == content)
    }

    @Test("the boundary is read from a quoted or unquoted Content-Type parameter")
    func boundaryFromContentType() throws {
        let plain = try MultipartFormData.boundary(fromContentType: "multipart/form-data; boundary=----WebKitFormBoundaryabc123")
        #expect(plain == "----WebKitFormBoundaryabc123")
        let quoted = try MultipartFormData.boundary(fromContentType: #"Multipart/Form-Data;charset=utf-8; BOUNDARY="a b:c?=(1),+_./""#)
        #expect(quoted == "a b:c?=(1),+_./")
        let semicolonInOtherParameter = try MultipartFormData.boundary(fromContentType: #"multipart/form-data; x="a;b"; boundary=z"#)
        #expect(semicolonInOtherParameter == "z")
        let longest = String(repeating: "x", count: 70)
        let seventy = try MultipartFormData.boundary(fromContentType: "multipart/form-data; boundary=\(longest)")
        #expect(seventy == longest)

        let invalid = [
            "multipart/form-data",
            "multipart/form-data; charset=utf-8",
            "multipart/form-data; boundary=",
            #"multipart/form-data; boundary="""#,
            #"multipart/form-data; boundary="abc"#,
            #"multipart/form-data; boundary="ends with space ""#,
            "multipart/form-data; boundary=\(longest)x",
            "multipart/form-data; boundary=a; boundary=b",
            "multipart/form-data; boundary=<>",
        ]
        for contentType in invalid {
            let error = #expect(throws: KeelError.self, "\(contentType)") {
                try MultipartFormData.boundary(fromContentType: contentType)
            }
            #expect(error?.code == .badRequest, "\(contentType)")
        }
    }

    @Test("a Content-Type other than multipart/form-data is unsupportedMediaType")
    func wrongMediaType() {
        for contentType in ["application/json", "multipart/mixed; boundary=abc", "text/plain", "", "multipart/form-data-x; boundary=abc"] {
            let error = #expect(throws: KeelError.self, "\(contentType)") {
                try MultipartFormData.boundary(fromContentType: contentType)
            }
            #expect(error?.code == .unsupportedMediaType, "\(contentType)")
        }
    }

    @Test("filename* (RFC 5987) is decoded and wins over filename")
    func extendedFilename() throws {
        let input = body(boundary: "b", [
            (["Content-Disposition: form-data; name=\"f\"; filename=\"rates.txt\"; filename*=UTF-8''%E2%82%AC%20rates.txt"], bytes("x")),
            (["Content-Disposition: form-data; name=\"g\"; filename*=iso-8859-1'en'%A3%20rates.txt"], bytes("y")),
            (["Content-Disposition: form-data; name=\"h\"; filename=\"C:\\dir\\say \\\"hi\\\".txt\""], bytes("z")),
        ])
        let parts = try MultipartFormData.parse(input, boundary: "b")
        #expect(parts.map(\.filename) == ["€ rates.txt", "£ rates.txt", #"C:\dir\say "hi".txt"#])

        for filename in ["UTF-8''%E2%82", "UTF-8''%zz", "no-quotes", "UTF-16''abc", "UTF-8''a b"] {
            expectBadRequest(body(boundary: "b", [(["Content-Disposition: form-data; name=f; filename*=\(filename)"], [])]), boundary: "b")
        }
    }

    @Test("a body without its closing delimiter is refused")
    func missingClosingDelimiter() {
        let part = bytes("--b\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\ncontent")
        for input in [part, part + bytes("\r\n"), part + bytes("\r\n--b"), part + bytes("\r\n--b\r\n"), part + bytes("\r\n--b-")] {
            expectBadRequest(input, boundary: "b")
        }
    }

    @Test("a body without the first delimiter is refused")
    func missingFirstDelimiter() {
        expectBadRequest([], boundary: "b")
        expectBadRequest(bytes("Content-Disposition: form-data; name=\"f\"\r\n\r\nx\r\n--c--\r\n"), boundary: "b")
        // A boundary line must start the body or follow a CRLF.
        expectBadRequest(bytes("x--b\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\nx"), boundary: "b")
    }

    @Test("a part without form-data Content-Disposition or without a name is refused")
    func missingName() {
        let cases: [[String]] = [
            ["Content-Disposition: form-data"],
            ["Content-Disposition: form-data; filename=\"a.txt\""],
            ["Content-Disposition: attachment; name=\"f\""],
            ["Content-Type: text/plain"],
            [],
        ]
        for headers in cases {
            expectBadRequest(body(boundary: "b", [(headers, bytes("x"))]), boundary: "b")
        }
    }

    @Test("malformed part headers are refused")
    func malformedHeaders() {
        let disposition = "Content-Disposition: form-data; name=\"f\""
        let cases: [[String]] = [
            [disposition, "no colon here"],
            [disposition, "Bad Name: x"],
            [disposition, " folded: line"],
            [disposition, ": empty name"],
            ["Content-Disposition: form-data; name=\"unterminated"],
            ["Content-Disposition: form-data; name=\"f\"; name=\"g\""],
            ["Content-Disposition: form-data; name"],
            [disposition, disposition],
            [disposition, "Content-Transfer-Encoding: base64"],
            [disposition, "X-Long: " + String(repeating: "x", count: MultipartFormData.maxHeaderBytes)],
        ]
        for headers in cases {
            expectBadRequest(body(boundary: "b", [(headers, bytes("x"))]), boundary: "b")
        }
        // Headers never ended by an empty line.
        expectBadRequest(bytes("--b\r\n\(disposition)\r\n--b--\r\n"), boundary: "b")
        // A control character in a header value.
        expectBadRequest(bytes("--b\r\n\(disposition)\r\nX-A: a\rb\r\n\r\nx\r\n--b--\r\n"), boundary: "b")
        // Invalid UTF-8 in a header value.
        expectBadRequest(bytes("--b\r\nContent-Disposition: form-data; name=\"") + [0xFF] + bytes("\"\r\n\r\nx\r\n--b--\r\n"), boundary: "b")
        // Garbage after a delimiter.
        expectBadRequest(bytes("--b\r\n\(disposition)\r\n\r\nx\r\n--bc\r\n\r\n--b--\r\n"), boundary: "b")
    }

    @Test("a header section of up to 8 KiB is accepted")
    func headerLimit() throws {
        let disposition = "Content-Disposition: form-data; name=\"f\""
        let filler = String(repeating: "x", count: MultipartFormData.maxHeaderBytes - disposition.utf8.count - "\r\nX-A: ".utf8.count)
        let input = body(boundary: "b", [([disposition, "X-A: " + filler], bytes("x"))])
        let parts = try MultipartFormData.parse(input, boundary: "b")
        #expect(parts.count == 1)
        let tooLong = body(boundary: "b", [([disposition, "X-A: " + filler + "y"], bytes("x"))])
        expectBadRequest(tooLong, boundary: "b")
    }

    @Test("more than maxParts parts are refused")
    func tooManyParts() throws {
        let part = (headers: ["Content-Disposition: form-data; name=\"f\""], content: bytes("x"))
        let three = body(boundary: "b", [part, part, part])
        let parts = try MultipartFormData.parse(three, boundary: "b", maxParts: 3)
        #expect(parts.count == 3)
        expectBadRequest(three, boundary: "b", maxParts: 2)
    }

    @Test("a form with no parts is empty")
    func noParts() throws {
        let parts = try MultipartFormData.parse(bytes("--b--\r\n"), boundary: "b")
        #expect(parts.isEmpty)
    }
}
