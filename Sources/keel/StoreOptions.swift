import ArgumentParser
import Foundation
import KeelCore
import KeelPostgres
import KeelServer
import KeelSQLite
import Logging
import NIOCore
import NIOPosix

/// Settings every subcommand shares: where the store is, the config file, logging.
struct CommonOptions: ParsableArguments {
    @Option(name: .customLong("config"), help: "A JSON file of settings keyed by flag name (env KEEL_CONFIG). Flags override environment, which overrides the file.")
    var configFile: String?

    @Option(help: ArgumentHelp(ConfigurationKnob.store.help))
    var store: String?

    @Option(name: .customLong("sqlite-busy-timeout"), help: ArgumentHelp(ConfigurationKnob.sqliteBusyTimeout.help))
    var sqliteBusyTimeout: String?

    @Option(name: .customLong("sqlite-synchronous"), help: ArgumentHelp(ConfigurationKnob.sqliteSynchronous.help))
    var sqliteSynchronous: String?

    @Option(name: .customLong("sqlite-poll-interval"), help: ArgumentHelp(ConfigurationKnob.sqlitePollInterval.help))
    var sqlitePollInterval: String?

    @Option(name: .customLong("log-format"), help: ArgumentHelp(ConfigurationKnob.logFormat.help))
    var logFormat: String?

    @Option(name: .customLong("log-level"), help: ArgumentHelp(ConfigurationKnob.logLevel.help))
    var logLevel: String?

    var flags: [String: String] {
        var flags: [String: String] = [:]
        flags[ConfigurationKnob.store.name] = self.store
        flags[ConfigurationKnob.sqliteBusyTimeout.name] = self.sqliteBusyTimeout
        flags[ConfigurationKnob.sqliteSynchronous.name] = self.sqliteSynchronous
        flags[ConfigurationKnob.sqlitePollInterval.name] = self.sqlitePollInterval
        flags[ConfigurationKnob.logFormat.name] = self.logFormat
        flags[ConfigurationKnob.logLevel.name] = self.logLevel
        return flags
    }

    func load(extraFlags: [String: String] = [:]) throws -> KeelConfiguration {
        let environment = ProcessInfo.processInfo.environment
        var file: Data?
        if let path = self.configFile ?? environment["KEEL_CONFIG"] {
            guard let contents = FileManager.default.contents(atPath: path) else {
                throw KeelError.invalidConfiguration("Cannot read the config file \(path).")
            }
            file = contents
        }
        return try ConfigurationLoader(flags: self.flags.merging(extraFlags) { $1 }, environment: environment, file: file).load()
    }
}

/// Settings of the job workers, shared by `serve` and `worker`.
struct JobOptions: ParsableArguments {
    @Option(help: ArgumentHelp(ConfigurationKnob.workers.help)) var workers: String?
    @Option(name: .customLong("model-workers"), help: ArgumentHelp(ConfigurationKnob.modelWorkers.help)) var modelWorkers: String?
    @Option(name: .customLong("job-lease-duration"), help: ArgumentHelp(ConfigurationKnob.jobLeaseDuration.help)) var leaseDuration: String?
    @Option(name: .customLong("job-max-attempts"), help: ArgumentHelp(ConfigurationKnob.jobMaxAttempts.help)) var maxAttempts: String?
    @Option(name: .customLong("job-retry-backoff"), help: ArgumentHelp(ConfigurationKnob.jobRetryBackoff.help)) var retryBackoff: String?
    @Option(name: .customLong("job-retry-backoff-max"), help: ArgumentHelp(ConfigurationKnob.jobRetryBackoffMax.help)) var retryBackoffMax: String?
    @Option(name: .customLong("job-result-ttl"), help: ArgumentHelp(ConfigurationKnob.jobResultTTL.help)) var resultTTL: String?
    @Option(name: .customLong("worker-poll-interval"), help: ArgumentHelp(ConfigurationKnob.workerPollInterval.help)) var pollInterval: String?
    @Option(name: .customLong("janitor-interval"), help: ArgumentHelp(ConfigurationKnob.janitorInterval.help)) var janitorInterval: String?
    @Option(name: .customLong("instance-id"), help: ArgumentHelp(ConfigurationKnob.instanceID.help)) var instanceID: String?
    @Option(name: .customLong("drain-timeout"), help: ArgumentHelp(ConfigurationKnob.drainTimeout.help)) var drainTimeout: String?
    @Option(name: .customLong("job-max-events"), help: ArgumentHelp(ConfigurationKnob.jobMaxEvents.help)) var maxEvents: String?
    @Option(name: .customLong("demo-jobs"), help: ArgumentHelp(ConfigurationKnob.demoJobs.help)) var demoJobs: String?

