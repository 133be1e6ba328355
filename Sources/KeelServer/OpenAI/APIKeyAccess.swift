import Crypto
import Foundation
import Hummingbird
import KeelCore
import Logging
import Metrics

/// Why a request's API key was refused. The routes answer `.rateLimited`
/// with 429 and `Retry-After`, the others with 401.
///
/// Never carries the key: a failure may be logged or shown.
public enum APIKeyFailure: Error, Sendable, Equatable, CustomStringConvertible {
    /// No `Authorization: Bearer` header.
    case missing
    /// Not a Keel API key, or no stored key has its hash.
    case invalid
    /// The key was revoked (`keel keys revoke`).
    case revoked
    /// The key's `--expires` time has passed.
    case expired
    /// The key's requests per minute, counted across every instance, are
    /// spent; the window ends after `retryAfter` (at most a minute).
    case rateLimited(retryAfter: Duration, limit: Int)

    /// The `outcome` label of `keel_api_key_requests_total`.
    public var outcome: String {
        switch self {
        case .missing: "missing"
        case .invalid: "invalid"
        case .revoked: "revoked"
        case .expired: "expired"
        case .rateLimited: "rate_limited"
        }
    }

    /// A sentence for the client.
    public var message: String {
        switch self {
        case .missing: "No API key was sent; send one as Authorization: Bearer <key>."
        case .invalid: "The API key is not valid."
        case .revoked: "The API key has been revoked."
        case .expired: "The API key has expired."
        case .rateLimited(let retryAfter, let limit):
            "The API key's limit of \(limit) requests per minute is reached; retry in \(APIKeyFailure.wholeSeconds(retryAfter)) s."
        }
    }

    public var description: String { "\(self.outcome): \(self.message)" }

    /// `retryAfter` rounded up to whole seconds, at least 1 (for `Retry-After`).
    public static func wholeSeconds(_ duration: Duration) -> Int {
        max(1, Int(duration.timeInterval.rounded(.up)))
    }
}

/// The OpenAI-compatible API's keys, for a module's routes
/// (`app.apiKeys`): authenticates a request's key and records its usage.
///
/// The key is read from the store on every request, never cached, so a key
/// revoked on one instance is refused by every instance at once; its
/// requests-per-minute limit is counted in the store's shared rate windows.
/// The key itself never reaches a log or an error, only its prefix.
public struct APIKeyAccess: Sendable {
    /// What every Keel API key starts with.
    public static let keyPrefix = "sk-keel-"
    /// Random base62 characters after ``keyPrefix``.
    public static let randomLength = 32

    let keys: any APIKeyStore
    let rateWindows: any RateWindowStore
    let clock: any KeelClock
    let logger: Logger
    let counters: [String: Metrics.Counter]

    public init(store: any KeelStore, clock: any KeelClock = SystemClock(), metrics: KeelMetrics = KeelMetrics(), logger: Logger) {
        self.keys = store.apiKeys
        self.rateWindows = store.rateWindows
        self.clock = clock
        self.logger = logger
        self.counters = Dictionary(
            uniqueKeysWithValues: ["ok", "missing", "invalid", "revoked", "expired", "rate_limited"].map { outcome in
                (outcome, metrics.counter("keel_api_key_requests_total", [("outcome", outcome)]))
            })
    }

    /// The request's key, when it is known, not revoked, not expired and
    /// within its requests per minute (this request counted). Throws an
    /// ``APIKeyFailure``, or ``KeelError/Code/storeUnavailable`` when the
    /// store does not answer.
    public func authenticate(_ request: Request) async throws -> APIKey {
        do {
            let key = try await self.check(Self.bearerToken(in: request))
            self.count("ok")
            return key
        } catch let failure as APIKeyFailure {
            self.count(failure.outcome)
            throw failure
        }
    }

    /// Adds one request and its tokens to the key's usage for `model`. A
    /// store failure is logged, never thrown: the answer was already given.
    public func recordUsage(_ key: APIKey, model: String, usage: (input: Int, output: Int)) async {
        do {
            try await self.keys.recordUsage(keyID: key.id, model: model, inputTokens: usage.input, outputTokens: usage.output, now: self.clock.now())
        } catch {
            self.logger.warning(
                "could not record an API key's usage",
                metadata: [
                    "keel.api_key.id": "\(key.id)", "keel.api_key.prefix": "\(key.prefix)", "keel.model": "\(model)",
                    "keel.tokens.input": "\(usage.input)", "keel.tokens.output": "\(usage.output)", "error": "\(error)",
                ])
        }
    }

