import Foundation
import KeelCore

/// One part of a `multipart/form-data` body (RFC 7578).
struct MultipartPart: Sendable, Equatable {
    /// The `name` parameter of the part's `Content-Disposition: form-data`.
    var name: String
    /// The `filename` parameter, or the decoded RFC 5987 `filename*` one,
    /// which wins when both are sent. Taken as sent: it may hold a path,
    /// which callers must not trust (RFC 7578 §4.2).
    var filename: String?
    /// The part's `Content-Type` header as sent, if any.
    var contentType: String?
    /// The part's bytes, exactly: the CRLF before the next delimiter belongs
    /// to the delimiter, not to the body. A slice of the parsed body.
    var body: ArraySlice<UInt8>
}

/// A small, strict parser for a `multipart/form-data` body (RFC 7578, with
/// the framing of RFC 2046 §5.1.1) that is already in memory.
enum MultipartFormData {
    /// The longest header section a part may have, not counting the empty
    /// line that ends it.
    static let maxHeaderBytes = 8 * 1024

    // MARK: Content-Type

    /// The boundary parameter of a `multipart/form-data; boundary=...`
    /// Content-Type, quoted or not.
    ///
    /// Throws `unsupportedMediaType` when the media type is not
    /// `multipart/form-data`, and `badRequest` when the parameters are
    /// malformed or the boundary is missing, repeated or invalid (RFC 2046:
    /// 1–70 of its characters, not ending with a space).
    static func boundary(fromContentType contentType: String) throws -> String {
        let bytes = Array(contentType.utf8)
        let semicolon = bytes.firstIndex(of: Byte.semicolon) ?? bytes.endIndex
        let mediaType = String(decoding: trimmed(bytes[..<semicolon]), as: UTF8.self).lowercased()
        guard mediaType == "multipart/form-data" else {
            throw KeelError(
                .unsupportedMediaType,
                "Content-Type '\(contentType)' is not accepted here.",
                hint: "Send multipart/form-data."
            )
        }
        let parameters = try self.parameters(bytes[semicolon...], of: "The Content-Type")
        let boundaries = parameters.filter { $0.name == "boundary" }
        guard let boundary = boundaries.first?.value else {
            throw KeelError(
                .badRequest,
                "The multipart/form-data Content-Type has no boundary parameter.",
                hint: "Send Content-Type: multipart/form-data; boundary=..., as HTTP clients do for forms."
            )
        }
        guard boundaries.count == 1 else {
            throw KeelError(.badRequest, "The Content-Type has more than one boundary parameter.")
        }
        try self.validate(boundary: boundary)
        return boundary
    }

    /// Whether `boundary` is 1–70 characters of RFC 2046's `bchars`, not
    /// ending with a space.
    private static func validate(boundary: String) throws {
        let bytes = Array(boundary.utf8)
        guard (1...70).contains(bytes.count), bytes.last != Byte.space, bytes.allSatisfy(isBoundaryCharacter) else {
            throw KeelError(
                .badRequest,
                "The multipart boundary is invalid.",
                hint: "A boundary is 1 to 70 letters, digits or '()+_,-./:=? characters, and does not end with a space."
            )
        }
    }

