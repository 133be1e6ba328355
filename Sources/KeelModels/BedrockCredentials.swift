import Foundation

/// How Keel proves itself to Bedrock: SigV4 with an AWS key pair, or a
/// Bedrock API key sent as a bearer token (no signing at all).
public enum BedrockCredentials: Sendable, Equatable, CustomStringConvertible {
    case aws(AWSCredentials)
    /// A Bedrock API key: `Authorization: Bearer <key>`.
    case apiKey(String)

    /// The credentials the standard AWS environment variables name. A
    /// Bedrock API key (`AWS_BEARER_TOKEN_BEDROCK`, the variable the AWS SDKs
    /// read) wins over a key pair, as it does in the SDKs.
    public static func fromEnvironment(_ environment: [String: String]) -> BedrockCredentials? {
        if let key = environment["AWS_BEARER_TOKEN_BEDROCK"], !key.isEmpty { return .apiKey(key) }
        return AWSCredentials.fromEnvironment(environment).map(BedrockCredentials.aws)
    }

    /// The headers that authorize `request` to Bedrock in `region` at `date`:
    /// `Authorization` (and `X-Amz-Date`, `X-Amz-Security-Token` for SigV4).
    public func authorizationHeaders(
        for request: SigV4Signer.Request, payload: SigV4Signer.Payload, region: String, date: Date
    ) -> [(name: String, value: String)] {
        switch self {
        case .aws(let credentials):
            SigV4Signer(credentials: credentials, region: region, service: "bedrock")
                .sign(request, payload: payload, date: date).headers
        case .apiKey(let key):
            [("Authorization", "Bearer \(key)")]
        }
    }

    public var description: String {
        switch self {
        case .aws(let credentials): "\(credentials)"
        case .apiKey: "BedrockCredentials.apiKey(<redacted>)"
        }
    }
}
