import Foundation
import GRDB
import KeelCore

struct SQLiteRateWindowStore: RateWindowStore {
    let pool: DatabasePool

    func hit(key: String, window: Duration, now: Date) async throws -> RateWindowCount {
        let (start, end) = Self.bounds(window: window, now: now)
        return try await withStoreErrors {
            try await self.pool.write { db in
                let count = try Int.fetchOne(
                    cached: db,
                    sql: """
                        INSERT INTO keel_rate_windows (key, window_start, count, expires_at) VALUES (?, ?, 1, ?)
                        ON CONFLICT (key, window_start) DO UPDATE SET count = keel_rate_windows.count + 1
                        RETURNING count
                        """,
                    arguments: [key, start, end]
                )
                return RateWindowCount(count: count ?? 1, windowEnds: Date(millisecondsSince1970: end))
            }
        }
    }

    func purgeExpired(now: Date, limit: Int) async throws -> Int {
        try await withStoreErrors {
            try await self.pool.write { db in
                try db.executeCached(
                    sql: """
                        DELETE FROM keel_rate_windows WHERE (key, window_start) IN (
                            SELECT key, window_start FROM keel_rate_windows WHERE expires_at <= ? LIMIT ?)
                        """,
                    arguments: [now.millisecondsSince1970, limit]
                )
                return db.changesCount
            }
        }
    }
}
