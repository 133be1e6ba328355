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
        ),
        Migration(
            version: 2,
            name: "jobs",
            statements: [
                """
                CREATE TABLE keel_jobs (
                    id TEXT PRIMARY KEY,
                    session_id TEXT NOT NULL,
                    type TEXT NOT NULL,
                    input TEXT NOT NULL,
                    status TEXT NOT NULL,
                    progress TEXT NOT NULL,
                    result TEXT,
                    error TEXT,
                    attempts INTEGER NOT NULL,
                    max_attempts INTEGER NOT NULL,
                    idempotency_key TEXT,
                    created_at INTEGER NOT NULL,
                    updated_at INTEGER NOT NULL,
                    run_at INTEGER NOT NULL,
                    started_at INTEGER,
                    finished_at INTEGER,
                    expires_at INTEGER,
                    lease_owner TEXT,
                    lease_token TEXT,
                    lease_expires_at INTEGER,
                    cancel_requested INTEGER NOT NULL DEFAULT 0,
                    last_seq INTEGER NOT NULL DEFAULT 0
                )
                """,
                "CREATE UNIQUE INDEX keel_jobs_idempotency ON keel_jobs (session_id, idempotency_key) WHERE idempotency_key IS NOT NULL",
                "CREATE INDEX keel_jobs_claim ON keel_jobs (status, run_at)",
                "CREATE INDEX keel_jobs_session ON keel_jobs (session_id, created_at)",
                "CREATE INDEX keel_jobs_expires_at ON keel_jobs (expires_at) WHERE expires_at IS NOT NULL",
                """
                CREATE TABLE keel_job_events (
                    job_id TEXT NOT NULL,
                    seq INTEGER NOT NULL,
                    type TEXT NOT NULL,
                    data TEXT NOT NULL,
                    created_at INTEGER NOT NULL,
                    PRIMARY KEY (job_id, seq)
                )
                """,
                """
                CREATE TABLE keel_leases (
                    name TEXT PRIMARY KEY,
                    owner TEXT NOT NULL,
                    expires_at INTEGER NOT NULL
                )
                """,
            ]
        ),
        Migration(
            version: 3,
            name: "job indexes in claim and list order",
            statements: [
                // Claims take the oldest due job: (run_at, created_at) straight from the index, no sort of the queue.
                "DROP INDEX keel_jobs_claim",
                "CREATE INDEX keel_jobs_claim ON keel_jobs (status, run_at, created_at)",
                // Lists page newest first with id as the tie-break: straight from the index too.
                "DROP INDEX keel_jobs_session",
                "CREATE INDEX keel_jobs_session ON keel_jobs (session_id, created_at, id)",
            ]
        ),
        Migration(
            version: 4,
            name: "uploads",
            statements: [
                """
                CREATE TABLE keel_uploads (
                    id TEXT PRIMARY KEY,
                    session_id TEXT NOT NULL,
                    length INTEGER,
                    upload_offset INTEGER NOT NULL,
                    metadata TEXT NOT NULL,
                    status TEXT NOT NULL,
                    created_at INTEGER NOT NULL,
                    updated_at INTEGER NOT NULL,
                    expires_at INTEGER,
                    completed_at INTEGER,
                    announced_at INTEGER,
                    sha256 TEXT,
                    lease_owner TEXT,
                    lease_token TEXT,
                    lease_renewed_at INTEGER
                )
                """,
                "CREATE INDEX keel_uploads_expires_at ON keel_uploads (expires_at) WHERE expires_at IS NOT NULL",
                "CREATE INDEX keel_uploads_ended ON keel_uploads (updated_at) WHERE status IN ('terminated', 'expired')",
                "CREATE INDEX keel_uploads_unannounced ON keel_uploads (completed_at) WHERE status = 'complete' AND announced_at IS NULL",
                """
                CREATE TABLE keel_upload_segments (
                    upload_id TEXT NOT NULL,
                    start INTEGER NOT NULL,
                    length INTEGER NOT NULL,
                    blob_key TEXT NOT NULL,
                    PRIMARY KEY (upload_id, start)
                )
                """,
            ]
        ),
        Migration(
            version: 5,
            name: "job indexes by status",
            statements: [
                // As on PostgreSQL: an index holds only the jobs that a claim
                // (queued, in claim order) or a rescue (running, by lease expiry)
                // can match, not every job that ever passed through those states.
                "DROP INDEX keel_jobs_claim",
                "CREATE INDEX keel_jobs_queued ON keel_jobs (run_at, created_at) WHERE status = 'queued'",
                "CREATE INDEX keel_jobs_running ON keel_jobs (lease_expires_at) WHERE status = 'running'",
            ]
        ),
        Migration(
            version: 6,
            name: "rate windows",
            statements: [
                // Fixed-window counters for rate limits every instance shares.
                """
                CREATE TABLE keel_rate_windows (
                    key TEXT NOT NULL,
                    window_start INTEGER NOT NULL,
                    count INTEGER NOT NULL,
                    expires_at INTEGER NOT NULL,
                    PRIMARY KEY (key, window_start)
                ) WITHOUT ROWID
                """,
                "CREATE INDEX keel_rate_windows_expires_at ON keel_rate_windows (expires_at)",
                // The janitor's look for finished uploads whose session ended.
                "CREATE INDEX keel_uploads_completed ON keel_uploads (completed_at) WHERE status = 'complete'",
            ]
        ),
        Migration(
            version: 7,
            name: "documents",
            statements: [
                """
                CREATE TABLE keel_documents (
                    id TEXT PRIMARY KEY,
                    session_id TEXT NOT NULL,
                    upload_id TEXT NOT NULL,
                    filename TEXT NOT NULL,
                    format TEXT NOT NULL,
                    media_type TEXT NOT NULL,
                    byte_size INTEGER NOT NULL,
                    status TEXT NOT NULL,
                    title TEXT,
                    job_id TEXT,
                    ingest_attempt INTEGER NOT NULL DEFAULT 0,
                    error_code TEXT,
                    error_message TEXT,
                    section_count INTEGER NOT NULL DEFAULT 0,
                    character_count INTEGER NOT NULL DEFAULT 0,
                    passage_count INTEGER NOT NULL DEFAULT 0,
                    page_count INTEGER,
                    created_at INTEGER NOT NULL,
                    updated_at INTEGER NOT NULL
                )
                """,
                // One document per upload and session: asking twice is idempotent.
                "CREATE UNIQUE INDEX keel_documents_upload ON keel_documents (session_id, upload_id)",
                "CREATE INDEX keel_documents_list ON keel_documents (session_id, created_at DESC, id DESC)",
                """
                CREATE TABLE keel_document_sections (
                    document_id TEXT NOT NULL,
                    idx INTEGER NOT NULL,
                    title TEXT NOT NULL,
                    level INTEGER NOT NULL,
                    path TEXT NOT NULL,
                    body TEXT NOT NULL,
                    character_count INTEGER NOT NULL,
                    first_page INTEGER,
                    last_page INTEGER,
                    PRIMARY KEY (document_id, idx)
                ) WITHOUT ROWID
                """,
                """
                CREATE TABLE keel_document_passages (
                    id INTEGER PRIMARY KEY,
                    document_id TEXT NOT NULL,
                    session_id TEXT NOT NULL,
                    section_index INTEGER NOT NULL,
                    ordinal INTEGER NOT NULL,
                    heading TEXT NOT NULL,
                    body TEXT NOT NULL
                )
                """,
                "CREATE INDEX keel_document_passages_document ON keel_document_passages (document_id)",
                // The passages' full-text index (external content: the text is
                // stored once, in keel_document_passages). Porter stemming and
                // diacritics folded, like PostgreSQL's english configuration.
                """
                CREATE VIRTUAL TABLE keel_passages_fts USING fts5(
                    heading, body, content='keel_document_passages', content_rowid='id',
                    tokenize='porter unicode61 remove_diacritics 2'
                )
                """,
            ]
        ),
        Migration(
            version: 8,
            name: "model health",
            statements: [
                // One row per model: cooldowns and failures in a row, shared by every instance.
                """
                CREATE TABLE keel_model_health (
                    model TEXT PRIMARY KEY,
                    cooldown_until INTEGER,
                    cooldown_reason TEXT,
                    consecutive_failures INTEGER NOT NULL DEFAULT 0,
                    last_failure_at INTEGER,
                    last_success_at INTEGER
                ) WITHOUT ROWID
                """,
            ]
        ),
        Migration(
            version: 9,
            name: "chats and analyses",
            statements: [
                """
                CREATE TABLE keel_chats (
                    id TEXT PRIMARY KEY,
                    session_id TEXT NOT NULL,
                    title TEXT NOT NULL,
                    message_count INTEGER NOT NULL DEFAULT 0,
                    created_at INTEGER NOT NULL,
                    updated_at INTEGER NOT NULL
                )
                """,
                // Lists page most recently updated first, id as the tie-break: straight from the index.
                "CREATE INDEX keel_chats_list ON keel_chats (session_id, updated_at DESC, id DESC)",
                // `seq` is the message's place in its chat (1, 2, 3… as stored): the
                // tie-break among messages created in the same millisecond.
                """
                CREATE TABLE keel_chat_messages (
                    id TEXT PRIMARY KEY,
                    chat_id TEXT NOT NULL,
                    seq INTEGER NOT NULL,
                    role TEXT NOT NULL,
                    content TEXT NOT NULL,
                    status TEXT NOT NULL,
                    job_id TEXT,
                    attempt INTEGER NOT NULL DEFAULT 0,
                    metadata TEXT NOT NULL,
                    created_at INTEGER NOT NULL
                )
                """,
                "CREATE INDEX keel_chat_messages_chat ON keel_chat_messages (chat_id, created_at, seq)",
                // One assistant message per reply job (user messages have no job: NULLs never collide).
                "CREATE UNIQUE INDEX keel_chat_messages_job ON keel_chat_messages (chat_id, job_id)",
                """
                CREATE TABLE keel_analyses (
                    id TEXT PRIMARY KEY,
                    session_id TEXT NOT NULL,
                    document_id TEXT NOT NULL,
                    job_id TEXT NOT NULL,
                    instructions TEXT NOT NULL,
                    sections TEXT NOT NULL,
                    chain TEXT,
                    status TEXT NOT NULL,
                    error_code TEXT,
                    error_message TEXT,
                    created_at INTEGER NOT NULL,
                    updated_at INTEGER NOT NULL
                )
                """,
                // A document's analyses newest first (and all of them, when the document is deleted).
                "CREATE INDEX keel_analyses_document ON keel_analyses (document_id, session_id, created_at DESC, id DESC)",
                """
                CREATE TABLE keel_analysis_sections (
                    analysis_id TEXT NOT NULL,
                    section_index INTEGER NOT NULL,
                    title TEXT NOT NULL,
                    content TEXT NOT NULL,
                    metadata TEXT NOT NULL,
                    completed_at INTEGER NOT NULL,
                    PRIMARY KEY (analysis_id, section_index)
                ) WITHOUT ROWID
                """,
            ]
        ),
        Migration(
            version: 10,
            name: "api keys",
            statements: [
                // Keys of the OpenAI-compatible API: only the SHA-256 of a key is kept.
                """
                CREATE TABLE keel_api_keys (
                    id TEXT PRIMARY KEY,
                    name TEXT NOT NULL,
                    hash TEXT NOT NULL UNIQUE,
                    prefix TEXT NOT NULL,
                    created_at INTEGER NOT NULL,
                    expires_at INTEGER,
                    revoked_at INTEGER,
                    requests_per_minute INTEGER
                )
                """,
                // A name names one key not revoked; a revoked key's name may be reused.
                "CREATE UNIQUE INDEX keel_api_keys_live_name ON keel_api_keys (name) WHERE revoked_at IS NULL",
                // One row per key and model, added to by one upsert per request.
                """
                CREATE TABLE keel_api_key_usage (
                    key_id TEXT NOT NULL,
                    model TEXT NOT NULL,
                    requests INTEGER NOT NULL,
                    input_tokens INTEGER NOT NULL,
                    output_tokens INTEGER NOT NULL,
                    last_used_at INTEGER NOT NULL,
                    PRIMARY KEY (key_id, model)
                ) WITHOUT ROWID
                """,
            ]
        ),
        Migration(
            version: 11,
            name: "instances",
            statements: [
                // Each instance's latest report of itself, for the admin dashboard.
                """
                CREATE TABLE keel_instances (
                    id TEXT PRIMARY KEY,
                    version TEXT NOT NULL,
                    started_at INTEGER NOT NULL,
                    seen_at INTEGER NOT NULL,
                    figures TEXT NOT NULL
                )
                """,
                // The dashboard's counts of jobs that ended lately.
                "CREATE INDEX keel_jobs_finished_at ON keel_jobs (finished_at) WHERE finished_at IS NOT NULL",
            ]
        ),
    ]

    static let latestVersion = KeelCore.latestVersion(of: migrations)
}
