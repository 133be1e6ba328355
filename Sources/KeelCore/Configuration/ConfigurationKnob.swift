/// One setting of `keel serve`: its flag, environment variable, config-file
/// key, default and meaning. The single list of knobs drives `--help`, the
/// environment and the config file alike.
public struct ConfigurationKnob: Sendable, Hashable {
    /// The flag name without dashes, also the config-file key.
    public var name: String
    public var defaultDescription: String
    public var summary: String

    public var environmentVariable: String {
        "KEEL_" + self.name.uppercased().replacingOccurrences(of: "-", with: "_")
    }

    /// The `--help` text: what it does, its variable and its default.
    public var help: String {
        "\(self.summary) (env \(self.environmentVariable); default: \(self.defaultDescription))"
    }
}

extension ConfigurationKnob {
    public static let host = Self(name: "host", defaultDescription: "127.0.0.1", summary: "Address to listen on; 0.0.0.0 for every interface.")
    public static let port = Self(name: "port", defaultDescription: "8080", summary: "TCP port to listen on.")
    public static let store = Self(
        name: "store",
        defaultDescription: "sqlite:\(StoreLocation.defaultSQLitePath)",
        summary: "Where state lives: sqlite:PATH, or postgres://user:password@host:5432/db (query: sslmode=disable|prefer|require, pool_size=N)."
    )
    public static let instanceID = Self(name: "instance-id", defaultDescription: "HOST-PID-RANDOM", summary: "Name of this process in Keel-Instance headers, logs and leases.")
    public static let secret = Self(
        name: "secret",
        defaultDescription: "generated once and kept in the store",
        summary: "Comma-separated session signing secrets (at least 32 characters each); the first signs, all verify, for rotation."
    )
    public static let sessionIdleTimeout = Self(name: "session-idle-timeout", defaultDescription: "24h", summary: "A session unused for this long expires.")
    public static let sessionRefreshInterval = Self(
        name: "session-refresh-interval",
        defaultDescription: "60s",
        summary: "Activity extends a session's expiry at most this often, so reads rarely cost a write."
    )
    public static let sessionMaxBytes = Self(name: "session-max-bytes", defaultDescription: "65536", summary: "Largest serialized session data object, in bytes (413 above).")
    public static let cookieSecure = Self(
        name: "cookie-secure",
        defaultDescription: "auto",
        summary: "Secure attribute of the session cookie: auto (when HTTPS, directly or per X-Forwarded-Proto), always, never."
    )
    public static let corsOrigins = Self(
        name: "cors-origins",
        defaultDescription: "none",
        summary: "Comma-separated browser origins allowed to call the API, such as https://app.example.com."
    )
    public static let corsCredentials = Self(
        name: "cors-credentials",
        defaultDescription: "true",
        summary: "Whether allowed origins may send cookies; refused together with origin *."
    )
    public static let corsMaxAge = Self(name: "cors-max-age", defaultDescription: "10m", summary: "How long browsers may cache a preflight answer.")
    public static let maxBodyBytes = Self(name: "max-body-bytes", defaultDescription: "1048576", summary: "Largest JSON request body, in bytes (413 above).")
    public static let listenBacklog = Self(
        name: "listen-backlog",
        defaultDescription: "4096",
        summary: "Connections the kernel queues before the server accepts them (capped by net.core.somaxconn); beyond it, new connections wait for a SYN retry (1 s, 3 s, 7 s…)."
    )
    public static let executor = Self(
        name: "executor",
        defaultDescription: "pool",
        summary: "Where request handlers run: pool (Swift's cooperative threads) or event-loops (the network threads themselves: fewer thread hops, faster short reads on SQLite; slower on PostgreSQL and for bursts of new connections, see docs/benchmarks.md)."
    )
    public static let drainDelay = Self(
        name: "drain-delay",
        defaultDescription: "5s",
        summary: "After SIGTERM, how long /ready answers 503 while requests are still served, so the load balancer notices."
    )
    public static let drainTimeout = Self(
        name: "drain-timeout",
        defaultDescription: "30s",
        summary: "After the drain delay, how long in-flight requests may take before they are cut."
    )
    public static let sqliteBusyTimeout = Self(
        name: "sqlite-busy-timeout",
        defaultDescription: "5s",
        summary: "How long an SQLite writer waits for another process's lock."
    )
    public static let sqliteSynchronous = Self(
        name: "sqlite-synchronous",
        defaultDescription: "normal",
        summary: "SQLite durability: normal survives a process crash or SIGKILL (a power loss may lose the last commits); full also survives power loss, with an fsync per commit."
    )
    public static let sqlitePollInterval = Self(
        name: "sqlite-poll-interval",
        defaultDescription: "10ms",
        summary: "How often each process checks the SQLite file for jobs and events committed by other processes."
    )
    public static let workers = Self(name: "workers", defaultDescription: "4", summary: "Job workers in this process; 0 serves HTTP only (no job of either lane).")
    public static let modelWorkers = Self(
        name: "model-workers",
        defaultDescription: "256",
        summary: "Jobs waiting on a model (chat.reply, document.analyze, openai.response) this process runs at once, beside --workers; 0: they share --workers."
    )
    public static let jobLeaseDuration = Self(
        name: "job-lease-duration",
        defaultDescription: "30s",
        summary: "How long a job stays with a worker that stopped heartbeating (it heartbeats every third of this) before another runs it."
    )
    public static let jobMaxAttempts = Self(name: "job-max-attempts", defaultDescription: "3", summary: "Attempts per job unless the request sets max_attempts.")
    public static let jobRetryBackoff = Self(
        name: "job-retry-backoff",
        defaultDescription: "1s",
        summary: "Delay before a failed job's second attempt, doubled for each further one."
    )
    public static let jobRetryBackoffMax = Self(name: "job-retry-backoff-max", defaultDescription: "5m", summary: "The longest delay between attempts.")
    public static let jobResultTTL = Self(
        name: "job-result-ttl",
        defaultDescription: "7d",
        summary: "How long finished jobs, their results and their events stay readable (404 afterwards)."
    )
    public static let workerPollInterval = Self(
        name: "worker-poll-interval",
        defaultDescription: "1s",
        summary: "How often an idle worker checks for due jobs without being woken (retries after backoff; a safety net)."
    )
    public static let janitorInterval = Self(
        name: "janitor-interval",
        defaultDescription: "5s",
        summary: "How often the janitor (one instance at a time) rescues jobs of dead workers and purges expired jobs and sessions."
    )
    public static let sseHeartbeat = Self(
        name: "sse-heartbeat",
        defaultDescription: "15s",
        summary: "An idle event stream gets a comment this often; keep it below every proxy's idle timeout."
    )
    public static let sseRetry = Self(name: "sse-retry", defaultDescription: "2s", summary: "The retry: delay event-stream clients wait before reconnecting.")
    public static let sseBatchSize = Self(
        name: "sse-batch-size",
        defaultDescription: "256",
        summary: "Events read and written per batch on a stream: what a slow client can make the server hold."
    )
    public static let uploadBlobs = Self(
        name: "upload-blobs",
        defaultDescription: "auto",
        summary: "Where upload bytes live: auto (a directory beside the SQLite file, or the database on PostgreSQL), dir:PATH (a shared volume for several machines), or database (PostgreSQL only)."
    )
    public static let uploadMaxSize = Self(name: "upload-max-size", defaultDescription: "10737418240 (10 GiB)", summary: "Largest resumable upload, in bytes (413 above).")
    public static let uploadExpiry = Self(
        name: "upload-expiry",
        defaultDescription: "24h",
        summary: "An unfinished upload with no bytes for this long expires; the janitor deletes its bytes."
    )
    public static let uploadRetention = Self(name: "upload-retention", defaultDescription: "0 (keep)", summary: "How long finished uploads are kept; 0 keeps them until deleted.")
    public static let uploadCommitBytes = Self(
        name: "upload-commit-bytes",
        defaultDescription: "8388608 (8 MiB)",
        summary: "A PATCH syncs and commits what it received at least this often, so an interrupted PATCH keeps most of its bytes."
    )
    public static let uploadLockTimeout = Self(
        name: "upload-lock-timeout",
        defaultDescription: "5s",
        summary: "A PATCH that wrote nothing for this long (its instance died or its client stalled) is taken over by a newer PATCH; sooner, the newer one gets 423 and retries."
    )
    public static let fileMaxBytes = Self(
        name: "file-max-bytes",
        defaultDescription: "10485760 (10 MB)",
        summary: "Largest body of a multipart POST /api/files; bigger files go through the resumable /api/uploads."
    )
    public static let headerTimeout = Self(
        name: "header-timeout",
        defaultDescription: "10s",
        summary: "A request's headers must arrive within this long of its first byte; slower clients get 408 and are disconnected."
    )
    public static let idleTimeout = Self(
        name: "idle-timeout",
        defaultDescription: "75s",
        summary: "A keep-alive connection with no request for this long is closed; keep it above the load balancer's idle timeout."
    )
    public static let bodyTimeout = Self(
        name: "body-timeout",
        defaultDescription: "30s",
        summary: "A request body that receives no byte for this long is cut: the connection closes (an upload keeps the bytes it committed)."
    )
    public static let lingerTimeout = Self(
        name: "linger-timeout",
        defaultDescription: "5s",
        summary: "After an early answer (401, 413…) to a request whose body is still arriving, how long the rest is read and dropped before the connection closes."
    )
    public static let maxConnections = Self(
        name: "max-connections",
        defaultDescription: "0 (the file descriptor limit less 256)",
        summary: "Open connections this process serves at once; further ones wait in the listen backlog until one closes."
    )
    public static let opsToken = Self(
        name: "ops-token",
        defaultDescription: "none (loopback clients only)",
        summary: "Bearer token that /metrics and /system-health require; without it they answer only clients on loopback that came through no proxy."
    )
    public static let adminToken = Self(
        name: "admin-token",
        defaultDescription: "none (/admin is 404)",
        summary: "Bearer token of the admin dashboard, /admin and /api/admin/overview (at least 16 characters); without it both answer 404."
    )
    public static let instanceReportInterval = Self(
        name: "instance-report-interval",
        defaultDescription: "5s",
        summary: "How often each instance writes its figures (open streams, connections, workers, models) to the store for the admin dashboard."
    )
    public static let trustedProxies = Self(
        name: "trusted-proxies",
        defaultDescription: "none",
        summary: "Comma-separated addresses or CIDR blocks of proxies whose X-Forwarded-For names the client (for per-client limits)."
    )
    public static let sessionCreateRate = Self(
        name: "session-create-rate",
        defaultDescription: "60",
        summary: "Sessions one client address may create per minute, counted in the store across all instances (429 above; 0: no limit)."
    )
    public static let sessionMaxActiveJobs = Self(
        name: "session-max-active-jobs",
        defaultDescription: "16",
        summary: "Queued and running jobs one session may have at once (429 above; 0: no limit)."
    )
    public static let jobMaxEvents = Self(
        name: "job-max-events",
        defaultDescription: "20000",
        summary: "Events one job may write to its log; a job past it fails with too_many_events."
    )
    public static let demoJobs = Self(
        name: "demo-jobs",
        defaultDescription: "false",
        summary: "Offer the demo.generate job type (for tests, benchmarks and demos)."
    )
    public static let uploadDigestInlineMax = Self(
        name: "upload-digest-inline-max",
        defaultDescription: "67108864 (64 MiB)",
        summary: "GET /api/uploads/{id}/info hashes a finished upload up to this size while the client waits; larger ones are hashed by an upload.digest job and the client asks again."
    )
    public static let uploadOrphanRetention = Self(
        name: "upload-orphan-retention",
        defaultDescription: "1h",
        summary: "A finished upload whose session has ended (deleted or expired) is deleted once it has been finished this long: nobody can read it any more."
    )
    public static let documentMaxBytes = Self(
        name: "document-max-bytes", defaultDescription: "52428800 (50 MiB)", summary: "The largest upload turned into a document (document_too_large above)."
    )
    public static let documentMaxPages = Self(name: "document-max-pages", defaultDescription: "2000", summary: "The most pages a PDF document may have (too_many_pages above).")
    public static let documentMaxCharacters = Self(
        name: "document-max-characters", defaultDescription: "20000000", summary: "The most characters of text one document may yield (too_many_characters above)."
    )
    public static let documentMaxSections = Self(
        name: "document-max-sections", defaultDescription: "10000", summary: "The most sections one document may have (too_many_sections above)."
    )
    public static let documentMaxArchiveBytes = Self(
        name: "document-max-archive-bytes",
        defaultDescription: "536870912 (512 MiB)",
        summary: "The most bytes a DOCX's parts may inflate to, as declared and as actually inflated (archive_too_large above: zip bombs stop here)."
    )
    public static let documentExtractTimeout = Self(
        name: "document-extract-timeout",
        defaultDescription: "120s",
        summary: "How long extracting one document may take; past it the extraction (and any Poppler process) is stopped and the document fails with extraction_timeout."
    )
    public static let documentPassageChars = Self(
        name: "document-passage-chars", defaultDescription: "1000", summary: "Target length of a search passage; passages never cross a section."
    )
    public static let popplerPath = Self(
        name: "poppler-path", defaultDescription: "found on PATH", summary: "Directory holding Poppler's pdfinfo and pdftohtml (Debian package poppler-utils), which read PDFs."
    )
    public static let searchMaxResults = Self(name: "search-max-results", defaultDescription: "50", summary: "The most results one GET /api/search returns.")
    public static let models = Self(
        name: "models", defaultDescription: "none (chat answers from retrieval only)",
        summary: "The models file: providers, models and fallback chains as JSON (secrets only through the environment variables it names)."
    )
    public static let modelTotalTimeout = Self(
        name: "model-total-timeout", defaultDescription: "600s", summary: "The longest one answer may take, every model and wait included (model_timeout, 504, past it)."
    )
    public static let modelFirstTokenTimeout = Self(
        name: "model-first-token-timeout", defaultDescription: "60s", summary: "How long a model may take to its first token before the next model of the chain is tried."
    )
    public static let modelIdleTimeout = Self(
        name: "model-idle-timeout", defaultDescription: "60s",
        summary: "How long a streaming answer may go without a token before it continues on the next model."
    )
    public static let modelConnectTimeout = Self(
        name: "model-connect-timeout", defaultDescription: "5s", summary: "How long connecting to a model provider (TCP and TLS) may take."
    )
    public static let modelMaxConnections = Self(
        name: "model-max-connections", defaultDescription: "512",
        summary: "HTTP/1.1 connections one process opens to one model host at once (a streaming answer holds one; more wait for a free one)."
    )
    public static let modelCooldown = Self(
        name: "model-cooldown", defaultDescription: "30s",
        summary: "How long every instance skips a model that is rate-limited or overloaded (when the provider names no Retry-After) or failed model-failures-before-cooldown times in a row."
    )
    public static let modelAuthCooldown = Self(
        name: "model-auth-cooldown", defaultDescription: "600s", summary: "How long every instance skips a model whose credentials were refused (401/403) or whose quota is spent."
    )
    public static let modelFailuresBeforeCooldown = Self(
        name: "model-failures-before-cooldown", defaultDescription: "3", summary: "Failures in a row (5xx, timeouts, broken streams) before a model cools down."
    )
    public static let modelChainRetries = Self(
        name: "model-chain-retries", defaultDescription: "1", summary: "More passes over a chain when every model failed before answering, after the shortest Retry-After."
    )
    public static let modelRetryMaxWait = Self(
        name: "model-retry-max-wait", defaultDescription: "10s",
        summary: "The longest wait for a Retry-After inside one request; a longer one fails the request (503, with Retry-After)."
    )
    public static let chatHistoryTokens = Self(
        name: "chat-history-tokens", defaultDescription: "3000",
        summary: "Earlier messages of a chat go into a reply's prompt, newest first, up to this many tokens (four characters a token)."
    )
    public static let chatPassages = Self(
        name: "chat-passages", defaultDescription: "6", summary: "The most document passages retrieved into one reply's prompt (its sources)."
    )
    public static let chatMaxMessageChars = Self(
        name: "chat-max-message-chars", defaultDescription: "20000", summary: "The longest chat message a user may send, in characters (400 above)."
    )
    public static let logFormat = Self(name: "log-format", defaultDescription: "text", summary: "Log lines as text or json.")
    public static let logLevel = Self(name: "log-level", defaultDescription: "info", summary: "trace, debug, info, notice, warning, error or critical.")

