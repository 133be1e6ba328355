import Foundation

/// Everything an instance of `keel serve` can be told, with the defaults a
/// single machine needs. Built by ``ConfigurationLoader`` from flags,
/// environment and an optional file.
public struct KeelConfiguration: Sendable, Equatable {
    public var host: String = "127.0.0.1"
    public var port: Int = 8080
    public var store: StoreLocation = .sqlite(path: StoreLocation.defaultSQLitePath)
    /// Names this process in `Keel-Instance`, logs and leases.
    public var instanceID: String = KeelConfiguration.defaultInstanceID()
    /// Session signing secrets; the first signs, all verify. Empty: a secret is
    /// generated once and kept in the store, so every instance agrees.
    public var secrets: [String] = []
    public var session = SessionPolicy()
    public var cookieSecure: CookieSecureMode = .auto
    public var cors = CORSPolicy()
    /// The largest JSON request body accepted, in bytes.
    public var maxBodyBytes: Int = 1_048_576
    /// Pending connections the kernel may queue before they are accepted.
    public var listenBacklog: Int = 4096
    /// Where request handlers run.
    public var executor: ExecutorChoice = .pool
    /// After SIGTERM, how long `/ready` reports 503 while requests are still served.
    public var drainDelay: Duration = .seconds(5)
    /// After the drain delay, how long in-flight requests may take to finish.
    public var drainTimeout: Duration = .seconds(30)
    public var sqlite = SQLiteOptions()
    public var jobs = JobSettings()
    public var streams = StreamSettings()
    public var uploads = UploadSettings()
    public var connections = ConnectionSettings()
    public var quotas = QuotaSettings()
    public var documents = DocumentSettings()
    public var models = ModelSettings()
    public var chat = ChatSettings()
    /// The bearer token `/metrics` and `/system-health` ask for; without
    /// one they answer only direct loopback clients (no proxy in between).
    public var opsToken: String?
    /// The bearer token of the admin dashboard (`/admin` and
    /// `/api/admin/overview`); without one both answer 404.
    public var adminToken: String?
    /// How often this instance writes its report (open streams, connections,
    /// workers, its models' figures) to the store for the admin dashboard.
    public var instanceReportInterval: Duration = .seconds(5)
    /// Proxies (addresses or CIDR blocks) whose `X-Forwarded-For` names the client.
    public var trustedProxies: [String] = []
    /// Whether the `demo.generate` job type is offered (tests, benchmarks, demos).
    public var demoJobs: Bool = false
    public var logFormat: LogFormat = .text
    public var logLevel: String = "info"

    public init() {}

    public static func defaultInstanceID() -> String {
        let host = ProcessInfo.processInfo.hostName.split(separator: ".").first.map(String.init) ?? "keel"
        return "\(host)-\(ProcessInfo.processInfo.processIdentifier)-\(Identifiers.random(byteCount: 3))"
    }
}

/// When the session cookie carries the `Secure` attribute.
public enum CookieSecureMode: String, Sendable, CaseIterable {
    /// When the request arrived over HTTPS, directly or per `X-Forwarded-Proto: https`.
    case auto
    case always
    case never
}

/// Where Swift concurrency runs tasks, request handlers included.
public enum ExecutorChoice: String, Sendable, CaseIterable {
    /// Swift's cooperative thread pool; the network threads hand each request over.
    case pool
    /// SwiftNIO's event loops become Swift concurrency's global executor.
    case eventLoops = "event-loops"
}

public enum LogFormat: String, Sendable, CaseIterable {
    case text
    case json
}

/// Cross-origin access for browsers on other origins.
public struct CORSPolicy: Sendable, Equatable {
    /// Exact origins (`https://app.example.com`) allowed to call the API.
    public var allowedOrigins: [String] = []
    /// Whether those origins may send cookies (`Access-Control-Allow-Credentials`).
    public var allowCredentials: Bool = true
    /// How long browsers may cache a preflight answer.
    public var maxAge: Duration = .seconds(600)

    public init(allowedOrigins: [String] = [], allowCredentials: Bool = true, maxAge: Duration = .seconds(600)) {
        self.allowedOrigins = allowedOrigins
        self.allowCredentials = allowCredentials
        self.maxAge = maxAge
    }

    public var allowsAnyOrigin: Bool { self.allowedOrigins.contains("*") }

    public func allows(origin: String) -> Bool {
        self.allowsAnyOrigin || self.allowedOrigins.contains(origin)
    }
}

