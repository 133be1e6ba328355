import Foundation

/// Builds a ``KeelConfiguration``: flags override `KEEL_*` environment
/// variables, which override a JSON config file, which overrides defaults.
/// Refuses, with a reason and a fix, settings that cannot work.
public struct ConfigurationLoader: Sendable {
    /// Values given as flags, by knob name.
    public var flags: [String: String]
    public var environment: [String: String]
    /// The contents of the config file, if any (a JSON object keyed by knob name).
    public var file: Data?

    public init(flags: [String: String] = [:], environment: [String: String] = [:], file: Data? = nil) {
        self.flags = flags
        self.environment = environment
        self.file = file
    }

    public func load() throws -> KeelConfiguration {
        let fileValues = try self.parseFile()
        var configuration = KeelConfiguration()
        for knob in ConfigurationKnob.all {
            let value = self.flags[knob.name] ?? self.environment[knob.environmentVariable] ?? fileValues[knob.name]
            guard let value else { continue }
            try Self.apply(value, for: knob, to: &configuration)
        }
        try Self.validate(configuration)
        return configuration
    }

    private func parseFile() throws -> [String: String] {
        guard let file else { return [:] }
        guard let parsed = try? JSONValue.parse(file), case .object(let object) = parsed else {
            throw KeelError.invalidConfiguration("The config file is not a JSON object.", hint: #"Write for example {"port": 8080, "store": "sqlite:./keel-data/keel.sqlite"}."#)
        }
        let known = Set(ConfigurationKnob.all.map(\.name))
        var values: [String: String] = [:]
        for (rawKey, rawValue) in object {
            let key = rawKey.replacingOccurrences(of: "_", with: "-")
            guard known.contains(key) else {
                throw KeelError.invalidConfiguration(
                    "The config file has an unknown key '\(rawKey)'.",
                    hint: "Known keys: \(ConfigurationKnob.all.map(\.name).joined(separator: ", "))."
                )
            }
            values[key] = Self.text(of: rawValue)
        }
        return values
    }

    private static func text(of value: JSONValue) -> String {
        switch value {
        case .null: ""
        case .bool(let flag): flag ? "true" : "false"
        case .int(let number): String(number)
        case .double(let number): String(number)
        case .string(let string): string
        case .array(let items): items.map(text(of:)).joined(separator: ",")
        case .object: value.serialized()
        }
    }

    static func apply(_ value: String, for knob: ConfigurationKnob, to configuration: inout KeelConfiguration) throws {
        switch knob {
        case .host: configuration.host = try nonEmpty(value, knob)
        case .port: configuration.port = try integer(value, knob, in: 0...65_535)
        case .store: configuration.store = try StoreLocation(parsing: value)
        case .instanceID: configuration.instanceID = try nonEmpty(value, knob)
        case .secret: configuration.secrets = list(value)
        case .sessionIdleTimeout: configuration.session.idleTimeout = try duration(value, knob)
        case .sessionRefreshInterval: configuration.session.refreshInterval = try duration(value, knob)
        case .sessionMaxBytes: configuration.session.maxDataBytes = try integer(value, knob, in: 2...16_777_216)
        case .cookieSecure: configuration.cookieSecure = try choice(value, knob)
        case .corsOrigins: configuration.cors.allowedOrigins = list(value)
        case .corsCredentials: configuration.cors.allowCredentials = try boolean(value, knob)
        case .corsMaxAge: configuration.cors.maxAge = try duration(value, knob)
        case .maxBodyBytes: configuration.maxBodyBytes = try integer(value, knob, in: 1...1_073_741_824)
        case .listenBacklog: configuration.listenBacklog = try integer(value, knob, in: 1...1_048_576)
        case .executor: configuration.executor = try choice(value, knob)
        case .drainDelay: configuration.drainDelay = try duration(value, knob)
        case .drainTimeout: configuration.drainTimeout = try duration(value, knob)
        case .sqliteBusyTimeout: configuration.sqlite.busyTimeout = try duration(value, knob)
        case .sqliteSynchronous:
            let mode = value.lowercased()
            guard ["full", "normal"].contains(mode) else { throw invalid(value, knob, expected: "full or normal") }
            configuration.sqlite.synchronous = mode
        case .sqlitePollInterval: configuration.sqlite.pollInterval = try positive(duration(value, knob), value, knob)
        case .workers: configuration.jobs.workers = try integer(value, knob, in: 0...1024)
        case .modelWorkers: configuration.jobs.modelWorkers = try integer(value, knob, in: 0...4096)
        case .jobLeaseDuration: configuration.jobs.leaseDuration = try positive(duration(value, knob), value, knob)
        case .jobMaxAttempts: configuration.jobs.maxAttempts = try integer(value, knob, in: 1...100)
        case .jobRetryBackoff: configuration.jobs.retryBackoff = try duration(value, knob)
        case .jobRetryBackoffMax: configuration.jobs.retryBackoffMax = try duration(value, knob)
        case .jobResultTTL: configuration.jobs.resultTTL = try positive(duration(value, knob), value, knob)
        case .workerPollInterval: configuration.jobs.pollInterval = try positive(duration(value, knob), value, knob)
        case .janitorInterval: configuration.jobs.janitorInterval = try positive(duration(value, knob), value, knob)
        case .sseHeartbeat: configuration.streams.heartbeatInterval = try positive(duration(value, knob), value, knob)
        case .sseRetry: configuration.streams.retryDelay = try duration(value, knob)
        case .sseBatchSize: configuration.streams.batchSize = try integer(value, knob, in: 1...10_000)
        case .uploadBlobs:
            let text = value.trimmingCharacters(in: .whitespaces)
            if text.lowercased() == "auto" {
                configuration.uploads.blobs = .automatic
            } else if text.lowercased() == "database" {
                configuration.uploads.blobs = .database
            } else if text.hasPrefix("dir:"), text.count > 4 {
                configuration.uploads.blobs = .directory(String(text.dropFirst(4)))
            } else {
                throw invalid(value, knob, expected: "auto, database or dir:PATH")
            }
        case .uploadMaxSize: configuration.uploads.maxSize = Int64(try integer(value, knob, in: 1...(1 << 50)))
        case .uploadExpiry: configuration.uploads.expiry = try positive(duration(value, knob), value, knob)
        case .uploadRetention: configuration.uploads.retention = try duration(value, knob)
        case .uploadCommitBytes: configuration.uploads.commitBytes = try integer(value, knob, in: 65_536...1_073_741_824)
        case .uploadLockTimeout: configuration.uploads.lockTimeout = try positive(duration(value, knob), value, knob)
        case .fileMaxBytes: configuration.uploads.maxFileBytes = try integer(value, knob, in: 1...1_073_741_824)
        case .headerTimeout: configuration.connections.headerTimeout = try positive(duration(value, knob), value, knob)
        case .idleTimeout: configuration.connections.idleTimeout = try positive(duration(value, knob), value, knob)
        case .bodyTimeout: configuration.connections.bodyTimeout = try positive(duration(value, knob), value, knob)
        case .lingerTimeout: configuration.connections.lingerTimeout = try positive(duration(value, knob), value, knob)
        case .maxConnections: configuration.connections.maxConnections = try integer(value, knob, in: 0...10_000_000)
        case .opsToken:
            let token = value.trimmingCharacters(in: .whitespaces)
            configuration.opsToken = token.isEmpty ? nil : token
        case .adminToken:
            let token = value.trimmingCharacters(in: .whitespaces)
            configuration.adminToken = token.isEmpty ? nil : token
        case .instanceReportInterval: configuration.instanceReportInterval = try positive(duration(value, knob), value, knob)
        case .trustedProxies:
            let proxies = list(value)
            for proxy in proxies where AddressBlock(parsing: proxy) == nil {
                throw invalid(proxy, knob, expected: "IPv4 or IPv6 addresses or CIDR blocks such as 10.0.0.0/8")
            }
            configuration.trustedProxies = proxies
        case .sessionCreateRate: configuration.quotas.sessionCreatesPerMinute = try integer(value, knob, in: 0...1_000_000)
        case .sessionMaxActiveJobs: configuration.quotas.activeJobsPerSession = try integer(value, knob, in: 0...1_000_000)
        case .jobMaxEvents: configuration.jobs.maxEvents = try integer(value, knob, in: 10...100_000_000)
        case .demoJobs: configuration.demoJobs = try boolean(value, knob)
        case .uploadDigestInlineMax: configuration.uploads.digestInlineMax = Int64(try integer(value, knob, in: 0...(1 << 50)))
        case .uploadOrphanRetention: configuration.uploads.orphanRetention = try duration(value, knob)
        case .documentMaxBytes: configuration.documents.maxBytes = Int64(try integer(value, knob, in: 1...(1 << 40)))
        case .documentMaxPages: configuration.documents.maxPages = try integer(value, knob, in: 1...1_000_000)
        case .documentMaxCharacters: configuration.documents.maxCharacters = try integer(value, knob, in: 1...1_000_000_000)
        case .documentMaxSections: configuration.documents.maxSections = try integer(value, knob, in: 1...10_000_000)
        case .documentMaxArchiveBytes: configuration.documents.maxArchiveBytes = Int64(try integer(value, knob, in: 1...(1 << 40)))
        case .documentExtractTimeout: configuration.documents.extractTimeout = try positive(duration(value, knob), value, knob)
        case .documentPassageChars: configuration.documents.passageCharacters = try integer(value, knob, in: 200...20_000)
        case .popplerPath: configuration.documents.popplerPath = value.trimmingCharacters(in: .whitespaces)
        case .searchMaxResults: configuration.documents.searchMaxResults = try integer(value, knob, in: 1...1000)
        case .models:
            let path = value.trimmingCharacters(in: .whitespaces)
            configuration.models.file = path.isEmpty ? nil : path
        case .modelTotalTimeout: configuration.models.totalTimeout = try positive(duration(value, knob), value, knob)
        case .modelFirstTokenTimeout: configuration.models.firstTokenTimeout = try positive(duration(value, knob), value, knob)
        case .modelIdleTimeout: configuration.models.idleTimeout = try positive(duration(value, knob), value, knob)
        case .modelConnectTimeout: configuration.models.connectTimeout = try positive(duration(value, knob), value, knob)
        case .modelMaxConnections: configuration.models.maxConnections = try integer(value, knob, in: 1...65_536)
        case .modelCooldown: configuration.models.cooldown = try duration(value, knob)
        case .modelAuthCooldown: configuration.models.authCooldown = try duration(value, knob)
        case .modelFailuresBeforeCooldown: configuration.models.failuresBeforeCooldown = try integer(value, knob, in: 1...1000)
        case .modelChainRetries: configuration.models.chainRetries = try integer(value, knob, in: 0...10)
        case .modelRetryMaxWait: configuration.models.retryMaxWait = try duration(value, knob)
        case .chatHistoryTokens: configuration.chat.historyTokens = try integer(value, knob, in: 0...1_000_000)
        case .chatPassages: configuration.chat.passages = try integer(value, knob, in: 0...50)
        case .chatMaxMessageChars: configuration.chat.maxMessageCharacters = try integer(value, knob, in: 1...1_000_000)
        case .logFormat: configuration.logFormat = try choice(value, knob)
        case .logLevel:
            let levels = ["trace", "debug", "info", "notice", "warning", "error", "critical"]
            guard levels.contains(value.lowercased()) else { throw invalid(value, knob, expected: levels.joined(separator: ", ")) }
            configuration.logLevel = value.lowercased()
        default:
            throw KeelError.invalidConfiguration("No handling for setting '\(knob.name)'.")
        }
    }

    /// Refuses combinations that the field reports show cannot work.
    public static func validate(_ configuration: KeelConfiguration) throws {
        let cors = configuration.cors
        if cors.allowsAnyOrigin && cors.allowCredentials {
            throw KeelError.invalidConfiguration(
                "CORS origin '*' cannot be combined with credentials: browsers reject `Access-Control-Allow-Origin: *` on credentialed requests, so the session cookie would never be sent.",
                hint: "List the exact origins (--cors-origins https://app.example.com), or pass --cors-credentials false for a public, cookie-less API."
            )
        }
        for origin in cors.allowedOrigins where origin != "*" {
            guard let url = URLComponents(string: origin), let scheme = url.scheme, ["http", "https"].contains(scheme),
                url.host?.isEmpty == false, url.path.isEmpty, url.query == nil, url.fragment == nil
            else {
                throw KeelError.invalidConfiguration(
                    "CORS origin '\(origin)' is not an origin: browsers send scheme://host[:port] with no path or trailing slash.",
                    hint: "Write it exactly as the browser's Origin header, e.g. https://app.example.com"
                )
            }
        }
        if configuration.secrets.contains(where: { $0.utf8.count < 32 }) {
            throw KeelError.invalidConfiguration(
                "A session secret is shorter than 32 characters.",
                hint: "Generate one with `openssl rand -base64 48` and share it among all instances as KEEL_SECRET."
            )
        }
        if configuration.session.refreshInterval >= configuration.session.idleTimeout {
            throw KeelError.invalidConfiguration(
                "The session refresh interval (\(configuration.session.refreshInterval)) must be shorter than the idle timeout (\(configuration.session.idleTimeout)).",
                hint: "Keep --session-refresh-interval a small fraction of --session-idle-timeout."
            )
        }
        if configuration.jobs.leaseDuration < .seconds(1) {
            throw KeelError.invalidConfiguration(
                "The job lease duration (\(configuration.jobs.leaseDuration)) is below one second.",
                hint: "Workers heartbeat every third of it; keep it at a few seconds or more so a busy store cannot make live workers lose their jobs."
            )
        }
        if configuration.jobs.retryBackoffMax < configuration.jobs.retryBackoff {
            throw KeelError.invalidConfiguration("--job-retry-backoff-max must not be below --job-retry-backoff.")
        }
        if case .database = configuration.uploads.blobs, case .sqlite = configuration.store {
            throw KeelError.invalidConfiguration(
                "--upload-blobs database needs a PostgreSQL store; SQLite keeps upload bytes in a directory.",
                hint: "Use --upload-blobs auto (a directory beside the SQLite file) or dir:PATH."
            )
        }
        if let token = configuration.opsToken, token.utf8.count < 16 {
            throw KeelError.invalidConfiguration(
                "The ops token is shorter than 16 characters.",
                hint: "Generate one with `openssl rand -base64 24`; Prometheus sends it as a bearer token."
            )
        }
        if let token = configuration.adminToken, token.utf8.count < 16 {
            throw KeelError.invalidConfiguration(
                "The admin token is shorter than 16 characters.",
                hint: "Generate one with `openssl rand -base64 24`; the admin page asks for it at sign-in."
            )
        }
        if configuration.session.idleTimeout <= .zero {
            throw KeelError.invalidConfiguration("The session idle timeout must be positive.")
        }
        let lane = configuration.jobs.modelWorkers
        if configuration.models.file != nil, lane > configuration.models.maxConnections {
            throw KeelError.invalidConfiguration(
                "--model-workers \(lane) is above --model-max-connections \(configuration.models.maxConnections): answers from one model host would wait for a connection and fail after --model-connect-timeout.",
                hint: "Raise --model-max-connections to at least --model-workers, or lower --model-workers."
            )
        }
    }

    // MARK: Value parsing

    private static func invalid(_ value: String, _ knob: ConfigurationKnob, expected: String) -> KeelError {
        KeelError.invalidConfiguration("Invalid value '\(value)' for \(knob.name) (\(knob.environmentVariable)).", hint: "Expected \(expected).")
    }

    private static func nonEmpty(_ value: String, _ knob: ConfigurationKnob) throws -> String {
        let trimmed = value.trimmingCharacters(in: .whitespaces)
        guard !trimmed.isEmpty else { throw invalid(value, knob, expected: "a non-empty value") }
        return trimmed
    }

    private static func integer(_ value: String, _ knob: ConfigurationKnob, in range: ClosedRange<Int>) throws -> Int {
        guard let number = Int(value.trimmingCharacters(in: .whitespaces)), range.contains(number) else {
            throw invalid(value, knob, expected: "an integer from \(range.lowerBound) to \(range.upperBound)")
        }
        return number
    }

    private static func boolean(_ value: String, _ knob: ConfigurationKnob) throws -> Bool {
        switch value.lowercased() {
        case "true", "1", "yes", "on": return true
        case "false", "0", "no", "off": return false
        default: throw invalid(value, knob, expected: "true or false")
        }
    }

    private static func choice<T: RawRepresentable & CaseIterable>(_ value: String, _ knob: ConfigurationKnob) throws -> T where T.RawValue == String {
        guard let choice = T(rawValue: value.lowercased()) else {
            throw invalid(value, knob, expected: T.allCases.map(\.rawValue).joined(separator: ", "))
        }
        return choice
    }

    private static func list(_ value: String) -> [String] {
        value.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }

    private static func positive(_ duration: Duration, _ value: String, _ knob: ConfigurationKnob) throws -> Duration {
        guard duration > .zero else { throw invalid(value, knob, expected: "a duration above zero") }
        return duration
    }

    private static func duration(_ value: String, _ knob: ConfigurationKnob) throws -> Duration {
        guard let duration = Duration(parsing: value) else {
            throw invalid(value, knob, expected: "a duration such as 500ms, 15s, 10m or 24h (a bare number is seconds)")
        }
        return duration
    }
}

extension Duration {
    /// Parses `500ms`, `15s`, `10m`, `24h`, `2d` or a bare number of seconds.
    public init?(parsing text: String) {
        let text = text.trimmingCharacters(in: .whitespaces).lowercased()
        let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600), ("d", 86_400)]
        for (suffix, scale) in units where text.hasSuffix(suffix) {
            guard let number = Double(text.dropLast(suffix.count)), number >= 0, number.isFinite else { return nil }
            self = .milliseconds(Int64((number * scale * 1000).rounded()))
            return
        }
        guard let seconds = Double(text), seconds >= 0, seconds.isFinite else { return nil }
        self = .milliseconds(Int64((seconds * 1000).rounded()))
    }
}