    var flags: [String: String] {
        let values: [(ConfigurationKnob, String?)] = [
            (.jobMaxEvents, self.maxEvents), (.demoJobs, self.demoJobs),
            (.workers, self.workers), (.modelWorkers, self.modelWorkers), (.jobLeaseDuration, self.leaseDuration), (.jobMaxAttempts, self.maxAttempts),
            (.jobRetryBackoff, self.retryBackoff), (.jobRetryBackoffMax, self.retryBackoffMax), (.jobResultTTL, self.resultTTL),
            (.workerPollInterval, self.pollInterval), (.janitorInterval, self.janitorInterval), (.instanceID, self.instanceID),
            (.drainTimeout, self.drainTimeout),
        ]
        return Dictionary(values.compactMap { knob, value in value.map { (knob.name, $0) } }, uniquingKeysWith: { $1 })
    }
}

/// Settings of uploads, shared by `serve` and `worker` (whose janitor expires uploads).
struct UploadOptions: ParsableArguments {
    @Option(name: .customLong("upload-blobs"), help: ArgumentHelp(ConfigurationKnob.uploadBlobs.help)) var blobs: String?
    @Option(name: .customLong("upload-max-size"), help: ArgumentHelp(ConfigurationKnob.uploadMaxSize.help)) var maxSize: String?
    @Option(name: .customLong("upload-expiry"), help: ArgumentHelp(ConfigurationKnob.uploadExpiry.help)) var expiry: String?
    @Option(name: .customLong("upload-retention"), help: ArgumentHelp(ConfigurationKnob.uploadRetention.help)) var retention: String?
    @Option(name: .customLong("upload-commit-bytes"), help: ArgumentHelp(ConfigurationKnob.uploadCommitBytes.help)) var commitBytes: String?
    @Option(name: .customLong("upload-lock-timeout"), help: ArgumentHelp(ConfigurationKnob.uploadLockTimeout.help)) var lockTimeout: String?
    @Option(name: .customLong("file-max-bytes"), help: ArgumentHelp(ConfigurationKnob.fileMaxBytes.help)) var fileMaxBytes: String?

    @Option(name: .customLong("upload-digest-inline-max"), help: ArgumentHelp(ConfigurationKnob.uploadDigestInlineMax.help)) var digestInlineMax: String?
    @Option(name: .customLong("upload-orphan-retention"), help: ArgumentHelp(ConfigurationKnob.uploadOrphanRetention.help)) var orphanRetention: String?

    var flags: [String: String] {
        let values: [(ConfigurationKnob, String?)] = [
            (.uploadDigestInlineMax, self.digestInlineMax), (.uploadOrphanRetention, self.orphanRetention),
            (.uploadBlobs, self.blobs), (.uploadMaxSize, self.maxSize), (.uploadExpiry, self.expiry), (.uploadRetention, self.retention),
            (.uploadCommitBytes, self.commitBytes), (.uploadLockTimeout, self.lockTimeout), (.fileMaxBytes, self.fileMaxBytes),
        ]
        return Dictionary(values.compactMap { knob, value in value.map { (knob.name, $0) } }, uniquingKeysWith: { $1 })
    }
}

/// Settings of documents, shared by `serve` and `worker` (whose workers ingest them).
struct DocumentOptions: ParsableArguments {
    @Option(name: .customLong("document-max-bytes"), help: ArgumentHelp(ConfigurationKnob.documentMaxBytes.help)) var maxBytes: String?
    @Option(name: .customLong("document-max-pages"), help: ArgumentHelp(ConfigurationKnob.documentMaxPages.help)) var maxPages: String?
    @Option(name: .customLong("document-max-characters"), help: ArgumentHelp(ConfigurationKnob.documentMaxCharacters.help)) var maxCharacters: String?
    @Option(name: .customLong("document-max-sections"), help: ArgumentHelp(ConfigurationKnob.documentMaxSections.help)) var maxSections: String?
    @Option(name: .customLong("document-max-archive-bytes"), help: ArgumentHelp(ConfigurationKnob.documentMaxArchiveBytes.help))
    var maxArchiveBytes: String?
    @Option(name: .customLong("document-extract-timeout"), help: ArgumentHelp(ConfigurationKnob.documentExtractTimeout.help)) var extractTimeout: String?
    @Option(name: .customLong("document-passage-chars"), help: ArgumentHelp(ConfigurationKnob.documentPassageChars.help)) var passageChars: String?
    @Option(name: .customLong("poppler-path"), help: ArgumentHelp(ConfigurationKnob.popplerPath.help)) var popplerPath: String?
    @Option(name: .customLong("search-max-results"), help: ArgumentHelp(ConfigurationKnob.searchMaxResults.help)) var searchMaxResults: String?

