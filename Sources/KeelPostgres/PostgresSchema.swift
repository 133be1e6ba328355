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
                    created_at BIGINT NOT NULL,
                    updated_at BIGINT NOT NULL,
                    run_at BIGINT NOT NULL,
                    started_at BIGINT,
                    finished_at BIGINT,
                    expires_at BIGINT,
                    lease_owner TEXT,
                    lease_token TEXT,
                    lease_expires_at BIGINT,
                    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
                    last_seq BIGINT NOT NULL DEFAULT 0
                )
                """,
                "CREATE UNIQUE INDEX keel_jobs_idempotency ON keel_jobs (session_id, idempotency_key) WHERE idempotency_key IS NOT NULL",
                "CREATE INDEX keel_jobs_claim ON keel_jobs (status, run_at)",
                "CREATE INDEX keel_jobs_session ON keel_jobs (session_id, created_at)",
                "CREATE INDEX keel_jobs_expires_at ON keel_jobs (expires_at) WHERE expires_at IS NOT NULL",
                """
                CREATE TABLE keel_job_events (
                    job_id TEXT NOT NULL,
                    seq BIGINT NOT NULL,
                    type TEXT NOT NULL,
                    data TEXT NOT NULL,
                    created_at BIGINT NOT NULL,
                    PRIMARY KEY (job_id, seq)
                )
                """,
                """
                CREATE TABLE keel_leases (
                    name TEXT PRIMARY KEY,
                    owner TEXT NOT NULL,
                    expires_at BIGINT NOT NULL
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
                    length BIGINT,
                    upload_offset BIGINT NOT NULL,
                    metadata TEXT NOT NULL,
                    status TEXT NOT NULL,
                    created_at BIGINT NOT NULL,
                    updated_at BIGINT NOT NULL,
                    expires_at BIGINT,
                    completed_at BIGINT,
                    announced_at BIGINT,
                    sha256 TEXT,
                    lease_owner TEXT,
                    lease_token TEXT,
                    lease_renewed_at BIGINT
                )
                """,
                "CREATE INDEX keel_uploads_expires_at ON keel_uploads (expires_at) WHERE expires_at IS NOT NULL",
                "CREATE INDEX keel_uploads_ended ON keel_uploads (updated_at) WHERE status IN ('terminated', 'expired')",
                "CREATE INDEX keel_uploads_unannounced ON keel_uploads (completed_at) WHERE status = 'complete' AND announced_at IS NULL",
                """
                CREATE TABLE keel_upload_segments (
                    upload_id TEXT NOT NULL,
                    start BIGINT NOT NULL,
                    length BIGINT NOT NULL,
                    blob_key TEXT NOT NULL,
                    PRIMARY KEY (upload_id, start)
                )
                """,
                """
                CREATE TABLE keel_upload_blobs (
                    blob_key TEXT NOT NULL,
                    part INTEGER NOT NULL,
                    upload_id TEXT NOT NULL,
                    data BYTEA NOT NULL,
                    PRIMARY KEY (blob_key, part)
                )
                """,
                "ALTER TABLE keel_upload_blobs ALTER COLUMN data SET STORAGE EXTERNAL",
                "CREATE INDEX keel_upload_blobs_upload ON keel_upload_blobs (upload_id)",
            ]
        ),
        Migration(
            version: 5,
            name: "job indexes by status",
            statements: [
                // Every job passes through queued, running and an end state, and
                // every change of status is a new row version with an entry in
                // each index the row is in. One index on (status, …) kept all
                // three, so the claims' and completions' scans walked the dead
                // entries of the jobs that had moved on, and a completion, whose
                // planner chose that index over the primary key, read every
                // running job. Partial indexes hold only the rows that can match:
                // queued jobs in claim order, running jobs by lease expiry (the
                // rescue). A finished job is in neither.
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
                    window_start BIGINT NOT NULL,
                    count BIGINT NOT NULL,
                    expires_at BIGINT NOT NULL,
                    PRIMARY KEY (key, window_start)
                )
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
                    byte_size BIGINT NOT NULL,
                    status TEXT NOT NULL,
                    title TEXT,
                    job_id TEXT,
                    ingest_attempt BIGINT NOT NULL DEFAULT 0,
                    error_code TEXT,
                    error_message TEXT,
                    section_count BIGINT NOT NULL DEFAULT 0,
                    character_count BIGINT NOT NULL DEFAULT 0,
                    passage_count BIGINT NOT NULL DEFAULT 0,
                    page_count BIGINT,
                    created_at BIGINT NOT NULL,
                    updated_at BIGINT NOT NULL
                )
                """,
                // One document per upload and session: asking twice is idempotent.
                "CREATE UNIQUE INDEX keel_documents_upload ON keel_documents (session_id, upload_id)",
                "CREATE INDEX keel_documents_list ON keel_documents (session_id, created_at DESC, id DESC)",
                """
                CREATE TABLE keel_document_sections (
                    document_id TEXT NOT NULL,
                    idx BIGINT NOT NULL,
                    title TEXT NOT NULL,
                    level BIGINT NOT NULL,
                    path TEXT NOT NULL,
                    body TEXT NOT NULL,
                    character_count BIGINT NOT NULL,
                    first_page BIGINT,
                    last_page BIGINT,
                    PRIMARY KEY (document_id, idx)
                )
                """,
                // The search vector is computed by the database from the
                // heading (weight A) and the text (weight B), and indexed by GIN.
                """
                CREATE TABLE keel_document_passages (
                    id BIGSERIAL PRIMARY KEY,
                    document_id TEXT NOT NULL,
                    session_id TEXT NOT NULL,
                    section_index BIGINT NOT NULL,
                    ordinal BIGINT NOT NULL,
                    heading TEXT NOT NULL,
                    body TEXT NOT NULL,
                    search tsvector GENERATED ALWAYS AS (
                        setweight(to_tsvector('english'::regconfig, heading), 'A') || setweight(to_tsvector('english'::regconfig, body), 'B')
                    ) STORED
                )
                """,
                "CREATE INDEX keel_document_passages_document ON keel_document_passages (document_id)",
                "CREATE INDEX keel_document_passages_search ON keel_document_passages USING GIN (search)",
                // With many sessions, the planner starts from the session's
                // passages and rechecks the match (98 ms → 3 ms measured with
                // 100 sessions of 1,000 passages).
                "CREATE INDEX keel_document_passages_session ON keel_document_passages (session_id)",
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
                    cooldown_until BIGINT,
                    cooldown_reason TEXT,
                    consecutive_failures BIGINT NOT NULL DEFAULT 0,
                    last_failure_at BIGINT,
                    last_success_at BIGINT
                )
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
                    message_count BIGINT NOT NULL DEFAULT 0,
                    created_at BIGINT NOT NULL,
                    updated_at BIGINT NOT NULL
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
                    seq BIGINT NOT NULL,
                    role TEXT NOT NULL,
                    content TEXT NOT NULL,
                    status TEXT NOT NULL,
                    job_id TEXT,
                    attempt BIGINT NOT NULL DEFAULT 0,
                    metadata TEXT NOT NULL,
                    created_at BIGINT NOT NULL
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
                    created_at BIGINT NOT NULL,
                    updated_at BIGINT NOT NULL
                )
                """,
                // A document's analyses newest first (and all of them, when the document is deleted).
                "CREATE INDEX keel_analyses_document ON keel_analyses (document_id, session_id, created_at DESC, id DESC)",
                """
                CREATE TABLE keel_analysis_sections (
                    analysis_id TEXT NOT NULL,
                    section_index BIGINT NOT NULL,
                    title TEXT NOT NULL,
                    content TEXT NOT NULL,
                    metadata TEXT NOT NULL,
                    completed_at BIGINT NOT NULL,
                    PRIMARY KEY (analysis_id, section_index)
                )
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
                    created_at BIGINT NOT NULL,
                    expires_at BIGINT,
                    revoked_at BIGINT,
                    requests_per_minute BIGINT
                )
                """,
                // A name names one key not revoked; a revoked key's name may be reused.
                "CREATE UNIQUE INDEX keel_api_keys_live_name ON keel_api_keys (name) WHERE revoked_at IS NULL",
                // One row per key and model, added to by one upsert per request.
                """
                CREATE TABLE keel_api_key_usage (
                    key_id TEXT NOT NULL,
                    model TEXT NOT NULL,
                    requests BIGINT NOT NULL,
                    input_tokens BIGINT NOT NULL,
                    output_tokens BIGINT NOT NULL,
                    last_used_at BIGINT NOT NULL,
                    PRIMARY KEY (key_id, model)
                )
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
                    started_at BIGINT NOT NULL,
                    seen_at BIGINT NOT NULL,
                    figures TEXT NOT NULL
                )
                """,
                // The dashboard's counts of jobs that ended lately.
                "CREATE INDEX keel_jobs_finished_at ON keel_jobs (finished_at) WHERE finished_at IS NOT NULL",
            ]
        ),
    ]

    /// NOTIFY channel: payload is the id of a running job someone asked to stop.
    static let cancelsChannel = "keel_cancels"
    /// NOTIFY channel: payload is a job id whose log grew.
    static let eventsChannel = "keel_events"
    /// NOTIFY channel: payload is a job type that has a job ready to claim.
    static let jobsChannel = "keel_jobs"

    static let latestVersion = KeelCore.latestVersion(of: migrations)

    /// Key of the advisory lock that serializes migrations across instances.
    static let migrationLockKey: Int64 = 0x6B65_656C_6D69_6772  // "keelmigr"
}
