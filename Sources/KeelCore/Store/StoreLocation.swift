import Foundation

/// Where the store lives, as given by `--store`: `sqlite:PATH` or a
/// `postgres://` URL.
public enum StoreLocation: Sendable, Equatable, CustomStringConvertible {
    /// An SQLite database file (created with its directory when missing).
    case sqlite(path: String)
    /// A PostgreSQL server, as a `postgres://user:password@host:port/database` URL.
    case postgres(url: String)

    public static let defaultSQLitePath = "./keel-data/keel.sqlite"

    public init(parsing text: String) throws {
        if text.hasPrefix("sqlite:") {
            var path = String(text.dropFirst("sqlite:".count))
            if path.hasPrefix("//") { path = String(path.dropFirst(2)) }
            guard !path.isEmpty else {
                throw KeelError.invalidConfiguration("The SQLite store location '\(text)' has no path.", hint: "Use sqlite:./keel-data/keel.sqlite")
            }
            self = .sqlite(path: path)
        } else if text.hasPrefix("postgres://") || text.hasPrefix("postgresql://") {
            self = .postgres(url: text)
        } else {
            throw KeelError.invalidConfiguration(
                "Unknown store '\(text)'.",
                hint: "Use sqlite:PATH (the default is sqlite:\(Self.defaultSQLitePath)) or postgres://user:password@host:5432/database."
            )
        }
    }

    /// The location without any password, for logs and health output.
    public var description: String {
        switch self {
        case .sqlite(let path):
            return "sqlite:\(path)"
        case .postgres(let url):
            guard var components = URLComponents(string: url) else { return "postgres://…" }
            if components.password != nil { components.password = "***" }
            return components.string ?? "postgres://…"
        }
    }
}