    var flags: [String: String] {
        let values: [(ConfigurationKnob, String?)] = [
            (.documentMaxBytes, self.maxBytes), (.documentMaxPages, self.maxPages), (.documentMaxCharacters, self.maxCharacters),
            (.documentMaxSections, self.maxSections),
            (.documentMaxArchiveBytes, self.maxArchiveBytes), (.documentExtractTimeout, self.extractTimeout),
            (.documentPassageChars, self.passageChars), (.popplerPath, self.popplerPath), (.searchMaxResults, self.searchMaxResults),
        ]
        return Dictionary(values.compactMap { knob, value in value.map { (knob.name, $0) } }, uniquingKeysWith: { $1 })
    }
}

/// The models file and the router's limits, shared by `serve`, `worker`,
/// `doctor` and `models check`.
struct ModelOptions: ParsableArguments {
    @Option(name: .customLong("models"), help: ArgumentHelp(ConfigurationKnob.models.help)) var file: String?
    @Option(name: .customLong("model-total-timeout"), help: ArgumentHelp(ConfigurationKnob.modelTotalTimeout.help)) var totalTimeout: String?
    @Option(name: .customLong("model-first-token-timeout"), help: ArgumentHelp(ConfigurationKnob.modelFirstTokenTimeout.help))
    var firstTokenTimeout: String?
    @Option(name: .customLong("model-idle-timeout"), help: ArgumentHelp(ConfigurationKnob.modelIdleTimeout.help)) var idleTimeout: String?
    @Option(name: .customLong("model-connect-timeout"), help: ArgumentHelp(ConfigurationKnob.modelConnectTimeout.help)) var connectTimeout: String?
    @Option(name: .customLong("model-max-connections"), help: ArgumentHelp(ConfigurationKnob.modelMaxConnections.help)) var maxConnections: String?
    @Option(name: .customLong("model-cooldown"), help: ArgumentHelp(ConfigurationKnob.modelCooldown.help)) var cooldown: String?
    @Option(name: .customLong("model-auth-cooldown"), help: ArgumentHelp(ConfigurationKnob.modelAuthCooldown.help)) var authCooldown: String?
    @Option(name: .customLong("model-failures-before-cooldown"), help: ArgumentHelp(ConfigurationKnob.modelFailuresBeforeCooldown.help))
    var failuresBeforeCooldown: String?
    @Option(name: .customLong("model-chain-retries"), help: ArgumentHelp(ConfigurationKnob.modelChainRetries.help)) var chainRetries: String?
    @Option(name: .customLong("model-retry-max-wait"), help: ArgumentHelp(ConfigurationKnob.modelRetryMaxWait.help)) var retryMaxWait: String?
    @Option(name: .customLong("chat-history-tokens"), help: ArgumentHelp(ConfigurationKnob.chatHistoryTokens.help)) var chatHistoryTokens: String?
    @Option(name: .customLong("chat-passages"), help: ArgumentHelp(ConfigurationKnob.chatPassages.help)) var chatPassages: String?
    @Option(name: .customLong("chat-max-message-chars"), help: ArgumentHelp(ConfigurationKnob.chatMaxMessageChars.help)) var chatMaxMessageChars: String?

    var flags: [String: String] {
        let values: [(ConfigurationKnob, String?)] = [
            (.models, self.file), (.modelTotalTimeout, self.totalTimeout), (.modelFirstTokenTimeout, self.firstTokenTimeout),
            (.modelIdleTimeout, self.idleTimeout), (.modelConnectTimeout, self.connectTimeout), (.modelMaxConnections, self.maxConnections), (.modelCooldown, self.cooldown),
            (.modelAuthCooldown, self.authCooldown), (.modelFailuresBeforeCooldown, self.failuresBeforeCooldown),
            (.modelChainRetries, self.chainRetries), (.modelRetryMaxWait, self.retryMaxWait),
            (.chatHistoryTokens, self.chatHistoryTokens), (.chatPassages, self.chatPassages), (.chatMaxMessageChars, self.chatMaxMessageChars),
        ]
        return Dictionary(values.compactMap { knob, value in value.map { (knob.name, $0) } }, uniquingKeysWith: { $1 })
    }
}

enum Runtime {
    /// Raises the soft limit on open files to the hard one: every connection
    /// is a descriptor, and the default soft limit (often 1024) would cap
    /// `--max-connections` far below what the machine allows.
    static func raiseFileLimit() {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < limit.rlim_max else { return }
        limit.rlim_cur = limit.rlim_max
        _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    }

    /// `--executor event-loops`: SwiftNIO's event loops (the threads that
    /// already serve the sockets) become Swift concurrency's global executor,
    /// so a request's handler runs on the thread that read it. Called once,
    /// before the server starts; tasks enqueued earlier finish on the pool.
    static func installExecutor(_ configuration: inout KeelConfiguration) {
        guard configuration.executor == .eventLoops else { return }
        if !NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor() {
            FileHandle.standardError.write(Data("keel: --executor event-loops is not supported by this Swift runtime; using the cooperative pool\n".utf8))
            configuration.executor = .pool
        }
    }