    private func check(_ token: Substring?) async throws -> APIKey {
        guard let token, !token.isEmpty else { throw APIKeyFailure.missing }
        guard Self.isWellFormed(token) else {
            self.logger.debug("API key refused: not a Keel key")
            throw APIKeyFailure.invalid
        }
        let prefix = String(token.prefix(Self.keyPrefix.count + 4))
        guard let key = try await self.keys.key(hash: Self.hash(token)) else {
            self.logger.debug("API key refused: unknown", metadata: ["keel.api_key.prefix": "\(prefix)"])
            throw APIKeyFailure.invalid
        }
        let now = self.clock.now()
        guard key.isUsable(at: now) else {
            let failure: APIKeyFailure = key.revokedAt != nil ? .revoked : .expired
            self.logger.info(
                "API key refused", metadata: ["keel.api_key.id": "\(key.id)", "keel.api_key.prefix": "\(key.prefix)", "keel.outcome": "\(failure.outcome)"])
            throw failure
        }
        if let limit = key.requestsPerMinute {
            let window = try await self.rateWindows.hit(key: "api-key:\(key.id)", window: .seconds(60), now: now)
            if window.count > limit {
                let retryAfter = Duration.milliseconds(Int64((max(0, window.windowEnds.timeIntervalSince(now)) * 1000).rounded(.up)))
                self.logger.debug(
                    "API key refused: over its requests per minute",
                    metadata: ["keel.api_key.id": "\(key.id)", "keel.api_key.prefix": "\(key.prefix)", "keel.limit": "\(limit)"])
                throw APIKeyFailure.rateLimited(retryAfter: retryAfter, limit: limit)
            }
        }
        return key
    }

    private func count(_ outcome: String) {
        self.counters[outcome]?.increment()
    }

    /// The token of `Authorization: Bearer <token>` (the scheme
    /// case-insensitive, RFC 9110 §11.1); nil without one.
    static func bearerToken(in request: Request) -> Substring? {
        guard let authorization = request.headers[.authorization] else { return nil }
        let scheme = authorization.utf8.prefix(7)
        guard scheme.count == 7, scheme.elementsEqual("bearer ".utf8, by: { $0 | 0x20 == $1 }) else { return nil }
        let token = authorization.utf8.dropFirst(7).drop(while: { $0 == 0x20 })
        return Substring(token.prefix(while: { $0 != 0x20 }))
    }

    /// `sk-keel-` and ``randomLength`` base62 characters.
    static func isWellFormed(_ token: Substring) -> Bool {
        token.utf8.count == Self.keyPrefix.utf8.count + Self.randomLength && token.hasPrefix(Self.keyPrefix)
            && token.utf8.dropFirst(Self.keyPrefix.utf8.count).allSatisfy { byte in
                (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
            }
    }

    /// The lowercase hex SHA-256 of a whole key: what the store keeps.
    public static func hash(_ key: some StringProtocol) -> String {
        let digest = SHA256.hash(data: Array(key.utf8))
        return digest.map { byte in
            let hex = String(byte, radix: 16)
            return byte < 0x10 ? "0" + hex : hex
        }.joined()
    }
}

/// A key just made: the key itself, to show once, and the record the store
/// keeps (its hash and prefix, never the key).
public struct NewAPIKey: Sendable, CustomStringConvertible {
    /// `sk-keel-` and 32 base62 characters from the system's CSPRNG.
    public let key: String
    public let record: APIKey

    /// A new random key and its record, with a new `key_…` id.
    public init(name: String, now: Date, expiresAt: Date? = nil, requestsPerMinute: Int? = nil) {
        var generator = SystemRandomNumberGenerator()
        let key = APIKeyAccess.keyPrefix + Self.base62(count: APIKeyAccess.randomLength, using: &generator)
        self.key = key
        self.record = APIKey(
            id: "key_" + Self.base62(count: 16, using: &generator), name: name, hash: APIKeyAccess.hash(key),
            prefix: String(key.prefix(APIKeyAccess.keyPrefix.count + 4)), createdAt: now, expiresAt: expiresAt,
            requestsPerMinute: requestsPerMinute)
    }

    /// Never the key: its prefix and id.
    public var description: String { "\(self.record.prefix)… (\(self.record.id))" }

    private static let alphabet = Array("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz".utf8)

    /// Uniform characters: `next(upperBound:)` draws without modulo bias.
    private static func base62(count: Int, using generator: inout SystemRandomNumberGenerator) -> String {
        String(decoding: (0..<count).map { _ in Self.alphabet[Int(generator.next(upperBound: UInt8(Self.alphabet.count)))] }, as: UTF8.self)
    }
}
