import Foundation
import KeelCore
import KeelModels
import KeelDocuments

/// `keel doctor`: checks a configuration before start and explains each
/// finding: the store answers and is migrated, the session secret is shared,
/// the heartbeat is below the balancer's idle timeout, the drain fits the
/// orchestrator's grace period, CORS and cookies make sense, upload bytes
/// land where every instance can read them.
public struct ConfigurationDoctor: Sendable {
    public struct Finding: Sendable, Equatable {
        public enum Level: String, Sendable {
            case pass = "PASS"
            case info = "INFO"
            case warn = "WARN"
            case fail = "FAIL"
        }

        public var level: Level
        public var check: String
        public var message: String

        public init(_ level: Level, _ check: String, _ message: String) {
            self.level = level
            self.check = check
            self.message = message
        }
    }

    public var configuration: KeelConfiguration
    /// The load balancer's idle (read) timeout, if the operator told us.
    public var balancerIdleTimeout: Duration?
    /// The orchestrator's grace period between SIGTERM and SIGKILL, if told.
    public var gracePeriod: Duration?
    /// Where provider secrets are looked up (the process's environment).
    public var environment: [String: String]
    /// Whether `KEEL_SECRET`/`--secret` came from outside (otherwise the store keeps one).
    public init(
        configuration: KeelConfiguration, balancerIdleTimeout: Duration? = nil, gracePeriod: Duration? = nil,
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) {
        self.environment = environment
        self.configuration = configuration
        self.balancerIdleTimeout = balancerIdleTimeout
        self.gracePeriod = gracePeriod
    }

    /// `15s`, `500ms`, `1m30s`.
    static func text(_ duration: Duration) -> String {
        let milliseconds = Int64((duration.timeInterval * 1000).rounded())
        if milliseconds % 1000 != 0 { return "\(milliseconds)ms" }
        let seconds = milliseconds / 1000
        if seconds >= 60 && seconds % 60 == 0 { return "\(seconds / 60)m" }
        return "\(seconds)s"
    }

    /// The checks that need no store.
    public func checkSettings() -> [Finding] {
        var findings: [Finding] = []
        let heartbeat = self.configuration.streams.heartbeatInterval
        if let idle = self.balancerIdleTimeout {
            if heartbeat >= idle {
                findings.append(Finding(.fail, "heartbeat", "--sse-heartbeat \(Self.text(heartbeat)) is not below the balancer's idle timeout \(Self.text(idle)): idle streams are cut between heartbeats (seed report 002). Lower --sse-heartbeat to at most \(Self.text(idle / 2))."))
            } else if heartbeat * 2 > idle {
                findings.append(Finding(.warn, "heartbeat", "--sse-heartbeat \(Self.text(heartbeat)) is below the balancer's idle timeout \(Self.text(idle)), with a thin margin; a delayed heartbeat could still be cut. Prefer at most \(Self.text(idle / 2))."))
            } else {
                findings.append(Finding(.pass, "heartbeat", "--sse-heartbeat \(Self.text(heartbeat)) is well below the balancer's idle timeout \(Self.text(idle))."))
            }
        } else {
            findings.append(Finding(.info, "heartbeat", "--sse-heartbeat is \(Self.text(heartbeat)). Pass --balancer-idle-timeout (nginx proxy_read_timeout, ALB idle_timeout; both default to 60s) to check it is below."))
        }
        let needed = self.configuration.drainDelay + self.configuration.drainTimeout + .seconds(5)
        if let grace = self.gracePeriod {
            if grace < needed {
                findings.append(Finding(.fail, "drain", "drain delay \(Self.text(self.configuration.drainDelay)) + drain timeout \(Self.text(self.configuration.drainTimeout)) + 5s for releasing jobs = \(Self.text(needed)), above the grace period \(Self.text(grace)): the orchestrator SIGKILLs the process mid-drain. Raise the grace period (Kubernetes terminationGracePeriodSeconds, systemd TimeoutStopSec) or lower --drain-timeout."))
            } else {
                findings.append(Finding(.pass, "drain", "drain (\(Self.text(needed)) at most) fits the grace period \(Self.text(grace))."))
            }
        } else {
            findings.append(Finding(.info, "drain", "a drain takes up to \(Self.text(needed)). Pass --grace-period (Kubernetes defaults to 30s) to check the orchestrator waits that long."))
        }
        let cors = self.configuration.cors
        if cors.allowedOrigins.isEmpty {
            findings.append(Finding(.info, "cors", "no --cors-origins: only pages served from the API's own origin can call it. A browser app on another origin needs its exact origin listed."))
        } else {
            if cors.allowsAnyOrigin {
                findings.append(Finding(.warn, "cors", "origin * without credentials: browsers will not send the session cookie cross-origin; clients must use Authorization: Bearer."))
            }
            let plain = cors.allowedOrigins.filter { $0.hasPrefix("http://") && !$0.contains("localhost") && !$0.contains("127.0.0.1") }
            if !plain.isEmpty {
                findings.append(Finding(.warn, "cors", "origins over plain http: \(plain.joined(separator: ", ")); cookies then travel unencrypted."))
            }
            if !cors.allowsAnyOrigin && plain.isEmpty {
                findings.append(Finding(.pass, "cors", "allowed origins \(cors.allowedOrigins.joined(separator: ", "))\(cors.allowCredentials ? " with credentials" : "")."))
            }
        }
        if self.configuration.cookieSecure == .never {
            findings.append(Finding(.warn, "cookies", "--cookie-secure never: the session cookie is sent over plain HTTP too."))
        }
        switch (self.configuration.store, self.configuration.uploads.blobs) {
        case (.postgres, .directory(let path)):
            findings.append(Finding(.warn, "uploads", "upload bytes go to \(path) while state is in PostgreSQL: every instance must mount the same volume there, or uploads started on one instance cannot continue on another. --upload-blobs auto keeps them in PostgreSQL."))
        case (.sqlite(let path), _):
            if !path.hasPrefix("/") {
                findings.append(Finding(.info, "store", "the SQLite path \(path) is relative to the working directory: processes sharing it must start in the same directory (or use an absolute path)."))
            }
        default:
            break
        }
        let extractor = DocumentExtractor(limits: self.configuration.documents.limits, popplerDirectory: self.configuration.documents.popplerDirectory)
        if extractor.pdfSupportAvailable {
            findings.append(Finding(.pass, "pdf", "Poppler's pdfinfo and pdftohtml are found\(self.configuration.documents.popplerPath.isEmpty ? " on PATH" : " in --poppler-path"): PDF documents can be read."))
        } else {
            findings.append(Finding(.warn, "pdf", "Poppler's pdfinfo and pdftohtml are not found\(self.configuration.documents.popplerPath.isEmpty ? " on PATH" : " in --poppler-path"): PDF documents will fail with pdf_support_missing (other formats work). Install Debian's poppler-utils (apt-get install poppler-utils) on every instance that runs workers."))
        }
        findings.append(self.checkModels())
        return findings
    }

