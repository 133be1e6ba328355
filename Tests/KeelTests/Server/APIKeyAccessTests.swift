import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import KeelCore
import KeelServer
import Logging
import NIOCore
import Synchronization
import Testing

/// `APIKeyAccess`: a request's `Authorization: Bearer sk-keel-…` read from
/// the store on every request, refused when missing, unknown, revoked,
/// expired or over its per-minute limit counted across instances.
@Suite("API key access")
struct APIKeyAccessTests {
    static let t0 = Date(timeIntervalSince1970: 1_800_000_000)

    static func request(authorization: String?) -> Request {
        var fields = HTTPFields()
        if let authorization { fields[.authorization] = authorization }
        return Request(
            head: HTTPRequest(method: .post, scheme: "http", authority: "127.0.0.1", path: "/v1/chat/completions", headerFields: fields),
            body: RequestBody(buffer: ByteBuffer()))
    }

    static func request(key: String) -> Request { Self.request(authorization: "Bearer \(key)") }

    /// Expects `body` to throw exactly `failure`.
    static func expectFailure(
        _ failure: APIKeyFailure, _ comment: Comment? = nil, sourceLocation: SourceLocation = #_sourceLocation, _ body: () async throws -> APIKey
    ) async {
        do {
            let key = try await body()
            Issue.record("expected \(failure), got key \(key.id) \(comment.map { "\($0)" } ?? "")", sourceLocation: sourceLocation)
        } catch let error as APIKeyFailure {
            #expect(error == failure, "\(comment.map { "\($0)" } ?? "")", sourceLocation: sourceLocation)
        } catch {
            Issue.record("expected \(failure), got \(error) \(comment.map { "\($0)" } ?? "")", sourceLocation: sourceLocation)
        }
    }

    @Test("a new key is sk-keel- and 32 base62 characters; the record keeps its SHA-256 and prefix, never the key")
    func newKey() {
        let made = NewAPIKey(name: "ci", now: Self.t0, expiresAt: Self.t0.addingTimeInterval(60), requestsPerMinute: 5)
        #expect(made.key.hasPrefix("sk-keel-") && made.key.count == 40)
        #expect(made.key.dropFirst(8).allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber) })
        #expect(made.record.hash == APIKeyAccess.hash(made.key) && made.record.hash.count == 64)
        #expect(made.record.prefix == String(made.key.prefix(12)) && made.record.id.hasPrefix("key_"))
        #expect(made.record.name == "ci" && made.record.requestsPerMinute == 5 && made.record.expiresAt == Self.t0.addingTimeInterval(60))
        #expect(!"\(made)".contains(made.key) && !String(reflecting: made.record).contains(made.key))
        // SHA-256 of "abc" (FIPS 180-2).
        #expect(APIKeyAccess.hash("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        let others = Set((0..<50).map { _ in NewAPIKey(name: "x", now: Self.t0).key })
        #expect(others.count == 50 && !others.contains(made.key))
    }

    @Test("a valid key is returned; a missing header, another scheme, a malformed or unknown key are refused", arguments: Driver.available)
    func validAndRefused(driver: Driver) async throws {
        try await StoreFixture.make(driver).withStore { store in
            let clock = ManualClock(Self.t0)
            let metrics = KeelMetrics()
            let logs = CapturedLogs()
            let access = APIKeyAccess(store: store, clock: clock, metrics: metrics, logger: logs.logger)
            let made = NewAPIKey(name: "ci", now: Self.t0)
            try await store.apiKeys.createKey(made.record)

            #expect(try await access.authenticate(Self.request(key: made.key)) == made.record)
            #expect(try await access.authenticate(Self.request(authorization: "bearer   \(made.key)")) == made.record, "the scheme is case-insensitive")

            await Self.expectFailure(.missing) { try await access.authenticate(Self.request(authorization: nil)) }
            await Self.expectFailure(.missing, "another scheme") { try await access.authenticate(Self.request(authorization: "Basic dXNlcjpwdw==")) }
            await Self.expectFailure(.missing, "an empty bearer") { try await access.authenticate(Self.request(authorization: "Bearer ")) }
            let unknown = NewAPIKey(name: "other", now: Self.t0).key
            await Self.expectFailure(.invalid, "well formed, not stored") { try await access.authenticate(Self.request(key: unknown)) }
            await Self.expectFailure(.invalid, "one character off") {
                try await access.authenticate(Self.request(key: String(made.key.dropLast()) + (made.key.hasSuffix("A") ? "B" : "A")))
            }
            await Self.expectFailure(.invalid, "too short") { try await access.authenticate(Self.request(key: "sk-keel-abc")) }
            await Self.expectFailure(.invalid, "another vendor's key") {
                try await access.authenticate(Self.request(key: "sk-proj-" + String(made.key.dropFirst(8))))
            }
            await Self.expectFailure(.invalid, "the stored hash is not a key") { try await access.authenticate(Self.request(key: made.record.hash)) }

            let text = String(decoding: metrics.render(), as: UTF8.self)
            for (outcome, count) in [("ok", 2), ("missing", 3), ("invalid", 5)] {
                #expect(text.contains("keel_api_key_requests_total{outcome=\"\(outcome)\"} \(count)"), "\(outcome) in\n\(text)")
            }
            #expect(!logs.text.contains(made.key.dropFirst(12)) && !logs.text.contains(unknown.dropFirst(12)), "\(logs.text)")
        }
    }