    public static let all: [ConfigurationKnob] = [
        .host, .port, .store, .instanceID, .secret, .sessionIdleTimeout, .sessionRefreshInterval, .sessionMaxBytes,
        .cookieSecure, .corsOrigins, .corsCredentials, .corsMaxAge, .maxBodyBytes, .listenBacklog, .executor, .drainDelay, .drainTimeout,
        .sqliteBusyTimeout, .sqliteSynchronous, .sqlitePollInterval, .workers, .modelWorkers, .jobLeaseDuration, .jobMaxAttempts, .jobRetryBackoff,
        .jobRetryBackoffMax, .jobResultTTL, .workerPollInterval, .janitorInterval, .sseHeartbeat, .sseRetry, .sseBatchSize,
        .uploadBlobs, .uploadMaxSize, .uploadExpiry, .uploadRetention, .uploadCommitBytes, .uploadLockTimeout, .fileMaxBytes,
        .headerTimeout, .idleTimeout, .bodyTimeout, .lingerTimeout, .maxConnections, .opsToken, .adminToken, .instanceReportInterval, .trustedProxies, .sessionCreateRate, .sessionMaxActiveJobs,
        .jobMaxEvents, .demoJobs, .uploadDigestInlineMax, .uploadOrphanRetention, .documentMaxBytes, .documentMaxPages, .documentMaxCharacters, .documentMaxSections,
        .documentMaxArchiveBytes, .documentExtractTimeout, .documentPassageChars, .popplerPath, .searchMaxResults, .models, .modelTotalTimeout,
        .modelFirstTokenTimeout, .modelIdleTimeout, .modelConnectTimeout, .modelMaxConnections, .modelCooldown, .modelAuthCooldown, .modelFailuresBeforeCooldown,
        .modelChainRetries, .modelRetryMaxWait, .chatHistoryTokens, .chatPassages, .chatMaxMessageChars, .logFormat, .logLevel,
    ]
}