    /// The models file: parsed and checked as `keel serve` would at start,
    /// and every provider's key variable set (nothing is sent to a model:
    /// `keel models check` does that).
    func checkModels() -> Finding {
        guard self.configuration.models.file != nil else {
            return Finding(.info, "models", "no models file (--models): chat answers from retrieval only, and model features are off.")
        }
        do {
            guard let catalog = try ModelService.validate(self.configuration.models, environment: self.environment) else {
                return Finding(.info, "models", "no models file.")
            }
            let chains = catalog.chainOrder.map { "\($0) = \(catalog.chains[$0]!.joined(separator: " > "))" }.joined(separator: "; ")
            return Finding(
                .pass, "models",
                "\(self.configuration.models.file ?? "models"): \(catalog.models.count) model(s) on \(catalog.providers.count) provider(s), every key variable set; chains: \(chains). Run keel models check to send each a tiny request.")
        } catch {
            let place = error.line.map { "\(error.source):\($0)" } ?? error.source
            return Finding(.fail, "models", "\(place): \(error.message) Fix: \(error.fix)")
        }
    }

    /// The checks against the store (nothing is written).
    public func checkStore(_ store: any KeelStore) async -> [Finding] {
        var findings: [Finding] = []
        let started = ContinuousClock.now
        do {
            try await store.ping()
            findings.append(Finding(.pass, "store", "\(store.driverName) answers (\(Int((ContinuousClock.now - started).timeInterval * 1000)) ms)."))
        } catch {
            findings.append(Finding(.fail, "store", "\(store.driverName) does not answer: \((error as? KeelError)?.detail ?? "\(error)"). Check --store (host, port, credentials, sslmode) and that the database exists."))
            return findings
        }
        do {
            let version = try await store.schemaVersion()
            let supported = store.supportedSchemaVersion
            if version > supported {
                findings.append(Finding(.fail, "migrations", "the store is at schema \(version), newer than this binary (\(supported)): run the newer keel."))
            } else if version < supported {
                findings.append(Finding(.warn, "migrations", "the store is at schema \(version); this binary migrates it to \(supported) at start (or run keel migrate first). Older binaries still running against it will refuse to start afterwards."))
            } else {
                findings.append(Finding(.pass, "migrations", "the store is at schema \(version), current."))
            }
        } catch {
            findings.append(Finding(.fail, "migrations", "cannot read the schema version: \(error)."))
        }
        if !self.configuration.secrets.isEmpty {
            findings.append(Finding(.pass, "secret", "session secrets come from --secret/KEEL_SECRET (\(self.configuration.secrets.count)); every instance must get the same list, or sessions made on one are invalid on another (seed report 001)."))
        } else {
            let stored = try? await store.meta.metaValue(forKey: SessionSigner.storedSecretKey)
            findings.append(Finding(.pass, "secret", stored == nil
                ? "no KEEL_SECRET: the first instance to start generates one and keeps it in the store, and every instance on this store uses it."
                : "no KEEL_SECRET: the secret kept in the store is shared by every instance on this store."))
        }
        return findings
    }
}