    private static func isBoundaryCharacter(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"):
            true
        default:
            "'()+_,-./:=? ".utf8.contains(byte)
        }
    }

    // MARK: Body

    /// Parses a whole `multipart/form-data` body into its parts, in order.
    ///
    /// The preamble before the first delimiter and the epilogue after the
    /// closing one are ignored; a form with no parts (only the closing
    /// delimiter) gives an empty array. Throws `badRequest` for a missing
    /// first or closing delimiter, a malformed delimiter line, malformed or
    /// oversized part headers, a part that is not `form-data` or has no
    /// name, and more than `maxParts` parts.
    static func parse(_ body: [UInt8], boundary: String, maxParts: Int = 100) throws -> [MultipartPart] {
        let boundaryBytes = Array(boundary.utf8)
        guard (1...70).contains(boundaryBytes.count) else {
            throw KeelError(.badRequest, "The multipart boundary must be 1 to 70 characters long.")
        }
        // CRLF "--" boundary; the first delimiter may lack the CRLF when it
        // opens the body.
        let delimiter = [Byte.cr, Byte.lf, Byte.dash, Byte.dash] + boundaryBytes
        let finder = DelimiterFinder(delimiter)

        return try body.withUnsafeBufferPointer { buffer in
            let count = buffer.count
            // `cursor` is always just past a delimiter.
            var cursor: Int
            if buffer.starts(with: delimiter.dropFirst(2)) {
                cursor = delimiter.count - 2
            } else if let found = finder.firstIndex(in: buffer, from: 0) {
                cursor = found + delimiter.count
            } else {
                throw KeelError(
                    .badRequest,
                    "The multipart body has no boundary delimiter.",
                    hint: "Check that the body uses the boundary named in Content-Type, as --boundary lines."
                )
            }

            var parts: [MultipartPart] = []
            while true {
                // The closing delimiter ends the body; what follows is epilogue.
                if cursor + 1 < count, buffer[cursor] == Byte.dash, buffer[cursor + 1] == Byte.dash {
                    return parts
                }
                // Transport padding, then CRLF.
                while cursor < count, buffer[cursor] == Byte.space || buffer[cursor] == Byte.tab {
                    cursor += 1
                }
                guard cursor + 1 < count else { throw missingClosingDelimiter(boundary) }
                guard buffer[cursor] == Byte.cr, buffer[cursor + 1] == Byte.lf else {
                    throw KeelError(
                        .badRequest,
                        "A multipart boundary delimiter is not followed by a line break.",
                        hint: "Each --\(boundary) line ends with CRLF, and the boundary must not occur inside a part."
                    )
                }
                cursor += 2
                guard cursor < count else { throw missingClosingDelimiter(boundary) }
                guard parts.count < maxParts else {
                    throw KeelError(
                        .badRequest,
                        "The multipart body has more than \(maxParts) parts.",
                        hint: "Send at most \(maxParts) fields and files per request."
                    )
                }

                // The header section, up to the empty line.
                let headerEnd: Int
                let bodyStart: Int
                if cursor + 1 < count, buffer[cursor] == Byte.cr, buffer[cursor + 1] == Byte.lf {
                    headerEnd = cursor
                    bodyStart = cursor + 2
                } else {
                    let window = min(count, cursor + maxHeaderBytes + 4)
                    guard let end = firstBlankLine(in: buffer, from: cursor, to: window) else {
                        if window < count {
                            throw KeelError(
                                .badRequest,
                                "A multipart part's headers exceed \(maxHeaderBytes) bytes.",
                                hint: "Part headers are Content-Disposition and Content-Type; keep names and filenames short."
                            )
                        }
                        throw KeelError(
                            .badRequest,
                            "A multipart part's headers are not ended by an empty line.",
                            hint: "Separate each part's headers from its content with CRLF CRLF."
                        )
                    }
                    headerEnd = end
                    bodyStart = end + 4
                }
                let headers = try self.headers(Array(buffer[cursor..<headerEnd]))
                var part = try self.part(from: headers)

                // The content, up to the next delimiter.
                guard let next = finder.firstIndex(in: buffer, from: bodyStart) else {
                    throw missingClosingDelimiter(boundary)
                }
                part.body = body[bodyStart..<next]
                parts.append(part)
                cursor = next + delimiter.count
            }
        }
    }

    private static func missingClosingDelimiter(_ boundary: String) -> KeelError {
        KeelError(
            .badRequest,
            "The multipart body ends without its closing delimiter.",
            hint: "End the body with --\(boundary)--; a truncated upload looks like this."
        )
    }

    /// The index of the first CRLF CRLF starting in `start..<end` and ending
    /// by `end`.
    private static func firstBlankLine(in buffer: UnsafeBufferPointer<UInt8>, from start: Int, to end: Int) -> Int? {
        var index = start
        while index + 3 < end {
            if buffer[index] == Byte.cr, buffer[index + 1] == Byte.lf, buffer[index + 2] == Byte.cr, buffer[index + 3] == Byte.lf {
                return index
            }
            index += 1
        }
        return nil
    }

    // MARK: Part headers

    private struct Header {
        var name: String  // lowercased
        var value: String
    }

    /// The header lines of a part's header section (without its final empty
    /// line). Names are tokens, values are UTF-8 without control characters;
    /// obsolete line folding is refused.
    private static func headers(_ section: [UInt8]) throws -> [Header] {
        guard !section.isEmpty else { return [] }
        var headers: [Header] = []
        var lineStart = 0
        while lineStart <= section.count {
            var lineEnd = lineStart
            while lineEnd + 1 < section.count, !(section[lineEnd] == Byte.cr && section[lineEnd + 1] == Byte.lf) {
                lineEnd += 1
            }
            if lineEnd + 1 >= section.count { lineEnd = section.count }
            headers.append(try self.header(section[lineStart..<lineEnd]))
            lineStart = lineEnd + 2
        }
        return headers
    }

    private static func header(_ line: ArraySlice<UInt8>) throws -> Header {
        func malformed(_ reason: String) -> KeelError {
            KeelError(
                .badRequest,
                "A multipart part has a malformed header: \(reason).",
                hint: "Part headers are 'Name: value' lines ended by CRLF."
            )
        }
        guard let colon = line.firstIndex(of: Byte.colon) else {
            throw malformed("a line has no colon")
        }
        let name = line[..<colon]
        guard !name.isEmpty, name.allSatisfy(isTokenCharacter) else {
            throw malformed("a header name is empty or has invalid characters")
        }
        let rawValue = trimmed(line[(colon + 1)...])
        guard !rawValue.contains(where: { ($0 < 0x20 && $0 != Byte.tab) || $0 == 0x7F }) else {
            throw malformed("a header value has control characters")
        }
        guard let value = String(validating: rawValue, as: UTF8.self) else {
            throw malformed("a header value is not UTF-8")
        }
        return Header(name: String(decoding: name, as: UTF8.self).lowercased(), value: value)
    }

    /// A part (with an empty body) from its headers.
    private static func part(from headers: [Header]) throws -> MultipartPart {
        let dispositions = headers.filter { $0.name == "content-disposition" }
        guard let disposition = dispositions.first else {
            throw KeelError(
                .badRequest,
                "A multipart part has no Content-Disposition header.",
                hint: "Each part needs Content-Disposition: form-data; name=\"...\"."
            )
        }
        let contentTypes = headers.filter { $0.name == "content-type" }
        guard dispositions.count == 1, contentTypes.count <= 1 else {
            throw KeelError(.badRequest, "A multipart part repeats its Content-Disposition or Content-Type header.")
        }
        // RFC 7578 §4.7: no transfer encodings other than the identity ones.
        if let encoding = headers.first(where: { $0.name == "content-transfer-encoding" }),
            !["7bit", "8bit", "binary"].contains(encoding.value.lowercased())
        {
            throw KeelError(
                .badRequest,
                "A multipart part uses Content-Transfer-Encoding '\(encoding.value)', which is not supported.",
                hint: "Send the part's bytes as they are, without a transfer encoding."
            )
        }

        let bytes = Array(disposition.value.utf8)
        let semicolon = bytes.firstIndex(of: Byte.semicolon) ?? bytes.endIndex
        let type = String(decoding: trimmed(bytes[..<semicolon]), as: UTF8.self).lowercased()
        guard type == "form-data" else {
            throw KeelError(
                .badRequest,
                "A multipart part's Content-Disposition is '\(type)', not form-data.",
                hint: "Each part needs Content-Disposition: form-data; name=\"...\"."
            )
        }
        let parameters = try self.parameters(bytes[semicolon...], of: "A part's Content-Disposition")
        guard let name = parameters.first(where: { $0.name == "name" })?.value else {
            throw KeelError(
                .badRequest,
                "A multipart part has no name.",
                hint: "Each part needs Content-Disposition: form-data; name=\"...\"."
            )
        }
        var filename = parameters.first(where: { $0.name == "filename" })?.value
        if let extended = parameters.first(where: { $0.name == "filename*" })?.value {
            filename = try self.decodeExtendedValue(extended)
        }
        let contentType = contentTypes.first.map(\.value)
        return MultipartPart(name: name, filename: filename, contentType: contentType, body: [])
    }

    /// An RFC 5987 `charset'language'percent-encoded` value; the charset is
    /// UTF-8 or ISO-8859-1, the language is ignored.
    private static func decodeExtendedValue(_ value: String) throws -> String {
        func malformed() -> KeelError {
            KeelError(
                .badRequest,
                "A multipart part's filename* parameter is malformed.",
                hint: "Send filename*=UTF-8''name, percent-encoded (RFC 5987)."
            )
        }
        let pieces = value.split(separator: "'", maxSplits: 2, omittingEmptySubsequences: false)
        guard pieces.count == 3 else { throw malformed() }
        let encoded = Array(pieces[2].utf8)
        var bytes: [UInt8] = []
        bytes.reserveCapacity(encoded.count)
        var index = 0
        while index < encoded.count {
            let byte = encoded[index]
            if byte == UInt8(ascii: "%") {
                guard index + 2 < encoded.count,
                    let high = hexValue(encoded[index + 1]), let low = hexValue(encoded[index + 2])
                else { throw malformed() }
                bytes.append(high << 4 | low)
                index += 3
            } else {
                // Visible ASCII only; anything else must be percent-encoded.
                guard byte > 0x20, byte < 0x7F else { throw malformed() }
                bytes.append(byte)
                index += 1
            }
        }
        switch pieces[0].lowercased() {
        case "utf-8":
            guard let decoded = String(validating: bytes, as: UTF8.self) else { throw malformed() }
            return decoded
        case "iso-8859-1":
            var scalars = String.UnicodeScalarView()
            scalars.append(contentsOf: bytes.map { Unicode.Scalar($0) })
            return String(scalars)
        default:
            throw KeelError(
                .badRequest,
                "A multipart part's filename* uses charset '\(pieces[0])'.",
                hint: "Use UTF-8: filename*=UTF-8''name."
            )
        }
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    // MARK: Parameters

    /// The `; name=value` parameters that follow a media type or disposition
    /// type, from the first `;`. Names are lowercased; values are tokens or
    /// quoted strings. Repeated parameter names are refused.
    ///
    /// In a quoted string, a backslash escapes only `"` and `\`; before any
    /// other character it is kept, so Windows paths survive.
    private static func parameters(_ bytes: ArraySlice<UInt8>, of what: String) throws -> [(name: String, value: String)] {
        func malformed(_ reason: String) -> KeelError {
            KeelError(.badRequest, "\(what) header is malformed: \(reason).")
        }
        var result: [(name: String, value: String)] = []
        var index = bytes.startIndex
        let end = bytes.endIndex
        func skipWhitespace() {
            while index < end, bytes[index] == Byte.space || bytes[index] == Byte.tab { index += 1 }
        }
        while index < end {
            guard bytes[index] == Byte.semicolon else { throw malformed("expected ';' between parameters") }
            index += 1
            skipWhitespace()
            if index == end || bytes[index] == Byte.semicolon { continue }  // empty parameter

            let nameStart = index
            while index < end, isTokenCharacter(bytes[index]) { index += 1 }
            guard index > nameStart else { throw malformed("a parameter has no name") }
            let name = String(decoding: bytes[nameStart..<index], as: UTF8.self).lowercased()
            skipWhitespace()
            guard index < end, bytes[index] == Byte.equals else { throw malformed("parameter '\(name)' has no value") }
            index += 1
            skipWhitespace()

            var value: [UInt8] = []
            if index < end, bytes[index] == Byte.quote {
                index += 1
                var closed = false
                while index < end {
                    let byte = bytes[index]
                    if byte == Byte.quote {
                        closed = true
                        index += 1
                        break
                    }
                    if byte == Byte.backslash, index + 1 < end, bytes[index + 1] == Byte.quote || bytes[index + 1] == Byte.backslash {
                        value.append(bytes[index + 1])
                        index += 2
                    } else {
                        value.append(byte)
                        index += 1
                    }
                }
                guard closed else { throw malformed("parameter '\(name)' has an unterminated quoted string") }
            } else {
                while index < end, bytes[index] != Byte.semicolon, bytes[index] != Byte.space, bytes[index] != Byte.tab {
                    value.append(bytes[index])
                    index += 1
                }
                guard !value.isEmpty else { throw malformed("parameter '\(name)' has an empty value") }
            }
            skipWhitespace()
            guard !result.contains(where: { $0.name == name }) else {
                throw malformed("parameter '\(name)' is repeated")
            }
            guard let decoded = String(validating: value, as: UTF8.self) else {
                throw malformed("parameter '\(name)' is not UTF-8")
            }
            result.append((name, decoded))
        }
        return result
    }

    // MARK: Bytes

    private enum Byte {
        static let cr = UInt8(ascii: "\r")
        static let lf = UInt8(ascii: "\n")
        static let dash = UInt8(ascii: "-")
        static let space = UInt8(ascii: " ")
        static let tab = UInt8(ascii: "\t")
        static let colon = UInt8(ascii: ":")
        static let semicolon = UInt8(ascii: ";")
        static let equals = UInt8(ascii: "=")
        static let quote = UInt8(ascii: "\"")
        static let backslash = UInt8(ascii: "\\")
    }

    /// RFC 9110 `tchar`.
    private static func isTokenCharacter(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"):
            true
        default:
            "!#$%&'*+-.^_`|~".utf8.contains(byte)
        }
    }

    /// `bytes` without leading and trailing spaces and tabs.
    private static func trimmed(_ bytes: ArraySlice<UInt8>) -> ArraySlice<UInt8> {
        var slice = bytes
        while let first = slice.first, first == Byte.space || first == Byte.tab { slice = slice.dropFirst() }
        while let last = slice.last, last == Byte.space || last == Byte.tab { slice = slice.dropLast() }
        return slice
    }
}

/// Finds a fixed delimiter in a byte buffer with Boyer–Moore–Horspool, so a
/// large body is mostly skipped over rather than compared byte by byte.
private struct DelimiterFinder {
    let pattern: [UInt8]
    /// How far to shift when the window's last byte is a given value.
    let shifts: [Int]

    init(_ pattern: [UInt8]) {
        precondition(!pattern.isEmpty)
        self.pattern = pattern
        var shifts = [Int](repeating: pattern.count, count: 256)
        for index in 0..<(pattern.count - 1) {
            shifts[Int(pattern[index])] = pattern.count - 1 - index
        }
        self.shifts = shifts
    }

    /// The index of the first occurrence of the pattern at or after `start`.
    func firstIndex(in buffer: UnsafeBufferPointer<UInt8>, from start: Int) -> Int? {
        let length = self.pattern.count
        let last = length - 1
        var position = start
        while position + length <= buffer.count {
            let tail = buffer[position + last]
            if tail == self.pattern[last] {
                var index = last - 1
                while index >= 0, buffer[position + index] == self.pattern[index] { index -= 1 }
                if index < 0 { return position }
            }
            position += self.shifts[Int(tail)]
        }
        return nil
    }
}
