import KeelCore
import Logging
import PostgresNIO

struct PostgresMetaStore: MetaStore {
    let client: PostgresClient
    let logger: Logger
    let started: StartSignal

    func metaValue(forKey key: String) async throws -> String? {
        try await self.storeOperation {
            let rows = try await self.client.query("SELECT value FROM keel_meta WHERE key = \(key)", logger: self.logger)
            var value: String?
            for try await stored in rows.decode(String.self) { value = stored }
            return value
        }
    }

    func insertMetaValueIfAbsent(_ value: String, forKey key: String) async throws -> String {
        try await self.storeOperation {
            try await self.client.query(
                "INSERT INTO keel_meta (key, value) VALUES (\(key), \(value)) ON CONFLICT (key) DO NOTHING",
                logger: self.logger
            )
            return try await self.metaValue(forKey: key) ?? value
        }
    }

    @discardableResult
    private func storeOperation<T>(_ body: () async throws -> T) async throws -> T {
        await self.started.wait()
        return try await withStoreErrors(body)
    }
}
