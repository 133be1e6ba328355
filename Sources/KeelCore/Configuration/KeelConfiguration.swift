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
    /// After SIGTERM, how long `/ready` reports 503 while requests are still served.
    public var drainDelay: Duration = .seconds(5)
    /// After the drain delay, how long in-flight requests may take to finish.
    public var drainTimeout: Duration = .seconds(30)
    public var sqlite = SQLiteOptions()
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
    /// `full` survives power loss; `normal` only process crashes (faster writes).
    public var synchronous: String = "full"

    public init() {}
}
