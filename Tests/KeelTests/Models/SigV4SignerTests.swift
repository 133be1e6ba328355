import Foundation
import KeelModels
import Testing

/// SigV4 as botocore computes it: the vectors come from botocore itself
/// (`Tests/Clients/models/sigv4_vectors.py`), with a frozen clock.
@Suite("SigV4 signer")
struct SigV4SignerTests {
    static let credentials = AWSCredentials(accessKeyID: "AKIDEXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    /// 2025-01-15T12:34:56Z, the vectors' frozen time.
    static let date = Date(timeIntervalSince1970: 1_736_944_496)

    static func converseRequest(headers: [(name: String, value: String)] = [("Content-Type", "application/json")]) -> SigV4Signer.Request {
        SigV4Signer.Request(
            method: "POST", host: "bedrock-runtime.eu-north-1.amazonaws.com",
            pathSegments: ["model", "anthropic.claude-sonnet-4-5-20250929-v1:0", "converse-stream"], headers: headers)
    }

    @Test("a model id's ':' is sent as %3A and signed as %253A")
    func doubleEncodedModelID() {
        let request = Self.converseRequest()
        #expect(request.target == "/model/anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse-stream")
        let signature = SigV4Signer(credentials: Self.credentials, region: "eu-north-1").sign(request, payload: .bytes(Array("{}".utf8)), date: Self.date)
        #expect(signature.canonicalRequest.split(separator: "\n")[1] == "/model/anthropic.claude-sonnet-4-5-20250929-v1%253A0/converse-stream")
        #expect(signature.amzDate == "20250115T123456Z")
        #expect(signature.signedHeaders == "content-type;host;x-amz-date")
        #expect(signature.contentSHA256 == nil)
        #expect(signature.headers.map(\.name) == ["X-Amz-Date", "Authorization"])
        #expect(signature.authorization.hasPrefix("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20250115/eu-north-1/bedrock/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature="))
    }

    @Test("S3 signs the path as sent and sends X-Amz-Content-SHA256")
    func s3Differences() {
        let request = SigV4Signer.Request(method: "GET", host: "bucket.s3.amazonaws.com", pathSegments: ["a:b", "c d"])
        let signature = SigV4Signer(credentials: Self.credentials, region: "us-east-1", service: "s3").sign(request, payload: .empty, date: Self.date)
        #expect(signature.canonicalRequest.split(separator: "\n")[1] == "/a%3Ab/c%20d")
        #expect(signature.contentSHA256 == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(signature.signedHeaders == "host;x-amz-content-sha256;x-amz-date")
    }

    @Test("a precomputed payload hash signs the same as the body")
    func precomputedHash() {
        let body = Array(#"{"messages":[]}"#.utf8)
        let signer = SigV4Signer(credentials: Self.credentials, region: "eu-north-1")
        let fromBody = signer.sign(Self.converseRequest(), payload: .bytes(body), date: Self.date)
        let fromHash = signer.sign(
            Self.converseRequest(), payload: .sha256("43d12d1ba6ac75f5c7b67d5a5b8b6d6b2d0d7e1d1b9b2a0e0a8f0e6d9b8c7a61"), date: Self.date)
        #expect(fromBody.authorization != fromHash.authorization)
        let digest = fromBody.canonicalRequest.split(separator: "\n").last.map(String.init)!
        #expect(signer.sign(Self.converseRequest(), payload: .sha256(digest), date: Self.date) == fromBody)
    }

    @Test("a session token is sent and signed, and secrets never print")
    func sessionToken() {
        let credentials = AWSCredentials(accessKeyID: "AKID", secretAccessKey: "SECRET", sessionToken: "TOKEN")
        let signature = SigV4Signer(credentials: credentials, region: "us-east-1").sign(Self.converseRequest(), payload: .empty, date: Self.date)
        #expect(signature.securityToken == "TOKEN")
        #expect(signature.signedHeaders == "content-type;host;x-amz-date;x-amz-security-token")
        #expect(signature.headers.contains { $0.name == "X-Amz-Security-Token" && $0.value == "TOKEN" })
        #expect(!"\(credentials)".contains("SECRET") && !"\(credentials)".contains("TOKEN"))
        #expect(!"\(BedrockCredentials.apiKey("bedrock-api-key-123"))".contains("123"))
    }

    @Test("credentials from the standard environment variables; a Bedrock API key wins and is a bearer token")
    func environmentCredentials() {
        #expect(BedrockCredentials.fromEnvironment([:]) == nil)
        #expect(BedrockCredentials.fromEnvironment(["AWS_ACCESS_KEY_ID": "AKID"]) == nil)
        #expect(
            BedrockCredentials.fromEnvironment(["AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "S", "AWS_SESSION_TOKEN": ""])
                == .aws(AWSCredentials(accessKeyID: "AKID", secretAccessKey: "S")))
        #expect(
            BedrockCredentials.fromEnvironment(["AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "S", "AWS_SESSION_TOKEN": "T"])
                == .aws(AWSCredentials(accessKeyID: "AKID", secretAccessKey: "S", sessionToken: "T")))
        let both = ["AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "S", "AWS_BEARER_TOKEN_BEDROCK": "key"]
        #expect(BedrockCredentials.fromEnvironment(both) == .apiKey("key"))
        let headers = BedrockCredentials.apiKey("key").authorizationHeaders(
            for: Self.converseRequest(), payload: .empty, region: "eu-north-1", date: Self.date)
        #expect(headers.map(\.name) == ["Authorization"])
        #expect(headers.map(\.value) == ["Bearer key"])
        let signed = BedrockCredentials.aws(Self.credentials).authorizationHeaders(
            for: Self.converseRequest(), payload: .empty, region: "eu-north-1", date: Self.date)
        #expect(signed.map(\.name) == ["X-Amz-Date", "Authorization"])
    }

    @Test("percent-encoding keeps only the unreserved characters, UTF-8 bytes in uppercase hex")
    func percentEncoding() {
        #expect(SigV4Signer.percentEncode("AZaz09-_.~") == "AZaz09-_.~")
        #expect(SigV4Signer.percentEncode("a b:c/d+e=é日") == "a%20b%3Ac%2Fd%2Be%3D%C3%A9%E6%97%A5")
        #expect(SigV4Signer.percentEncode("a/b", keeping: "/") == "a/b")
    }

    // MARK: - Against botocore

    struct Vector {
        let name: String
        let fields: [String: Any]

        func string(_ key: String) throws -> String { try #require(self.fields[key] as? String, "\(self.name): \(key)") }
    }

    @Test("signatures equal botocore's SigV4Auth, byte for byte, for every vector")
    func botocoreVectors() async throws {
        try await BotocoreReference.requireBotocore()
        let output = try await BotocoreReference.json("sigv4_vectors.py")
        let vectors = try #require(output["vectors"] as? [[String: Any]]).map { Vector(name: $0["name"] as? String ?? "?", fields: $0) }
        #expect(vectors.count >= 8)
        for vector in vectors {
            let url = try #require(URLComponents(string: try vector.string("url")), "\(vector.name)")
            var host = try #require(url.host, "\(vector.name)").lowercased()
            if let port = url.port, port != (url.scheme == "https" ? 443 : 80) { host += ":\(port)" }
            let headers = try #require(vector.fields["headers"] as? [[String]], "\(vector.name)").map { (name: $0[0], value: $0[1]) }
            let request = SigV4Signer.Request(
                method: try vector.string("method"), host: host, path: url.percentEncodedPath, query: url.percentEncodedQuery, headers: headers)
            let body = [UInt8](try #require(Data(base64Encoded: try vector.string("body_base64")), "\(vector.name)"))
            let credentials = AWSCredentials(
                accessKeyID: try vector.string("access_key"), secretAccessKey: try vector.string("secret_key"),
                sessionToken: vector.fields["session_token"] as? String)
            let timestamp = try vector.string("timestamp")
            #expect(timestamp == "2025-01-15T12:34:56Z")
            let signer = SigV4Signer(credentials: credentials, region: try vector.string("region"), service: try vector.string("service"))
            let signature = signer.sign(request, payload: .bytes(body), date: Self.date)

            #expect(signature.canonicalRequest == (try vector.string("canonical_request")), "\(vector.name)")
            #expect(signature.stringToSign == (try vector.string("string_to_sign")), "\(vector.name)")
            let added = try #require(vector.fields["added"] as? [String: String], "\(vector.name)")
            #expect(signature.authorization == added["Authorization"], "\(vector.name)")
            #expect(signature.amzDate == added["X-Amz-Date"], "\(vector.name)")
            #expect(signature.securityToken == added["X-Amz-Security-Token"], "\(vector.name)")
            #expect(added["X-Amz-Content-SHA256"] == nil, "\(vector.name): botocore sends no X-Amz-Content-SHA256 to bedrock")
            let sent: [String: String] = Dictionary(uniqueKeysWithValues: signature.headers.map { ($0.name, $0.value) })
            #expect(sent == added, "\(vector.name)")

            // The same request built from unencoded parts goes on the wire
            // exactly as botocore sent it, and signs the same.
            if let segments = vector.fields["path_segments"] as? [String] {
                let items = (vector.fields["query_items"] as? [[String]] ?? []).map { (name: $0[0], value: $0[1]) }
                let built = SigV4Signer.Request(method: request.method, host: host, pathSegments: segments, queryItems: items, headers: headers)
                #expect(built.target == request.target, "\(vector.name)")
                #expect(signer.sign(built, payload: .bytes(body), date: Self.date) == signature, "\(vector.name)")
            }
            if let model = vector.fields["model_id"] as? String {
                let built = SigV4Signer.Request(method: "POST", host: host, pathSegments: ["model", model, "converse-stream"], headers: headers)
                #expect(built.target == request.target, "\(vector.name): botocore's client sent \(request.target)")
            }
        }
    }
}
