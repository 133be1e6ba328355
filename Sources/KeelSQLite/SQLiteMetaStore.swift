import GRDB
import KeelCore

struct SQLiteMetaStore: MetaStore {
    let pool: DatabasePool

    func metaValue(forKey key: String) async throws -> String? {
        try await withStoreErrors {
            try await self.pool.read { db in
                try String.fetchOne(cached: db, sql: "SELECT value FROM keel_meta WHERE key = ?", arguments: [key])
            }
        }
    }

    func insertMetaValueIfAbsent(_ value: String, forKey key: String) async throws -> String {
        try await withStoreErrors {
            try await self.pool.write { db in
                try db.executeCached(sql: "INSERT INTO keel_meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING", arguments: [key, value])
                return try String.fetchOne(cached: db, sql: "SELECT value FROM keel_meta WHERE key = ?", arguments: [key]) ?? value
            }
        }
    }
}