/// Tuning of the SQLite driver.
public struct SQLiteOptions: Sendable, Equatable {
    /// How long a writer waits for another process's lock before failing.
    public var busyTimeout: Duration = .seconds(5)
    /// `normal` (WAL: every commit survives the process's crash or SIGKILL;
    /// a power loss or OS crash may lose the last ones) or `full` (an fsync
    /// per commit: survives power loss, about 2 ms a commit on the reference
    /// machine).
    public var synchronous: String = "normal"
    /// How often each process looks for commits by other processes (new
    /// jobs, new events); the in-process path wakes at once regardless.
    public var pollInterval: Duration = .milliseconds(10)

    public init() {}
}

/// How workers run jobs, and how long finished jobs live.
public struct JobSettings: Sendable, Equatable {
    /// Workers inside `keel serve` (0: this instance only serves HTTP, and
    /// runs no job of either lane).
    public var workers: Int = 4
    /// Jobs that wait on a model (chat replies, analyses, OpenAI responses)
    /// that one process runs at once, beside `workers` (0: they share the
    /// `workers`).
    public var modelWorkers: Int = 256
    /// How long a claimed job stays with its worker without a heartbeat;
    /// workers heartbeat every third of it, and a killed worker's job runs
    /// again about this long after it died.
    public var leaseDuration: Duration = .seconds(30)
    /// Attempts per job unless the request asks for fewer or more.
    public var maxAttempts: Int = 3
    /// Delay before the second attempt; doubled for each further one.
    public var retryBackoff: Duration = .seconds(1)
    /// The longest delay between attempts.
    public var retryBackoffMax: Duration = .seconds(300)
    /// How long a finished job, its result and its events stay readable.
    public var resultTTL: Duration = .seconds(7 * 86_400)
    /// How often an idle worker looks for due jobs when nothing woke it
    /// (retries whose backoff elapsed; a safety net under notifications).
    public var pollInterval: Duration = .seconds(1)
    /// How often the janitor runs (rescue expired leases, purge expired
    /// jobs and sessions); one instance at a time holds the janitor lease.
    public var janitorInterval: Duration = .seconds(5)
    /// Events one job may append to its log; a handler past it fails with `too_many_events`.
    public var maxEvents: Int = 20_000

    public init() {}

    /// The delay before attempt `attempt + 1` after attempt `attempt` failed.
    public func backoff(afterAttempt attempt: Int) -> Duration {
        let exponent = max(0, min(attempt - 1, 30))
        let delay = self.retryBackoff * (1 << exponent)
        return min(delay, self.retryBackoffMax)
    }
}

/// Server-Sent Event streams.
public struct StreamSettings: Sendable, Equatable {
    /// An idle stream gets a comment line this often, so load balancers
    /// and proxies never see it idle long enough to cut it.
    public var heartbeatInterval: Duration = .seconds(15)
    /// The `retry:` delay browsers wait before reconnecting.
    public var retryDelay: Duration = .seconds(2)
    /// Events read from the store and written per batch: the most a slow
    /// client can make the server hold for it.
    public var batchSize: Int = 256

    public init() {}
}

/// Resumable (tus) and small-file uploads.
public struct UploadSettings: Sendable, Equatable {
    /// Where upload bytes live.
    public enum BlobLocation: Sendable, Equatable {
        /// A directory beside the SQLite file; the database itself on PostgreSQL.
        case automatic
        /// Files under this directory (a shared volume for several machines).
        case directory(String)
        /// Inside the store's database (PostgreSQL only).
        case database
    }

    public var blobs: BlobLocation = .automatic
    /// The largest upload accepted, in bytes (413 above; advertised as Tus-Max-Size).
    public var maxSize: Int64 = 10 * 1_073_741_824
    /// An unfinished upload that received no bytes for this long expires and its bytes are deleted.
    public var expiry: Duration = .seconds(86_400)
    /// How long finished uploads are kept (zero: until deleted).
    public var retention: Duration = .zero
    /// A PATCH makes what it received durable and commits it at least every this many bytes,
    /// so an interrupted PATCH keeps most of its bytes.
    public var commitBytes: Int = 8 * 1_048_576
    /// A PATCH whose holder wrote nothing for this long (dead, partitioned or stalled)
    /// is taken over by a newer PATCH for the same upload; a newer PATCH sooner gets 423.
    public var lockTimeout: Duration = .seconds(5)
    /// The largest body `POST /api/files` takes (413 above, pointing at /api/uploads).
    public var maxFileBytes: Int = 10 * 1_048_576
    /// `GET /api/uploads/{id}/info` hashes a finished upload up to this size
    /// while the client waits; a larger one is hashed by an `upload.digest` job.
    public var digestInlineMax: Int64 = 64 * 1_048_576
    /// A finished upload whose session has ended (deleted or expired) is
    /// deleted once it has been finished this long; nobody can read it any more.
    public var orphanRetention: Duration = .seconds(3600)

