import Foundation
import HTTPTypes
import HummingbirdTesting
import KeelCore
import KeelServer
import NIOCore
import Testing

/// Runs `body` against an in-process Keel application on a fresh SQLite store.
func withTestApp<T: Sendable>(
    clock: any KeelClock = SystemClock(),
    configure: (inout KeelConfiguration) -> Void = { _ in },
    runJobs: Bool = false,
    uploadHooks: UploadHooks = UploadHooks(),
    modules: [any KeelModule] = KeelApplication.standardModules,
    _ body: @escaping @Sendable (KeelApplication, any TestClientProtocol) async throws -> T
) async throws -> T {
    let fixture = try await StoreFixture.make(.sqlite)
    var configuration = KeelConfiguration.forTests(store: fixture.location)
    configure(&configuration)
    let frozen = configuration
    return try await fixture.withStore { store in
        let app = try await KeelApplication.build(
            configuration: frozen, store: store, logger: TestEnvironment.logger, clock: clock, uploadHooks: uploadHooks, modules: modules)
        guard runJobs else {
            return try await app.http.test(.router) { client in try await body(app, client) }
        }
        // The change feed, the workers and the janitor, as `keel serve` runs them.
        return try await withThrowingTaskGroup(of: T?.self) { group in
            for service in app.background {
                group.addTask {
                    try await service.run()
                    return nil
                }
            }
            defer { group.cancelAll() }
            return try await app.http.test(.router) { client in try await body(app, client) }
        }
    }
}

extension TestClientProtocol {
    func send(
        _ method: HTTPRequest.Method,
        _ uri: String,
        token: String? = nil,
        headers: HTTPFields = [:],
        body: String? = nil,
        contentType: String? = "application/json"
    ) async throws -> TestResponse {
        var fields = headers
        if let token { fields[.authorization] = "Bearer \(token)" }
        if body != nil, let contentType { fields[.contentType] = contentType }
        return try await self.execute(uri: uri, method: method, headers: fields, body: body.map { ByteBuffer(string: $0) })
    }

    /// Creates a session and returns its token.
    func createSession(data: String? = nil) async throws -> String {
        let response = try await self.send(.post, "/api/session", body: data.map { #"{"data":\#($0)}"# })
        #expect(response.status == .created)
        return try #require(response.json["token"]?.stringValue)
    }
}

extension TestResponse {
    var text: String { String(buffer: self.body) }

    var json: [String: JSONValue] {
        (try? JSONValue.parse(Array(self.text.utf8)))?.objectValue ?? [:]
    }

    /// The `error.code` of a Keel error body.
    var errorCode: String? {
        self.json["error"]?.objectValue?["code"]?.stringValue
    }
}


extension KeelConfiguration {
    /// Defaults for in-process tests: the store's own location (so upload
    /// bytes go beside the test's SQLite file, not under the current
    /// directory), the demo job type, and no quotas, which the tests of
    /// quotas turn on themselves.
    static func forTests(store: StoreLocation) -> KeelConfiguration {
        var configuration = KeelConfiguration()
        configuration.instanceID = "test-instance"
        configuration.store = store
        configuration.demoJobs = true
        configuration.quotas.sessionCreatesPerMinute = 0
        configuration.quotas.activeJobsPerSession = 0
        return configuration
    }
}
