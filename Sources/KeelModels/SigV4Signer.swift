import Crypto
import Foundation

/// AWS Signature Version 4 for one service and region, built to produce the
/// same bytes as botocore's `SigV4Auth` (the tests sign the same requests
/// with botocore and compare), because a signature that differs in one byte
/// is a 403 with no hint of which.
///
/// What botocore does, and so this does too:
/// - Every header given is signed except a short list that proxies change
///   (`user-agent`, `expect`, `transfer-encoding`, hop-by-hop headers…);
///   `host` is added from the request; `x-amz-date` and, with a session
///   token, `x-amz-security-token` are set and signed. A `content-type`
///   given is therefore signed.
/// - The payload's SHA-256 is signed but not sent: `X-Amz-Content-Sha256`
///   is S3's header, and botocore adds it for S3 only
///   (``Configuration/addsContentSHA256Header``).
/// - The canonical URI is the request line's path, already percent-encoded,
///   encoded once more (``Request/path``): Bedrock model ids contain `:`,
///   sent as `%3A` and signed as `%253A`. S3 alone signs the path as sent.
/// - The canonical query is the request line's `name=value` pairs, as
///   encoded there, sorted.
///
/// One difference: a `Date` header given is dropped (botocore would sign it
/// instead of `X-Amz-Date`); Keel never sends one.
public struct SigV4Signer: Sendable {
    public struct Configuration: Sendable, Equatable {
        /// Send the signed payload hash as `X-Amz-Content-Sha256`: true for
        /// S3, false (botocore's choice) for every other service.
        public var addsContentSHA256Header: Bool
        /// Encode the path a second time in the canonical URI: every service
        /// but S3.
        public var doubleEncodesPath: Bool

        public init(addsContentSHA256Header: Bool = false, doubleEncodesPath: Bool = true) {
            self.addsContentSHA256Header = addsContentSHA256Header
            self.doubleEncodesPath = doubleEncodesPath
        }

        /// What botocore does for `service`.
        public static func botocore(service: String) -> Configuration {
            service == "s3"
                ? Configuration(addsContentSHA256Header: true, doubleEncodesPath: false) : Configuration()
        }
    }

    /// An HTTP request as it will go on the wire, the part of it a
    /// signature covers.
    public struct Request: Sendable {
        public var method: String
        /// The `Host` header: lowercase host, with the port unless default.
        public var host: String
        /// The path as on the request line, each segment percent-encoded.
        public var path: String
        /// The query as on the request line, encoded, without `?`; `nil`
        /// when there is none.
        public var query: String?
        /// Headers to send and sign besides the ones the signer adds.
        public var headers: [(name: String, value: String)]

        public init(method: String, host: String, path: String, query: String? = nil, headers: [(name: String, value: String)] = []) {
            self.method = method
            self.host = host
            self.path = path
            self.query = query
            self.headers = headers
        }

        /// A request from unencoded parts: each path segment and each query
        /// name and value is percent-encoded the way AWS wants (everything
        /// but `A-Z a-z 0-9 - _ . ~`), so a model id such as
        /// `anthropic.claude-sonnet-4-5-20250929-v1:0` travels as `…v1%3A0`
        /// and an ARN's `/` stays inside its segment.
        public init(
            method: String, host: String, pathSegments: [String], queryItems: [(name: String, value: String)] = [],
            headers: [(name: String, value: String)] = []
        ) {
            let path = "/" + pathSegments.map { SigV4Signer.percentEncode($0) }.joined(separator: "/")
            let query = queryItems.isEmpty
                ? nil : queryItems.map { "\(SigV4Signer.percentEncode($0.name))=\(SigV4Signer.percentEncode($0.value))" }.joined(separator: "&")
            self.init(method: method, host: host, path: path, query: query, headers: headers)
        }

        /// Path and query as they go on the request line.
        public var target: String {
            if let query { return "\(self.path)?\(query)" }
            return self.path
        }
    }

    /// What the signature says about the body.
    public enum Payload: Sendable, Equatable {
        /// The body itself; its SHA-256 is signed.
        case bytes([UInt8])
        /// The lowercase hex SHA-256 of a body too large to hold at once.
        case sha256(String)
        /// `UNSIGNED-PAYLOAD`, for services that allow it.
        case unsigned

        public static let empty = Payload.bytes([])

        var hash: String {
            switch self {
            case .bytes(let bytes): SigV4Signer.hex(SHA256.hash(data: bytes))
            case .sha256(let hash): hash
            case .unsigned: "UNSIGNED-PAYLOAD"
            }
        }
    }