    @Test("a key revoked through another store connection (another instance) is refused at the next request", arguments: Driver.available)
    func revokedElsewhere(driver: Driver) async throws {
        let fixture = try await StoreFixture.make(driver)
        try await fixture.withStore { store in
            let logs = CapturedLogs()
            let access = APIKeyAccess(store: store, clock: SystemClock(), logger: logs.logger)
            let made = NewAPIKey(name: "ci", now: Date())
            try await store.apiKeys.createKey(made.record)
            #expect(try await access.authenticate(Self.request(key: made.key)).id == made.record.id)

            let other = try fixture.openStore()
            let revoked = try await other.withRunning { try await other.apiKeys.revokeKey(idOrName: "ci", now: Date()) }
            try await other.close()
            #expect(revoked?.id == made.record.id)
            await Self.expectFailure(.revoked) { try await access.authenticate(Self.request(key: made.key)) }
            #expect(logs.text.contains(made.record.prefix) && !logs.text.contains(made.key), "only the prefix may be logged: \(logs.text)")
        }
    }

    @Test("a key is refused once its expiry has passed", arguments: Driver.available)
    func expired(driver: Driver) async throws {
        try await StoreFixture.make(driver).withStore { store in
            let clock = ManualClock(Self.t0)
            let access = APIKeyAccess(store: store, clock: clock, logger: TestEnvironment.logger)
            let made = NewAPIKey(name: "short", now: Self.t0, expiresAt: Self.t0.addingTimeInterval(3600))
            try await store.apiKeys.createKey(made.record)
            #expect(try await access.authenticate(Self.request(key: made.key)).name == "short")
            clock.advance(by: .seconds(3599))
            #expect(try await access.authenticate(Self.request(key: made.key)).name == "short")
            clock.advance(by: .seconds(1))
            await Self.expectFailure(.expired) { try await access.authenticate(Self.request(key: made.key)) }
        }
    }

    @Test("requests per minute are counted across two instances: above the limit, rate_limited until the window ends", arguments: Driver.available)
    func rateLimitAcrossInstances(driver: Driver) async throws {
        let fixture = try await StoreFixture.make(driver)
        try await fixture.withStore { first in
            let second = try fixture.openStore()
            try await second.withRunning {
                // 1_800_000_000 is a multiple of 60: the minute is [t0, t0 + 60 s).
                let clock = ManualClock(Self.t0.addingTimeInterval(15))
                let metrics = KeelMetrics()
                let instances = [
                    APIKeyAccess(store: first, clock: clock, metrics: metrics, logger: TestEnvironment.logger),
                    APIKeyAccess(store: second, clock: clock, metrics: metrics, logger: TestEnvironment.logger),
                ]
                let limited = NewAPIKey(name: "limited", now: Self.t0, requestsPerMinute: 4)
                let free = NewAPIKey(name: "free", now: Self.t0)
                try await first.apiKeys.createKey(limited.record)
                try await first.apiKeys.createKey(free.record)

                for index in 0..<4 {
                    #expect(try await instances[index % 2].authenticate(Self.request(key: limited.key)).id == limited.record.id, "request \(index + 1)")
                }
                for access in instances {
                    await Self.expectFailure(.rateLimited(retryAfter: .seconds(45), limit: 4)) {
                        try await access.authenticate(Self.request(key: limited.key))
                    }
                }
                do {
                    _ = try await instances[1].authenticate(Self.request(key: limited.key))
                    Issue.record("the sixth request was let through")
                } catch let APIKeyFailure.rateLimited(retryAfter, limit) {
                    #expect(retryAfter > .zero && retryAfter <= .seconds(60) && limit == 4)
                    #expect(APIKeyFailure.wholeSeconds(retryAfter) == 45)
                }
                // Another key has its own count (none here).
                for _ in 0..<10 { _ = try await instances[0].authenticate(Self.request(key: free.key)) }

                clock.advance(by: .seconds(45))
                #expect(try await instances[1].authenticate(Self.request(key: limited.key)).id == limited.record.id, "a new minute")
                let text = String(decoding: metrics.render(), as: UTF8.self)
                #expect(text.contains("keel_api_key_requests_total{outcome=\"rate_limited\"} 3"), "\(text)")
            }
            try await second.close()
        }
    }

