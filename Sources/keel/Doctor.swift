import ArgumentParser
import Foundation
import KeelCore
import KeelServer
import Logging

/// `keel doctor`: checks a configuration before start, with the same flags,
/// environment and config file `keel serve` reads.
struct Doctor: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check a configuration before starting: store, migrations, secret, heartbeat, drain, CORS, uploads.",
        discussion: """
            Reads settings exactly as `keel serve` does (flags, KEEL_* environment, --config file) and explains each \
            finding. Writes nothing to the store (a missing SQLite file is created empty). Exits 1 when a check fails. Tell it about the infrastructure around \
            Keel to check more: --balancer-idle-timeout (nginx proxy_read_timeout, ALB idle_timeout) and --grace-period \
            (Kubernetes terminationGracePeriodSeconds, systemd TimeoutStopSec).
            """
    )

    @OptionGroup var common: CommonOptions
    @Option(help: ArgumentHelp(ConfigurationKnob.secret.help)) var secret: String?
    @Option(name: .customLong("cors-origins"), help: ArgumentHelp(ConfigurationKnob.corsOrigins.help)) var corsOrigins: String?
    @Option(name: .customLong("cors-credentials"), help: ArgumentHelp(ConfigurationKnob.corsCredentials.help)) var corsCredentials: String?
    @Option(name: .customLong("cookie-secure"), help: ArgumentHelp(ConfigurationKnob.cookieSecure.help)) var cookieSecure: String?
    @Option(name: .customLong("drain-delay"), help: ArgumentHelp(ConfigurationKnob.drainDelay.help)) var drainDelay: String?
    @Option(name: .customLong("sse-heartbeat"), help: ArgumentHelp(ConfigurationKnob.sseHeartbeat.help)) var sseHeartbeat: String?
    @OptionGroup(title: "Jobs") var jobs: JobOptions
    @OptionGroup(title: "Uploads") var uploads: UploadOptions
    @OptionGroup(title: "Documents") var documents: DocumentOptions
    @OptionGroup(title: "Models and chat") var models: ModelOptions

    @Option(name: .customLong("balancer-idle-timeout"), help: "The load balancer's idle/read timeout (e.g. 60s), to check the heartbeat is below it.")
    var balancerIdleTimeout: String?

    @Option(name: .customLong("grace-period"), help: "The orchestrator's grace period between SIGTERM and SIGKILL (e.g. 30s), to check the drain fits.")
    var gracePeriod: String?

    func run() async throws {
        var flags: [String: String] = [:]
        let values: [(ConfigurationKnob, String?)] = [
            (.secret, self.secret), (.corsOrigins, self.corsOrigins), (.corsCredentials, self.corsCredentials), (.cookieSecure, self.cookieSecure),
            (.drainDelay, self.drainDelay), (.sseHeartbeat, self.sseHeartbeat),
        ]
        for (knob, value) in values { flags[knob.name] = value }
        flags.merge(self.jobs.flags) { $1 }
        flags.merge(self.uploads.flags) { $1 }
        flags.merge(self.documents.flags) { $1 }
        flags.merge(self.models.flags) { $1 }
        let idle = try self.balancerIdleTimeout.map { try Self.duration($0, "--balancer-idle-timeout") }
        let grace = try self.gracePeriod.map { try Self.duration($0, "--grace-period") }

        let configuration: KeelConfiguration
        do {
            configuration = try self.common.load(extraFlags: flags)
        } catch let error as KeelError {
            Self.print(.init(.fail, "settings", error.message + (error.hint.map { " " + $0 } ?? "")))
            throw ExitCode(1)
        }
        Self.print(.init(.pass, "settings", "flags, environment and config file parse; store \(configuration.store)."))
        let doctor = ConfigurationDoctor(configuration: configuration, balancerIdleTimeout: idle, gracePeriod: grace)
        var findings = doctor.checkSettings()
        var logger = Logger(label: "keel-doctor")
        logger.logLevel = .critical
        do {
            let store = try Runtime.makeStore(configuration, logger: logger)
            let checked = try await store.withRunning {
                try await withThrowingTaskGroup(of: [ConfigurationDoctor.Finding]?.self) { group in
                    group.addTask { await doctor.checkStore(store) }
                    group.addTask {
                        try await Task.sleep(for: .seconds(10))
                        return nil
                    }
                    let first = try await group.next() ?? nil
                    group.cancelAll()
                    return first ?? [ConfigurationDoctor.Finding(.fail, "store", "no answer from the store within 10 s.")]
                }
            }
            findings = checked + findings
            try? await store.close()
        } catch let error as KeelError {
            findings.insert(.init(.fail, "store", error.message + (error.hint.map { " " + $0 } ?? "")), at: 0)
        }
        for finding in findings { Self.print(finding) }
        let failures = findings.filter { $0.level == .fail }.count
        Swift.print(failures == 0 ? "ok: no failures (\(findings.filter { $0.level == .warn }.count) warnings)" : "failed: \(failures) check(s)")
        if failures > 0 { throw ExitCode(1) }
    }

    static func print(_ finding: ConfigurationDoctor.Finding) {
        Swift.print("\(finding.level.rawValue)  \(finding.check.padding(toLength: 10, withPad: " ", startingAt: 0)) \(finding.message)")
    }

    static func duration(_ text: String, _ name: String) throws -> Duration {
        guard let duration = Duration(parsing: text), duration > .zero else {
            throw ValidationError("\(name) '\(text)' is not a duration such as 60s or 2m.")
        }
        return duration
    }
}