    /// A finished signature: the headers to add, and the intermediate
    /// strings, which are what to compare when a service answers 403.
    public struct Signature: Sendable, Equatable {
        public var authorization: String
        /// `yyyyMMdd'T'HHmmss'Z'`, UTC.
        public var amzDate: String
        public var securityToken: String?
        /// Set only when ``Configuration/addsContentSHA256Header``.
        public var contentSHA256: String?
        public var signedHeaders: String
        public var canonicalRequest: String
        public var stringToSign: String

        /// The headers to add to the request, with botocore's spelling.
        public var headers: [(name: String, value: String)] {
            var headers: [(name: String, value: String)] = [("X-Amz-Date", self.amzDate)]
            if let securityToken { headers.append(("X-Amz-Security-Token", securityToken)) }
            if let contentSHA256 { headers.append(("X-Amz-Content-SHA256", contentSHA256)) }
            headers.append(("Authorization", self.authorization))
            return headers
        }
    }

    /// Headers botocore leaves unsigned: proxies and clients may add, drop
    /// or rewrite them on the way.
    static let unsignedHeaders: Set<String> = [
        "baggage", "connection", "expect", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
        "traceparent", "tracestate", "trailer", "transfer-encoding", "upgrade", "user-agent", "x-amzn-trace-id",
    ]

    public var credentials: AWSCredentials
    public var region: String
    /// The signing name: `bedrock` for both `bedrock` and `bedrock-runtime`.
    public var service: String
    public var configuration: Configuration

    public init(credentials: AWSCredentials, region: String, service: String = "bedrock", configuration: Configuration? = nil) {
        self.credentials = credentials
        self.region = region
        self.service = service
        self.configuration = configuration ?? .botocore(service: service)
    }

    /// Signs `request` as sent at `date`.
    public func sign(_ request: Request, payload: Payload, date: Date) -> Signature {
        let amzDate = Self.timestamp(date)
        let day = String(amzDate.prefix(8))
        let payloadHash = payload.hash

        var headers: [(name: String, value: String)] = []
        for (name, value) in request.headers {
            let lowered = name.lowercased()
            if lowered == "authorization" || lowered == "date" || lowered == "x-amz-date" { continue }
            if lowered == "x-amz-security-token", self.credentials.sessionToken != nil { continue }
            if lowered == "x-amz-content-sha256", self.configuration.addsContentSHA256Header { continue }
            headers.append((lowered, value))
        }
        headers.append(("x-amz-date", amzDate))
        if let token = self.credentials.sessionToken { headers.append(("x-amz-security-token", token)) }
        let contentSHA256 = self.configuration.addsContentSHA256Header ? payloadHash : nil
        if let contentSHA256 { headers.append(("x-amz-content-sha256", contentSHA256)) }
        // A caller's X-Amz-Content-Sha256 is what the service compares the
        // body against, so botocore signs that value rather than its own.
        let signedPayloadHash = headers.last { $0.name == "x-amz-content-sha256" }?.value ?? payloadHash

        var byName: [String: [String]] = [:]
        for (name, value) in headers where !Self.unsignedHeaders.contains(name) {
            byName[name, default: []].append(Self.trimAll(value))
        }
        if byName["host"] == nil { byName["host"] = [request.host] }
        let names = byName.keys.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
        let canonicalHeaders = names.map { "\($0):\(byName[$0]!.joined(separator: ","))\n" }.joined()
        let signedHeaders = names.joined(separator: ";")

        let canonicalRequest = [
            request.method.uppercased(),
            self.canonicalURI(request.path),
            Self.canonicalQuery(request.query),
            canonicalHeaders,
            signedHeaders,
            signedPayloadHash,
        ].joined(separator: "\n")
        let scope = "\(day)/\(self.region)/\(self.service)/aws4_request"
        let stringToSign = [
            "AWS4-HMAC-SHA256", amzDate, scope, Self.hex(SHA256.hash(data: Array(canonicalRequest.utf8))),
        ].joined(separator: "\n")

        var key = SymmetricKey(data: Array("AWS4\(self.credentials.secretAccessKey)".utf8))
        for part in [day, self.region, self.service, "aws4_request"] {
            key = SymmetricKey(data: Array(HMAC<SHA256>.authenticationCode(for: Array(part.utf8), using: key)))
        }
        let signature = Self.hex(HMAC<SHA256>.authenticationCode(for: Array(stringToSign.utf8), using: key))
        return Signature(
            authorization:
                "AWS4-HMAC-SHA256 Credential=\(self.credentials.accessKeyID)/\(scope), SignedHeaders=\(signedHeaders), Signature=\(signature)",
            amzDate: amzDate,
            securityToken: self.credentials.sessionToken,
            contentSHA256: contentSHA256,
            signedHeaders: signedHeaders,
            canonicalRequest: canonicalRequest,
            stringToSign: stringToSign)
    }

