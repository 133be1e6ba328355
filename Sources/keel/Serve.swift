import ArgumentParser
import KeelCore
import KeelServer
import Logging

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the HTTP server.",
        discussion: """
            With no flags, keeps state in SQLite under ./keel-data (several processes on one machine may share it). \
            Point --store at PostgreSQL to run several instances behind a load balancer. Every setting is also a \
            KEEL_* environment variable and a key of the --config file. On SIGTERM or SIGINT, /ready turns 503, \
            requests are served for --drain-delay, then in-flight requests get up to --drain-timeout, and the process exits 0. \
            Workers (--workers) stop claiming at once; jobs still running when the drain timeout passes are released \
            without counting the attempt, and open event streams close so clients resume on another instance.
            """
    )

    @OptionGroup var common: CommonOptions

    @Option(help: ArgumentHelp(ConfigurationKnob.host.help)) var host: String?
    @Option(help: ArgumentHelp(ConfigurationKnob.port.help)) var port: String?
    @Option(help: ArgumentHelp(ConfigurationKnob.secret.help)) var secret: String?
    @Option(name: .customLong("session-idle-timeout"), help: ArgumentHelp(ConfigurationKnob.sessionIdleTimeout.help)) var sessionIdleTimeout: String?
    @Option(name: .customLong("session-refresh-interval"), help: ArgumentHelp(ConfigurationKnob.sessionRefreshInterval.help))
    var sessionRefreshInterval: String?
    @Option(name: .customLong("session-max-bytes"), help: ArgumentHelp(ConfigurationKnob.sessionMaxBytes.help)) var sessionMaxBytes: String?
    @Option(name: .customLong("cookie-secure"), help: ArgumentHelp(ConfigurationKnob.cookieSecure.help)) var cookieSecure: String?
    @Option(name: .customLong("cors-origins"), help: ArgumentHelp(ConfigurationKnob.corsOrigins.help)) var corsOrigins: String?
    @Option(name: .customLong("cors-credentials"), help: ArgumentHelp(ConfigurationKnob.corsCredentials.help)) var corsCredentials: String?
    @Option(name: .customLong("cors-max-age"), help: ArgumentHelp(ConfigurationKnob.corsMaxAge.help)) var corsMaxAge: String?
    @Option(name: .customLong("max-body-bytes"), help: ArgumentHelp(ConfigurationKnob.maxBodyBytes.help)) var maxBodyBytes: String?
    @Option(name: .customLong("listen-backlog"), help: ArgumentHelp(ConfigurationKnob.listenBacklog.help)) var listenBacklog: String?
    @Option(help: ArgumentHelp(ConfigurationKnob.executor.help)) var executor: String?
    @Option(name: .customLong("drain-delay"), help: ArgumentHelp(ConfigurationKnob.drainDelay.help)) var drainDelay: String?
    @Option(name: .customLong("sse-heartbeat"), help: ArgumentHelp(ConfigurationKnob.sseHeartbeat.help)) var sseHeartbeat: String?
    @Option(name: .customLong("sse-retry"), help: ArgumentHelp(ConfigurationKnob.sseRetry.help)) var sseRetry: String?
    @Option(name: .customLong("sse-batch-size"), help: ArgumentHelp(ConfigurationKnob.sseBatchSize.help)) var sseBatchSize: String?
    @OptionGroup(title: "Jobs") var jobs: JobOptions
    @OptionGroup(title: "Uploads") var uploads: UploadOptions
    @OptionGroup(title: "Connections and quotas") var limits: LimitOptions
    @OptionGroup(title: "Documents") var documents: DocumentOptions
    @OptionGroup(title: "Models and chat") var models: ModelOptions
    @OptionGroup(title: "Admin dashboard") var dashboard: DashboardOptions

    private var flags: [String: String] {
        let values: [(ConfigurationKnob, String?)] = [
            (.host, self.host), (.port, self.port), (.secret, self.secret),
            (.sessionIdleTimeout, self.sessionIdleTimeout), (.sessionRefreshInterval, self.sessionRefreshInterval),
            (.sessionMaxBytes, self.sessionMaxBytes), (.cookieSecure, self.cookieSecure), (.corsOrigins, self.corsOrigins),
            (.corsCredentials, self.corsCredentials), (.corsMaxAge, self.corsMaxAge), (.maxBodyBytes, self.maxBodyBytes),
            (.listenBacklog, self.listenBacklog), (.executor, self.executor),
            (.drainDelay, self.drainDelay), (.sseHeartbeat, self.sseHeartbeat), (.sseRetry, self.sseRetry), (.sseBatchSize, self.sseBatchSize),
        ]
        return Dictionary(values.compactMap { knob, value in value.map { (knob.name, $0) } }, uniquingKeysWith: { $1 })
            .merging(self.jobs.flags) { $1 }
            .merging(self.uploads.flags) { $1 }
            .merging(self.limits.flags) { $1 }
            .merging(self.documents.flags) { $1 }
            .merging(self.models.flags) { $1 }
            .merging(self.dashboard.flags) { $1 }
    }

    func run() async throws {
        try await Runtime.reportingErrors {
            var loaded = try self.common.load(extraFlags: self.flags)
            Runtime.installExecutor(&loaded)
            Runtime.raiseFileLimit()
            let configuration = loaded
            let logger = Runtime.bootstrapLogging(configuration)
            if let warning = configuration.connections.fileDescriptorWarning { logger.warning("\(warning)") }
            let store = try Runtime.makeStore(configuration, logger: logger)
            try await store.withRunning {
                try await store.migrate(logger: logger)
                let app = try await KeelApplication.build(configuration: configuration, store: store, logger: logger)
                logger.notice(
                    "keel serving",
                    metadata: [
                        "keel.address": "\(configuration.host):\(configuration.port)", "keel.store": "\(configuration.store)",
                        "keel.version": "\(KeelVersion.current)", "keel.executor": "\(configuration.executor.rawValue)",
                    ]
                )
                try await app.runUntilShutdown()
                logger.notice("keel stopped")
            }
            try await store.close()
        }
    }
}