    public init() {}
}

/// How long a connection may take over each part of a request, and how many
/// may be open: what a slow or hostile client can hold.
public struct ConnectionSettings: Sendable, Equatable {
    /// From a connection's first byte of a request to the end of its headers.
    public var headerTimeout: Duration = .seconds(10)
    /// How long a keep-alive connection may wait for its next request; keep
    /// it above the load balancer's own idle timeout (60 s on AWS ALB).
    public var idleTimeout: Duration = .seconds(75)
    /// How long a request body may go without a byte arriving.
    public var bodyTimeout: Duration = .seconds(30)
    /// After an early answer (401, 404, 413…) to a request whose body is
    /// still coming, how long the rest is read and dropped before the
    /// connection closes (closing at once could reset the answer away).
    public var lingerTimeout: Duration = .seconds(5)
    /// Open connections this process accepts at once; more wait in the
    /// listen backlog until one closes. 0: as many as file descriptors allow.
    public var maxConnections: Int = 0

    public init() {}
}

/// Per-session and per-client limits.
public struct QuotaSettings: Sendable, Equatable {
    /// Sessions one client address may create per minute, across all instances (0: no limit).
    public var sessionCreatesPerMinute: Int = 60
    /// Queued and running jobs one session may have at once (0: no limit).
    public var activeJobsPerSession: Int = 16

    public init() {}
}

/// Limits of document ingestion and search: what one upload can make the
/// server extract, store and rank.
public struct DocumentSettings: Sendable, Equatable {
    /// The largest upload turned into a document, in bytes.
    public var maxBytes: Int64 = 50 * 1_048_576
    /// The most pages a PDF may have.
    public var maxPages: Int = 2000
    /// The most characters of text a document may yield.
    public var maxCharacters: Int = 20_000_000
    /// The most sections a document may have.
    public var maxSections: Int = 10_000
    /// The most bytes a DOCX's parts may inflate to (declared and actual): zip bombs stop here.
    public var maxArchiveBytes: Int64 = 512 * 1_048_576
    /// How long one extraction may run before it is stopped (and Poppler killed).
    public var extractTimeout: Duration = .seconds(120)
    /// Target length of a search passage, in characters.
    public var passageCharacters: Int = 1000
    /// Directory of Poppler's pdfinfo and pdftohtml; empty: found on PATH.
    public var popplerPath: String = ""
    /// The most results one search returns (`limit` above it is refused).
    public var searchMaxResults: Int = 50

    public init() {}
}

/// The models file and the router's limits (DESIGN.md "Models, chains,
/// fallback"). Without a file no model is configured.
public struct ModelSettings: Sendable, Equatable {
    /// Path of the models file (JSON: providers, models, chains).
    public var file: String?
    /// A whole answer, every model and wait included.
    public var totalTimeout: Duration = .seconds(600)
    /// From a request to a model to its first token, per attempt.
    public var firstTokenTimeout: Duration = .seconds(60)
    /// Between two events of a streaming answer.
    public var idleTimeout: Duration = .seconds(60)
    /// Connecting to a provider (TCP and TLS).
    public var connectTimeout: Duration = .seconds(5)
    /// HTTP/1.1 connections one process opens to one provider host at once
    /// (each streaming answer holds one); requests beyond it wait for a
    /// free connection. HTTP/2 hosts multiplex answers on fewer.
    public var maxConnections: Int = 512
    /// How long a rate-limited or overloaded model, or one failing
    /// `failuresBeforeCooldown` times in a row, is skipped when the upstream
    /// names no wait of its own.
    public var cooldown: Duration = .seconds(30)
    /// How long bad credentials or a spent quota take a model out.
    public var authCooldown: Duration = .seconds(600)
    public var failuresBeforeCooldown: Int = 3
    /// Passes over a chain after the first when every model failed first.
    public var chainRetries: Int = 1
    /// The longest Retry-After the router waits for inside one request.
    public var retryMaxWait: Duration = .seconds(10)

    public init() {}
}

/// Conversations: what goes into a reply's prompt, and how big a question may be.
public struct ChatSettings: Sendable, Equatable {
    /// Earlier messages go into the prompt, newest first, up to this many
    /// tokens (estimated at four characters a token).
    public var historyTokens: Int = 3000
    /// The most passages retrieved from the session's documents for one reply.
    public var passages: Int = 6
    /// The longest message a user may send, in characters.
    public var maxMessageCharacters: Int = 20_000

    public init() {}
}
