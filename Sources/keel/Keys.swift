import ArgumentParser
import Foundation
import KeelCore
import KeelServer

/// `keel keys`: the OpenAI-compatible API's keys, kept in the store (only
/// their SHA-256), so every instance knows a key at once.
struct Keys: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create, list and revoke API keys of the OpenAI-compatible API (/v1).",
        discussion: """
            Keys live in the store (--store, as for serve), so every instance sharing it accepts a new key and refuses \
            a revoked one at once. The store keeps only a key's SHA-256: `create` prints the key once, on its last line. \
            Exits 2 on bad arguments.
            """,
        subcommands: [Create.self, List.self, Revoke.self]
    )

    /// `keel keys create`: a new key, printed once.
    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create an API key and print it (on the last line, once: the store keeps only its hash).",
            discussion: """
                The key is `sk-keel-` and 32 random characters. Clients send it as `Authorization: Bearer <key>` \
                (the `openai` client's api_key). Example: keel keys create --name ci --expires 30d --rpm 600
                """
        )

        @OptionGroup var common: CommonOptions
        @Option(help: "A name unique among keys not revoked: letters, digits, '.', '_' and '-', at most 64, not starting with key_.")
        var name: String?
        @Option(help: "When the key stops working: a duration from now (30d, 12h) or a time (2027-01-01T00:00:00Z, 2027-01-01). Default: never.")
        var expires: String?
        @Option(help: "Requests per minute the key may make, counted across every instance (429 above). Default: no limit.")
        var rpm: String?

        func run() async throws {
            try await Runtime.reportingErrors {
                let configuration = try self.common.load()
                let now = Date()
                let name = try KeyArguments.name(self.name)
                let expiresAt = try self.expires.map { try KeyArguments.expiry($0, now: now) }
                let requestsPerMinute = try self.rpm.map(KeyArguments.requestsPerMinute)
                let created = NewAPIKey(name: name, now: now, expiresAt: expiresAt, requestsPerMinute: requestsPerMinute)
                try await KeyArguments.withStore(configuration) { store in
                    try await store.apiKeys.createKey(created.record)
                }
                let key = created.record
                print("created key \"\(key.name)\" (\(key.id)), prefix \(key.prefix)")
                print("expires: \(key.expiresAt.map(KeyArguments.time) ?? "never"); requests per minute: \(key.requestsPerMinute.map(String.init) ?? "no limit")")
                print("This is the only time the key is shown: the store keeps only its SHA-256.")
                print(created.key)
            }
        }
    }

    /// `keel keys list`: every key, its state and its usage; never a key.
    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List every API key (revoked and expired ones too), newest first, with its usage.",
            discussion: "Shows each key's prefix, never the key (the store does not have it)."
        )

        @OptionGroup var common: CommonOptions
        @Flag(help: "Print a JSON array instead of a table.") var json = false

        func run() async throws {
            try await Runtime.reportingErrors {
                let configuration = try self.common.load()
                let listed = try await KeyArguments.withStore(configuration) { store in
                    var listed: [(APIKey, [APIKeyUsage])] = []
                    for key in try await store.apiKeys.keys() {
                        listed.append((key, try await store.apiKeys.usage(keyID: key.id)))
                    }
                    return listed
                }
                let now = Date()
                if self.json {
                    print(Self.json(listed, now: now))
                } else if listed.isEmpty {
                    print("no API keys; create one with: keel keys create --name NAME")
                } else {
                    print(Self.table(listed, now: now))
                }
            }
        }

        static func status(_ key: APIKey, now: Date) -> String {
            if key.revokedAt != nil { return "revoked" }
            return key.isUsable(at: now) ? "active" : "expired"
        }

        static func table(_ listed: [(APIKey, [APIKeyUsage])], now: Date) -> String {
            let header = ["ID", "NAME", "PREFIX", "STATUS", "CREATED", "EXPIRES", "REVOKED", "RPM", "REQUESTS", "TOKENS IN", "TOKENS OUT"]
            let rows = listed.map { key, usage in
                [
                    key.id, key.name, key.prefix, Self.status(key, now: now), KeyArguments.time(key.createdAt),
                    key.expiresAt.map(KeyArguments.time) ?? "-", key.revokedAt.map(KeyArguments.time) ?? "-",
                    key.requestsPerMinute.map(String.init) ?? "-", String(usage.reduce(0) { $0 + $1.requests }),
                    String(usage.reduce(0) { $0 + $1.inputTokens }), String(usage.reduce(0) { $0 + $1.outputTokens }),
                ]
            }
            let widths = header.indices.map { column in ([header] + rows).map { $0[column].count }.max() ?? 0 }
            return ([header] + rows).map { row in
                row.enumerated().map { column, text in
                    column == row.count - 1 ? text : text.padding(toLength: widths[column], withPad: " ", startingAt: 0)
                }.joined(separator: "  ")
            }.joined(separator: "\n")
        }

        static func json(_ listed: [(APIKey, [APIKeyUsage])], now: Date) -> String {
            var writer = JSONWriter()
            writer.array { array in
                for (key, usage) in listed {
                    array.object { object in
                        object.field("id", key.id)
                        object.field("name", key.name)
                        object.field("prefix", key.prefix)
                        object.field("status", Self.status(key, now: now))
                        object.field("created_at", key.createdAt)
                        object.field("expires_at", key.expiresAt)
                        object.field("revoked_at", key.revokedAt)
                        object.field("requests_per_minute", rawJSON: key.requestsPerMinute.map(String.init))
                        object.field("usage") { list in
                            list.array { models in
                                for model in usage {
                                    models.object { entry in
                                        entry.field("model", model.model)
                                        entry.field("requests", Int64(model.requests))
                                        entry.field("input_tokens", Int64(model.inputTokens))
                                        entry.field("output_tokens", Int64(model.outputTokens))
                                        entry.field("last_used_at", model.lastUsedAt)
                                    }
                                }
                            }
                        }
                    }
                }
            }
            return writer.text
        }
    }

    /// `keel keys revoke`: the key stops working on every instance at once.
    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Revoke an API key by name or id; every instance refuses it from the next request.",
            discussion: "Exits 1 when no key has that id and no key not revoked has that name. Revoking a revoked key changes nothing."
        )

        @OptionGroup var common: CommonOptions
        @Argument(help: "The key's name (a key not revoked) or its id (key_…).") var nameOrID: String?

        func run() async throws {
            try await Runtime.reportingErrors {
                let configuration = try self.common.load()
                let target = (self.nameOrID ?? "").trimmingCharacters(in: .whitespaces)
                guard !target.isEmpty else {
                    throw KeelError.invalidConfiguration("keel keys revoke needs a key's name or id.", hint: "See keel keys list.")
                }
                let now = Date()
                let (revoked, revokedBefore) = try await KeyArguments.withStore(configuration) { store -> (APIKey?, APIKey?) in
                    if let revoked = try await store.apiKeys.revokeKey(idOrName: target, now: now) { return (revoked, nil) }
                    // Only revoked keys have this name: say so rather than "no such key".
                    return (nil, try await store.apiKeys.keys().first { $0.name == target })
                }
                if let revoked {
                    let at = revoked.revokedAt ?? now
                    // The store keeps milliseconds: a revocation by this command is within one of now.
                    if now.timeIntervalSince(at) > 0.001 {
                        print("key \"\(revoked.name)\" (\(revoked.id), \(revoked.prefix)) was already revoked at \(KeyArguments.time(at))")
                    } else {
                        print("revoked key \"\(revoked.name)\" (\(revoked.id), \(revoked.prefix)); every instance refuses it from now on")
                    }
                } else if let revokedBefore {
                    print(
                        "key \"\(revokedBefore.name)\" (\(revokedBefore.id), \(revokedBefore.prefix)) was already revoked at "
                            + (revokedBefore.revokedAt.map(KeyArguments.time) ?? "?"))
                } else {
                    FileHandle.standardError.write(Data("error: No API key has the id or name \"\(target)\".\nhint: keel keys list shows the keys.\n".utf8))
                    throw ExitCode(1)
                }
            }
        }
    }
}

