import KeelCore

/// The SQLite schema, one migration per version. Times are integer
/// milliseconds since 1970, as in the PostgreSQL schema.
enum SQLiteSchema {
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
                    version INTEGER NOT NULL,
                    created_at INTEGER NOT NULL,
                    last_seen_at INTEGER NOT NULL,
                    expires_at INTEGER NOT NULL
                )
                """,
                "CREATE INDEX keel_sessions_expires_at ON keel_sessions (expires_at)",
            ]
        )
    ]

    static let latestVersion = KeelCore.latestVersion(of: migrations)
}
