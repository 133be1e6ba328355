import Foundation
import GRDB
import HTTPTypes
import Hummingbird
import KeelCore
import KeelPostgres
import KeelServer
import NIOCore
import PostgresNIO
import Testing

/// `keel keys create/list/revoke` against a store, as an operator runs them.
@Suite("keel keys", .timeLimit(.minutes(5)))
struct KeysCommandTests {
    static func keel(_ arguments: [String], store: String) async throws -> (status: Int32, output: String) {
        try await KeelProcess.run(["keys"] + arguments + ["--store", store])
    }

    /// Every row of the key tables as text, read straight from the database.
    static func storedText(_ fixture: StoreFixture) async throws -> String {
        switch fixture.location {
        case .sqlite(let path):
            let queue = try DatabaseQueue(path: path)
            let text = try await queue.read { db in
                try (Row.fetchAll(db, sql: "SELECT * FROM keel_api_keys") + Row.fetchAll(db, sql: "SELECT * FROM keel_api_key_usage"))
                    .map(\.description).joined(separator: "\n")
            }
            try queue.close()
            return text
        case .postgres(let url):
            let store = try PostgresStore(url: url, logger: TestEnvironment.logger)
            return try await store.withRunning {
                try await store.ping()  // waits until the pool runs
                var lines: [String] = []
                for table in ["keel_api_keys", "keel_api_key_usage"] {
                    let rows = try await store.client.query("SELECT row_to_json(t)::text FROM \(unescaped: table) t", logger: TestEnvironment.logger)
                    for try await line in rows.decode(String.self) { lines.append(line) }
                }
                return lines.joined(separator: "\n")
            }
        }
    }

    static func authenticate(_ key: String, on fixture: StoreFixture) async throws -> Result<APIKey, APIKeyFailure> {
        try await fixture.withStore { store in
            let access = APIKeyAccess(store: store, logger: TestEnvironment.logger)
            var fields = HTTPFields()
            fields[.authorization] = "Bearer \(key)"
            let request = Request(
                head: HTTPRequest(method: .get, scheme: "http", authority: "127.0.0.1", path: "/v1/models", headerFields: fields),
                body: RequestBody(buffer: ByteBuffer()))
            do {
                return .success(try await access.authenticate(request))
            } catch let failure as APIKeyFailure {
                return .failure(failure)
            }
        }
    }