    /// Dot segments and empty segments removed (as botocore does), then,
    /// but for S3, the encoded path encoded again.
    func canonicalURI(_ path: String) -> String {
        guard self.configuration.doubleEncodesPath else { return path }
        guard !path.isEmpty else { return "/" }
        var segments: [Substring] = []
        for segment in path.split(separator: "/", omittingEmptySubsequences: true) where segment != "." {
            if segment == ".." {
                _ = segments.popLast()
            } else {
                segments.append(segment)
            }
        }
        var normalized = path.hasPrefix("/") ? "/" : ""
        normalized += segments.joined(separator: "/")
        if path.hasSuffix("/"), !segments.isEmpty { normalized += "/" }
        return Self.percentEncode(normalized, keeping: "/")
    }

    /// The query's `name=value` pairs, as encoded on the request line,
    /// sorted by name, then value.
    static func canonicalQuery(_ query: String?) -> String {
        guard let query, !query.isEmpty else { return "" }
        let pairs = query.split(separator: "&", omittingEmptySubsequences: false).map { pair -> (Substring, Substring) in
            guard let equals = pair.firstIndex(of: "=") else { return (pair, "") }
            return (pair[..<equals], pair[pair.index(after: equals)...])
        }
        return pairs.sorted { left, right in
            left.0.utf8.elementsEqual(right.0.utf8) ? left.1.utf8.lexicographicallyPrecedes(right.1.utf8) : left.0.utf8.lexicographicallyPrecedes(right.0.utf8)
        }.map { "\($0.0)=\($0.1)" }.joined(separator: "&")
    }

    /// Percent-encodes every byte of the UTF-8 of `string` but the
    /// unreserved `A-Z a-z 0-9 - _ . ~` and those in `keeping`, with
    /// uppercase hex, as SigV4 requires.
    public static func percentEncode(_ string: String, keeping: String = "") -> String {
        let kept = Set(keeping.utf8)
        var encoded: [UInt8] = []
        encoded.reserveCapacity(string.utf8.count)
        let digits = Array("0123456789ABCDEF".utf8)
        for byte in string.utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: "~"):
                encoded.append(byte)
            case _ where kept.contains(byte):
                encoded.append(byte)
            default:
                encoded += [UInt8(ascii: "%"), digits[Int(byte >> 4)], digits[Int(byte & 0x0F)]]
            }
        }
        return String(decoding: encoded, as: UTF8.self)
    }

    /// Whitespace trimmed at both ends and every run inside made one space:
    /// Python's `" ".join(value.split())`, which botocore uses.
    static func trimAll(_ value: String) -> String {
        value.unicodeScalars.split { $0.properties.isWhitespace || (0x1C...0x1F).contains($0.value) }
            .map { String(String.UnicodeScalarView($0)) }.joined(separator: " ")
    }

    /// `yyyyMMdd'T'HHmmss'Z'` in UTC, computed without a `DateFormatter`
    /// (locale and calendar settings cannot change it).
    static func timestamp(_ date: Date) -> String {
        let seconds = Int64(date.timeIntervalSince1970.rounded(.down))
        let days = seconds >= 0 ? seconds / 86_400 : (seconds - 86_399) / 86_400
        let secondOfDay = seconds - days * 86_400
        // Howard Hinnant's civil-from-days.
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthIndex = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * monthIndex + 2) / 5 + 1
        let month = monthIndex < 10 ? monthIndex + 3 : monthIndex - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        func pad(_ value: Int64, _ width: Int) -> String {
            let digits = String(value)
            return String(repeating: "0", count: max(0, width - digits.count)) + digits
        }
        return pad(year, 4) + pad(month, 2) + pad(day, 2) + "T" + pad(secondOfDay / 3600, 2)
            + pad(secondOfDay % 3600 / 60, 2) + pad(secondOfDay % 60, 2) + "Z"
    }

    static func hex(_ bytes: some Sequence<UInt8>) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        for byte in bytes { out += [digits[Int(byte >> 4)], digits[Int(byte & 0x0F)]] }
        return String(decoding: out, as: UTF8.self)
    }
}