/// What `keel keys` reads from its arguments, refused (exit 2) with the fix.
enum KeyArguments {
    static func name(_ name: String?) throws -> String {
        guard let name, !name.isEmpty else {
            throw KeelError.invalidConfiguration("keel keys create needs --name.", hint: "For example: keel keys create --name ci")
        }
        let allowed = name.utf8.allSatisfy { byte in
            (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A) || byte == 0x2E || byte == 0x5F
                || byte == 0x2D
        }
        guard allowed, name.utf8.count <= 64, !name.hasPrefix("key_") else {
            throw KeelError.invalidConfiguration(
                "--name '\(name)' is not a usable key name.",
                hint: "Use at most 64 letters, digits, '.', '_' and '-', not starting with key_ (ids start with it).")
        }
        return name
    }

    /// `--expires`: a duration from now or an RFC 3339 time (or a date, at midnight UTC), in the future.
    static func expiry(_ text: String, now: Date) throws -> Date {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        let date: Date?
        if let duration = Duration(parsing: trimmed) {
            guard duration > .zero else {
                throw KeelError.invalidConfiguration("--expires '\(text)' must be longer than zero.", hint: "For example 30d or 12h.")
            }
            date = now.addingTimeInterval(duration.timeInterval)
        } else {
            date = Self.parseTime(trimmed)
        }
        guard let date else {
            throw KeelError.invalidConfiguration(
                "--expires '\(text)' is neither a duration nor a time.",
                hint: "Use a duration from now such as 30d or 12h, or a time such as 2027-01-01T00:00:00Z or 2027-01-01.")
        }
        guard date > now else {
            throw KeelError.invalidConfiguration(
                "--expires '\(text)' is in the past (\(Self.time(date))).", hint: "Give a time after now, or a duration such as 30d.")
        }
        return date
    }

    static func requestsPerMinute(_ text: String) throws -> Int {
        guard let number = Int(text.trimmingCharacters(in: .whitespaces)), (1...1_000_000).contains(number) else {
            throw KeelError.invalidConfiguration(
                "--rpm '\(text)' must be a whole number from 1 to 1000000.", hint: "Leave --rpm out for a key without a limit.")
        }
        return number
    }

    private static func parseTime(_ text: String) -> Date? {
        let formatter = ISO8601DateFormatter()
        for options: ISO8601DateFormatter.Options in [[.withInternetDateTime], [.withInternetDateTime, .withFractionalSeconds], [.withFullDate]] {
            formatter.formatOptions = options
            if let date = formatter.date(from: text) { return date }
        }
        return nil
    }

    /// A time as `2027-01-01T00:00:00Z`.
    static func time(_ date: Date) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime]
        return formatter.string(from: date)
    }

    /// Opens and migrates the configured store around `body` (as `serve` does).
    static func withStore<T: Sendable>(_ configuration: KeelConfiguration, _ body: @Sendable (any KeelStore) async throws -> T) async throws -> T {
        let logger = Runtime.bootstrapLogging(configuration)
        let store = try Runtime.makeStore(configuration, logger: logger)
        let result = try await store.withRunning {
            try await store.migrate(logger: logger)
            return try await body(store)
        }
        try await store.close()
        return result
    }
}
