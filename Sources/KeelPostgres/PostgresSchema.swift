import KeelCore

/// The PostgreSQL schema, one migration per version, identical in meaning to
/// the SQLite schema. Times are BIGINT milliseconds since 1970.
enum PostgresSchema {
    static let migrations: [Migration] = [
        Migration(
            version: 1,
            name: "sessions",
            statements: [
                """
                CREATE TABLE keel_meta (
                    key TEXT PRIMARY KEY,
                    value TEXT NOT NULL
                )
                """,
                """
                CREATE TABLE keel_sessions (
                    id TEXT PRIMARY KEY,
                    data TEXT NOT NULL,
                    version BIGINT NOT NULL,
                    created_at BIGINT NOT NULL,
                    last_seen_at BIGINT NOT NULL,
                    expires_at BIGINT NOT NULL
                )
                """,
                "CREATE INDEX keel_sessions_expires_at ON keel_sessions (expires_at)",
            ]
        )
    ]

    static let latestVersion = KeelCore.latestVersion(of: migrations)

    /// Key of the advisory lock that serializes migrations across instances.
    static let migrationLockKey: Int64 = 0x6B65_656C_6D69_6772  // "keelmigr"
}