    @Test("usage is recorded per model; a store failure while recording is logged, not thrown", arguments: Driver.available)
    func usage(driver: Driver) async throws {
        let fixture = try await StoreFixture.make(driver)
        try await fixture.withStore { store in
            let clock = ManualClock(Self.t0)
            let access = APIKeyAccess(store: store, clock: clock, logger: TestEnvironment.logger)
            let made = NewAPIKey(name: "ci", now: Self.t0)
            try await store.apiKeys.createKey(made.record)
            await access.recordUsage(made.record, model: "small", usage: (input: 12, output: 30))
            clock.advance(by: .seconds(5))
            await access.recordUsage(made.record, model: "small", usage: (input: 8, output: 10))
            #expect(
                try await store.apiKeys.usage(keyID: made.record.id) == [
                    APIKeyUsage(keyID: made.record.id, model: "small", requests: 2, inputTokens: 20, outputTokens: 40, lastUsedAt: Self.t0.addingTimeInterval(5))
                ])
        }
        // A store without the tables (never migrated): recording fails inside, and only logs.
        let empty = try await StoreFixture.make(driver)
        let store = try empty.openStore()
        try await store.withRunning {
            let logs = CapturedLogs()
            let access = APIKeyAccess(store: store, clock: ManualClock(Self.t0), logger: logs.logger)
            let made = NewAPIKey(name: "ci", now: Self.t0)
            await access.recordUsage(made.record, model: "small", usage: (input: 1, output: 1))
            #expect(logs.text.contains("could not record an API key's usage") && logs.text.contains(made.record.prefix), "\(logs.text)")
            #expect(!logs.text.contains(made.key))
        }
        try await store.close()
    }

    @Test("modules get the keys as app.apiKeys: a route authenticates with them")
    func moduleSeam() async throws {
        struct KeyedModule: KeelModule {
            func register(in app: inout KeelModuleBuilder) {
                let keys = app.apiKeys
                app.route("/test/whoami", .get) { request, _ in
                    do {
                        let key = try await keys.authenticate(request)
                        return Response(status: .ok, body: .init(byteBuffer: ByteBuffer(string: key.name)))
                    } catch let failure as APIKeyFailure {
                        return Response(status: .unauthorized, body: .init(byteBuffer: ByteBuffer(string: failure.outcome)))
                    }
                }
            }
        }
        try await withTestApp(modules: [KeyedModule()]) { app, client in
            let made = NewAPIKey(name: "module", now: Date())
            try await app.store.apiKeys.createKey(made.record)
            let ok = try await client.send(.get, "/test/whoami", token: made.key)
            #expect(ok.status == .ok && ok.text == "module")
            let missing = try await client.send(.get, "/test/whoami")
            #expect(missing.status == .unauthorized && missing.text == "missing")
        }
    }
}

/// A logger whose lines (message and metadata) are kept, to check what reaches a log.
final class CapturedLogs: Sendable {
    private let lines = Mutex<[String]>([])

    var logger: Logger {
        Logger(label: "captured") { _ in Handler(logs: self) }
    }

    var text: String { self.lines.withLock { $0.joined(separator: "\n") } }

    func append(_ line: String) { self.lines.withLock { $0.append(line) } }

    struct Handler: LogHandler {
        let logs: CapturedLogs
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { self.metadata[key] }
            set { self.metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            let merged = self.metadata.merging(event.metadata ?? [:]) { $1 }
            self.logs.append("\(event.level) \(event.message) \(merged.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "))")
        }
    }
}