    @Test("create prints the key on its last line and stores only its hash; list shows name and prefix; revoke by name", arguments: Driver.available)
    func createListRevoke(driver: Driver) async throws {
        let fixture = try await StoreFixture.make(driver)
        let store = KeelProcess.argument(for: fixture.location)

        let created = try await Self.keel(["create", "--name", "ci", "--expires", "30d", "--rpm", "600"], store: store)
        #expect(created.status == 0, "\(created.output)")
        #expect(created.output.hasSuffix("\n") && !created.output.hasSuffix("\n\n"), "nothing after the key: \(created.output)")
        let key = String(try #require(created.output.split(separator: "\n").last))
        #expect(key.hasPrefix("sk-keel-") && key.count == 40 && key.dropFirst(8).allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber) }, "\(key)")
        #expect(created.output.contains("created key \"ci\"") && created.output.contains("requests per minute: 600"), "\(created.output)")
        #expect(created.output.components(separatedBy: key).count == 2, "the key is printed once")

        // The store has the hash and the prefix, never the key.
        let stored = try await fixture.withStore { try await $0.apiKeys.keys() }
        #expect(stored.count == 1)
        let record = try #require(stored.first)
        #expect(record.name == "ci" && record.hash == APIKeyAccess.hash(key) && record.prefix == String(key.prefix(12)))
        #expect(record.requestsPerMinute == 600 && record.revokedAt == nil)
        let expiresIn = try #require(record.expiresAt).timeIntervalSince(record.createdAt)
        #expect(abs(expiresIn - 30 * 86_400) < 1, "\(expiresIn)")
        let rows = try await Self.storedText(fixture)
        #expect(rows.contains(record.hash) && !rows.contains(key) && !rows.contains(key.dropFirst(12)), "\(rows)")
        if case .sqlite(let path) = fixture.location {
            for file in [path, path + "-wal"] {
                let bytes = (try? Data(contentsOf: URL(fileURLWithPath: file))) ?? Data()
                #expect(bytes.range(of: Data(key.dropFirst(12).utf8)) == nil, "the key's secret part is in \(file)")
            }
        }
        #expect(try await Self.authenticate(key, on: fixture).get().id == record.id, "the printed key authenticates")

        // The name is taken while the key lives.
        let again = try await Self.keel(["create", "--name", "ci"], store: store)
        #expect(again.status == 1 && again.output.contains("A key named 'ci' exists and is not revoked"), "\(again.output)")
        #expect(!again.output.contains("sk-keel-"), "\(again.output)")
        let second = try await Self.keel(["create", "--name", "batch", "--expires", "2099-01-01T00:00:00Z"], store: store)
        #expect(second.status == 0, "\(second.output)")
        let secondKey = String(try #require(second.output.split(separator: "\n").last))

        let listed = try await Self.keel(["list"], store: store)
        #expect(listed.status == 0, "\(listed.output)")
        for text in ["NAME", "PREFIX", "ci", "batch", record.prefix, String(secondKey.prefix(12)), record.id, "2099-01-01T00:00:00Z", "600", "active"] {
            #expect(listed.output.contains(text), "missing \(text) in\n\(listed.output)")
        }
        #expect(!listed.output.contains(key) && !listed.output.contains(secondKey), "\(listed.output)")
        let lines = listed.output.split(separator: "\n").filter { $0.hasPrefix("key_") }
        #expect(lines.count == 2 && lines.first?.contains("batch") == true, "newest first:\n\(listed.output)")

        let json = try await Self.keel(["list", "--json"], store: store)
        #expect(json.status == 0, "\(json.output)")
        let jsonLine = try #require(json.output.split(separator: "\n").last)
        let array = try #require(try JSONValue.parse(Array(jsonLine.utf8)).arrayValue)
        #expect(array.compactMap { $0.objectValue?["name"]?.stringValue } == ["batch", "ci"], "\(json.output)")
        #expect(array.last?.objectValue?["prefix"]?.stringValue == record.prefix && !json.output.contains(key))

        // Revoked by name: refused from the next request; again: already revoked; unknown: exit 1.
        let revoked = try await Self.keel(["revoke", "ci"], store: store)
        #expect(revoked.status == 0 && revoked.output.contains("revoked key \"ci\" (\(record.id)"), "\(revoked.output)")
        #expect(try await Self.authenticate(key, on: fixture) == .failure(.revoked))
        let twice = try await Self.keel(["revoke", "ci"], store: store)
        #expect(twice.status == 0 && twice.output.contains("already revoked"), "\(twice.output)")
        let byID = try await Self.keel(["revoke", record.id], store: store)
        #expect(byID.status == 0 && byID.output.contains("already revoked"), "\(byID.output)")
        let unknown = try await Self.keel(["revoke", "nobody"], store: store)
        #expect(unknown.status == 1 && unknown.output.contains("No API key has the id or name \"nobody\""), "\(unknown.output)")
        let afterRevoke = try await Self.keel(["list"], store: store)
        #expect(afterRevoke.output.split(separator: "\n").contains { $0.contains(record.id) && $0.contains("revoked") }, "\(afterRevoke.output)")

        // A revoked key's name can be used again.
        let reused = try await Self.keel(["create", "--name", "ci"], store: store)
        #expect(reused.status == 0, "\(reused.output)")
        #expect(try await fixture.withStore { try await $0.apiKeys.keys() }.map(\.name) == ["ci", "batch", "ci"])
    }

    @Test("bad arguments exit 2 with the reason, and store nothing", arguments: Driver.available)
    func badArguments(driver: Driver) async throws {
        let fixture = try await StoreFixture.make(driver)
        let store = KeelProcess.argument(for: fixture.location)
        let cases: [([String], String)] = [
            (["create"], "needs --name"),
            (["create", "--name", "two words"], "is not a usable key name"),
            (["create", "--name", "key_abc"], "is not a usable key name"),
            (["create", "--name", "ci", "--expires", "soon"], "is neither a duration nor a time"),
            (["create", "--name", "ci", "--expires", "2001-01-01T00:00:00Z"], "is in the past"),
            (["create", "--name", "ci", "--expires", "0s"], "must be longer than zero"),
            (["create", "--name", "ci", "--rpm", "0"], "must be a whole number from 1"),
            (["create", "--name", "ci", "--rpm", "many"], "must be a whole number from 1"),
            (["revoke"], "needs a key's name or id"),
            (["revoke", " "], "needs a key's name or id"),
        ]
        for (arguments, message) in cases {
            let result = try await Self.keel(arguments, store: store)
            #expect(result.status == 2, "\(arguments): \(result.output)")
            #expect(result.output.contains("error: ") && result.output.contains(message), "\(arguments): \(result.output)")
            #expect(!result.output.contains("sk-keel-"), "\(arguments): \(result.output)")
        }
        let listed = try await Self.keel(["list"], store: store)
        #expect(listed.status == 0 && listed.output.contains("no API keys"), "\(listed.output)")
    }
}