    /// Sets up swift-log once for the process, as text or JSON lines.
    static func bootstrapLogging(_ configuration: KeelConfiguration) -> Logger {
        let level = Logger.Level(rawValue: configuration.logLevel) ?? .info
        let format = configuration.logFormat
        LoggingSystem.bootstrap(
            { label, provider in
                var handler: any LogHandler =
                    switch format {
                    case .json: JSONLogHandler(label: label)
                    case .text: TextLogHandler(label: label)
                    }
                handler.metadataProvider = provider
                handler.logLevel = level
                return handler
            },
            metadataProvider: RequestLogMetadata.provider
        )
        var logger = Logger(label: "keel")
        logger[metadataKey: "keel.instance"] = .string(configuration.instanceID)
        return logger
    }

    static func makeStore(_ configuration: KeelConfiguration, logger: Logger) throws -> any KeelStore {
        switch configuration.store {
        case .sqlite(let path): try SQLiteStore(path: path, options: configuration.sqlite)
        case .postgres(let url): try PostgresStore(url: url, logger: logger)
        }
    }

    /// Runs `body`, printing a ``KeelError`` as a message and a hint instead of a trace.
    static func reportingErrors(_ body: () async throws -> Void) async throws {
        do {
            try await body()
        } catch let error as KeelError {
            var text = "error: \(error.message)\n"
            if let hint = error.hint { text += "hint: \(hint)\n" }
            if let detail = error.detail { text += "detail: \(detail)\n" }
            FileHandle.standardError.write(Data(text.utf8))
            throw ExitCode(error.code == .invalidConfiguration ? 2 : 1)
        }
    }
}

/// What one client and one connection may hold (`serve` only).
struct LimitOptions: ParsableArguments {
    @Option(name: .customLong("header-timeout"), help: ArgumentHelp(ConfigurationKnob.headerTimeout.help)) var headerTimeout: String?
    @Option(name: .customLong("idle-timeout"), help: ArgumentHelp(ConfigurationKnob.idleTimeout.help)) var idleTimeout: String?
    @Option(name: .customLong("body-timeout"), help: ArgumentHelp(ConfigurationKnob.bodyTimeout.help)) var bodyTimeout: String?
    @Option(name: .customLong("linger-timeout"), help: ArgumentHelp(ConfigurationKnob.lingerTimeout.help)) var lingerTimeout: String?
    @Option(name: .customLong("max-connections"), help: ArgumentHelp(ConfigurationKnob.maxConnections.help)) var maxConnections: String?
    @Option(name: .customLong("ops-token"), help: ArgumentHelp(ConfigurationKnob.opsToken.help)) var opsToken: String?
    @Option(name: .customLong("admin-token"), help: ArgumentHelp(ConfigurationKnob.adminToken.help)) var adminToken: String?
    @Option(name: .customLong("trusted-proxies"), help: ArgumentHelp(ConfigurationKnob.trustedProxies.help)) var trustedProxies: String?
    @Option(name: .customLong("session-create-rate"), help: ArgumentHelp(ConfigurationKnob.sessionCreateRate.help)) var sessionCreateRate: String?
    @Option(name: .customLong("session-max-active-jobs"), help: ArgumentHelp(ConfigurationKnob.sessionMaxActiveJobs.help))
    var sessionMaxActiveJobs: String?

    var flags: [String: String] {
        let values: [(ConfigurationKnob, String?)] = [
            (.headerTimeout, self.headerTimeout), (.idleTimeout, self.idleTimeout), (.bodyTimeout, self.bodyTimeout),
            (.lingerTimeout, self.lingerTimeout), (.maxConnections, self.maxConnections), (.opsToken, self.opsToken),
            (.adminToken, self.adminToken),
            (.trustedProxies, self.trustedProxies), (.sessionCreateRate, self.sessionCreateRate),
            (.sessionMaxActiveJobs, self.sessionMaxActiveJobs),
        ]
        return Dictionary(values.compactMap { knob, value in value.map { (knob.name, $0) } }, uniquingKeysWith: { $1 })
    }
}

/// How this process shows itself on the admin dashboard (`serve` and `worker`).
struct DashboardOptions: ParsableArguments {
    @Option(name: .customLong("instance-report-interval"), help: ArgumentHelp(ConfigurationKnob.instanceReportInterval.help))
    var instanceReportInterval: String?

    var flags: [String: String] {
        self.instanceReportInterval.map { [ConfigurationKnob.instanceReportInterval.name: $0] } ?? [:]
    }
}
