import Foundation
import KeelCore
import Logging
import PostgresNIO

struct PostgresRateWindowStore: RateWindowStore {
    let client: PostgresClient
    let logger: Logger
    let started: StartSignal

    func hit(key: String, window: Duration, now: Date) async throws -> RateWindowCount {
        let (start, end) = Self.bounds(window: window, now: now)
        await self.started.wait()
        return try await withStoreErrors {
            let rows = try await self.client.query(
                """
                INSERT INTO keel_rate_windows (key, window_start, count, expires_at) VALUES (\(key), \(start), 1, \(end))
                ON CONFLICT (key, window_start) DO UPDATE SET count = keel_rate_windows.count + 1
                RETURNING count
                """,
                logger: self.logger
            )
            var count: Int64 = 1
            for try await value in rows.decode(Int64.self) { count = value }
            return RateWindowCount(count: Int(count), windowEnds: Date(millisecondsSince1970: end))
        }
    }

    func purgeExpired(now: Date, limit: Int) async throws -> Int {
        await self.started.wait()
        return try await withStoreErrors {
            let rows = try await self.client.query(
                """
                DELETE FROM keel_rate_windows WHERE (key, window_start) IN (
                    SELECT key, window_start FROM keel_rate_windows WHERE expires_at <= \(now.millisecondsSince1970) LIMIT \(limit)
                ) RETURNING 1
                """,
                logger: self.logger
            )
            var count = 0
            for try await _ in rows { count += 1 }
            return count
        }
    }
}
