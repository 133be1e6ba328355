import ArgumentParser
import AsyncHTTPClient
import Foundation
import KeelCore
import KeelModels
import KeelSQLite
import Logging
import Synchronization

/// Issue 17: what the model router adds to a streamed answer. The same
/// ``OpenAICompatibleProvider`` (one HTTP client, one upstream) is called
/// two ways, taken in turn: directly, and through a ``ModelRouter`` over it
/// (a one-model chain, the shared health in a real, migrated SQLite store).
/// Each pair runs direct-then-routed or routed-then-direct, alternately, so
/// that neither always comes second on a warm connection. Timed from the
/// call to the first text event and to the end of the stream, in this
/// process; the upstream (`bench/models-router.sh`: nginx sending a static
/// 500-chunk stream) runs in another.
///
/// With `--failover`, issue 17's failover cost instead: a two-model chain
/// whose first model answers 429 and whose second is the same upstream as
/// above, against that second model's provider alone (see ``Side``).
struct RouterOverhead: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "router",
        abstract:
            "The model router's added time to first token and total time, against its provider called directly (interleaved rounds); with --failover, the added time of a failover after a 429.")

    @Option(help: "The upstream's OpenAI-compatible base URL, up to and including /v1.") var upstream = "http://127.0.0.1:8081/v1"
    @Option(help: "The model id sent upstream.") var model = "tokens-500"
    @Option(help: "Text events every answer must have (the run fails otherwise).") var tokens = 500
    @Option(help: "Timed rounds (one request of each side each).") var requests = 1000
    @Option(help: "Untimed rounds first (connections, caches, the store).") var warmup = 200
    @Option(help: "Concurrent clients, each running its share of the rounds in turn.") var concurrency = 1
    @Option(help: "SQLite file of the models' shared health (default: a new one in a temporary directory).") var store: String?
    @Option(help: "Run only one side, for a profiler (direct, routed or relay; with --failover: direct, failover or cooling).") var only: Side?
    @Option(help: "Write every timed request to this CSV file (round, position in its round, side, ttft_ms, total_ms, fallback reason).") var csv: String?
    @Option(help: "How stale the router's copy of the shared health may be, in milliseconds (RouterLimits.healthCacheAge; keel serve: 1000).")
    var healthCacheAgeMs = 1000
    @Flag(help: "Also time a bare relay: the provider's stream read in a task of its own and passed on through a second AsyncThrowingStream, with none of the router's work.")
    var withRelay = false
    @Flag(
        help: """
            Failover cost: a chain of two models, the first answering 429 (--rate-limited, --rate-limited-retry-after), \
            the second the --upstream; sides direct (the second model's provider alone), failover (no cooldown: every request \
            meets the 429, records it in the store and falls back) and cooling (the 429 has a Retry-After: the first request \
            falls back, the later ones skip the cooling model).
            """)
    var failover = false
    @Option(help: "With --failover: a base URL (up to /v1) whose chat completions answer 429 without any retry header.")
    var rateLimited = "http://127.0.0.1:8081/rate-limited/v1"
    @Option(help: "With --failover: a base URL (up to /v1) whose chat completions answer 429 with a Retry-After.")
    var rateLimitedRetryAfter = "http://127.0.0.1:8081/rate-limited-retry-after/v1"

    enum Side: String, ExpressibleByArgument, Sendable, CaseIterable {
        /// The provider alone (with --failover: the chain's second model's).
        case direct
        /// A one-model chain over the same provider.
        case routed
        /// The provider's stream relayed through a task and a second stream.
        case relay
        /// The two-model chain with the cooldown off: the 429, its write to
        /// the store, then the second model, on every request.
        case failover
        /// The two-model chain with the defaults and a 429 with a
        /// `Retry-After`: the first model cools, later requests skip it.
        case cooling

        var label: String {
            switch self {
            case .direct: "direct (provider alone)"
            case .routed: "routed (ModelRouter + provider)"
            case .relay: "relay (provider + one stream hop)"
            case .failover: "failover (429, then the second)"
            case .cooling: "cooling (first model skipped)"
            }
        }
    }

    /// The chains' model names (Keel's, not sent upstream).
    enum Names {
        static let answering = "answering"
        static let rateLimited = "rate-limited"
        static let rateLimitedRetryAfter = "rate-limited-retry-after"
        static let overhead = "fake"
    }

    func validate() throws {
        guard self.requests > 0, self.warmup >= 0, self.concurrency > 0, self.tokens > 0 else {
            throw ValidationError("--requests, --concurrency and --tokens must be positive, --warmup not negative")
        }
        if self.failover {
            if self.withRelay { throw ValidationError("--with-relay is for the overhead run, not --failover") }
            // Concurrent requests race the health store in ways the checks
            // cannot tell from a fault: a zero cooldown still sets
            // cooldown_until to the current millisecond (rounded), so a
            // request in the same half millisecond skips the model as
            // cooling_down; a cooldown may end between a request's start and
            // the router's look at it.
            if self.concurrency != 1 { throw ValidationError("--failover checks every answer's fallback: one client only (--concurrency 1)") }
            if let only = self.only, ![.direct, .failover, .cooling].contains(only) {
                throw ValidationError("with --failover, --only is direct, failover or cooling")
            }
        } else if let only = self.only, ![.direct, .routed, .relay].contains(only) {
            throw ValidationError("--only failover and --only cooling need --failover")
        }
    }

    /// The sides of every round, before the rotation.
    var sides: [Side] {
        if let only = self.only { return [only] }
        if self.failover { return [.direct, .failover, .cooling] }
        return self.withRelay ? [.direct, .routed, .relay] : [.direct, .routed]
    }

    /// The routers of the run, each over its own chain, all sharing the
    /// health store and the HTTP client.
    struct Routers: Sendable {
        var routed: ModelRouter?
        var failover: ModelRouter?
        var cooling: ModelRouter?

        var models: [String] {
            Array(Set([self.routed, self.failover, self.cooling].compactMap { $0?.catalog.modelOrder }.joined())).sorted()
        }
    }

    func routers(_ provider: OpenAICompatibleProvider, client: HTTPClient, health: any ModelHealthStore, logger: Logger) -> Routers {
        var defaults = RouterLimits()
        defaults.healthCacheAge = .milliseconds(self.healthCacheAgeMs)
        guard self.failover else {
            let catalog = ModelCatalog(
                providers: [ModelCatalog.Provider(name: "upstream", kind: .openai, baseURL: self.upstream)],
                models: [ModelCatalog.Model(name: Names.overhead, provider: "upstream", model: self.model)],
                chains: [("default", [Names.overhead])])
            return Routers(
                routed: ModelRouter(catalog: catalog, providers: [Names.overhead: provider], healthStore: health, limits: defaults, logger: logger))
        }
        // Two chains of two models on one provider kind: the first model
        // on a 429 location, the second on the upstream above.
        func router(first: String, baseURL: String, limits: RouterLimits) -> ModelRouter {
            let catalog = ModelCatalog(
                providers: [
                    ModelCatalog.Provider(name: "limited", kind: .openai, baseURL: baseURL),
                    ModelCatalog.Provider(name: "upstream", kind: .openai, baseURL: self.upstream),
                ],
                models: [
                    ModelCatalog.Model(name: first, provider: "limited", model: self.model),
                    ModelCatalog.Model(name: Names.answering, provider: "upstream", model: self.model),
                ],
                chains: [("default", [first, Names.answering])])
            let limited = OpenAICompatibleProvider(baseURL: baseURL, apiKey: nil, httpClient: client)
            return ModelRouter(
                catalog: catalog, providers: [first: limited, Names.answering: provider], healthStore: health, limits: limits, logger: logger)
        }
        // No cooldown: each 429 is counted in the store (one write) and the
        // model stays in the chain for the next request.
        var noCooldown = defaults
        noCooldown.cooldown = .zero
        noCooldown.failuresBeforeCooldown = 1_000_000_000
        return Routers(
            failover: router(first: Names.rateLimited, baseURL: self.rateLimited, limits: noCooldown),
            cooling: router(first: Names.rateLimitedRetryAfter, baseURL: self.rateLimitedRetryAfter, limits: defaults))
    }

    func run() async throws {
        let logger = {
            var logger = Logger(label: "keel-bench.router")
            // Each failover is a warning in the router's log: not here.
            logger.logLevel = self.failover ? .error : .warning
            return logger
        }()
        var path = self.store
        var directory: URL?
        if path == nil {
            let temporary = FileManager.default.temporaryDirectory.appendingPathComponent("keel-bench-router-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: temporary, withIntermediateDirectories: true)
            directory = temporary
            path = temporary.appendingPathComponent("keel.sqlite").path
        }
        defer { if let directory { try? FileManager.default.removeItem(at: directory) } }

        // The client `ModelProviders.httpClient` builds for keel serve, with
        // a connection per concurrent client.
        var configuration = HTTPClient.Configuration()
        configuration.timeout = HTTPClient.Configuration.Timeout(connect: .seconds(10))
        configuration.redirectConfiguration = .disallow
        configuration.decompression = .disabled
        configuration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = max(8, self.concurrency)
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        defer { Client.shutdown(client) }

        let provider = OpenAICompatibleProvider(baseURL: self.upstream, apiKey: nil, httpClient: client)
        let messages: [ChatMessage] = [.user("Say 500 words.")]
        // What the router sends for this model: the same request, byte for byte.
        let direct = ChatRequest(model: self.model, messages: messages, includeUsage: true)
        let routed = RoutedRequest(messages: messages)
        let tokens = self.tokens

        let store = try SQLiteStore(path: path!)
        let (rounds, elapsed) = try await store.withRunning {
            _ = try await store.migrate(logger: logger)
            let routers = self.routers(provider, client: client, health: store.modelHealth, logger: logger)
            // What a refresh of the router's health cache costs: one read of the store.
            var reads: [Double] = []
            for _ in 0..<200 {
                let sent = ContinuousClock.now
                _ = try await store.modelHealth.health(models: routers.models)
                reads.append((ContinuousClock.now - sent).milliseconds)
            }
            print("# one read of the shared health (SQLite, the cache's refresh, once per healthCacheAge): \(Summary(values: reads))")
            if self.failover {
                // The two parts of a failover, apart: the 429's round trip
                // through a provider, and the failure's write to the store
                // (on a model of no chain).
                let limited = OpenAICompatibleProvider(baseURL: self.rateLimited, apiKey: nil, httpClient: client)
                var trips: [Double] = []
                var writes: [Double] = []
                for _ in 0..<200 {
                    var sent = ContinuousClock.now
                    do {
                        for try await _ in limited.stream(direct) {}
                        throw Incomplete(description: "\(self.rateLimited) answered")
                    } catch let error as ProviderError {
                        guard case .rateLimited(nil) = error.kind else { throw error }
                    }
                    trips.append((ContinuousClock.now - sent).milliseconds)
                    sent = ContinuousClock.now
                    _ = try await store.modelHealth.recordFailure(model: "bench-scratch", reason: "rate_limited", cooldown: .zero, now: Date())
                    writes.append((ContinuousClock.now - sent).milliseconds)
                }
                print("# one 429 through the provider, to its ProviderError (no retry header): \(Summary(values: trips))")
                print("# one failure written to the shared health (SQLite, the failover's write): \(Summary(values: writes))")
            }
            let cooling = CoolingWatch()
            let warmup = self.warmup
            let concurrency = self.concurrency
            let requests = self.requests
            let baseSides = self.sides
            let started = ContinuousClock.now
            let rounds = try await withThrowingTaskGroup(of: [Round].self) { group in
                for worker in 0..<concurrency {
                    // Rounds of this client: its share of the timed ones, after its share of the warm-up.
                    let timed = requests / concurrency + (worker < requests % concurrency ? 1 : 0)
                    let untimed = warmup / concurrency + (worker < warmup % concurrency ? 1 : 0)
                    group.addTask {
                        var rounds: [Round] = []
                        rounds.reserveCapacity(timed)
                        for index in 0..<(untimed + timed) {
                            // Each side in turn: the order rotates from one round to the next.
                            let turn = (index + worker) % baseSides.count
                            let sides = Array(baseSides[turn...] + baseSides[..<turn])
                            var round = Round(order: sides)
                            for side in sides {
                                switch side {
                                case .direct: round.samples[.direct] = try await Self.direct(provider, direct, tokens: tokens)
                                case .routed:
                                    let (sample, fallbacks) = try await Self.routed(routers.routed!, routed, tokens: tokens, answeredBy: Names.overhead)
                                    guard fallbacks.isEmpty else { throw Incomplete(description: "routed: fallbacks \(fallbacks)") }
                                    round.samples[.routed] = sample
                                case .relay: round.samples[.relay] = try await Self.relay(provider, direct, tokens: tokens)
                                case .failover:
                                    let (timing, fallbacks) = try await Self.routed(routers.failover!, routed, tokens: tokens, answeredBy: Names.answering)
                                    guard fallbacks.count == 1, let fallback = fallbacks.first, fallback.reason == "rate_limited",
                                        fallback.from == Names.rateLimited, fallback.to == Names.answering, !fallback.afterFirstToken
                                    else {
                                        throw Incomplete(description: "failover: expected one rate_limited fallback, got \(fallbacks)")
                                    }
                                    var sample = timing
                                    sample.fallback = fallback.reason
                                    round.samples[.failover] = sample
                                case .cooling:
                                    round.samples[.cooling] = try await Self.cooling(routers.cooling!, routed, tokens: tokens, watch: cooling)
                                }
                            }
                            if index >= untimed { rounds.append(round) }
                        }
                        return rounds
                    }
                }
                return try await group.reduce(into: []) { $0 += $1 }
            }
            return (rounds, ContinuousClock.now - started)
        }
        try await store.close()
        Self.report(rounds, elapsed: elapsed, options: self)
        if let csv = self.csv {
            var text = "round,position,side,ttft_ms,total_ms,fallback\n"
            for (index, round) in rounds.enumerated() {
                for (position, side) in round.order.enumerated() {
                    let sample = round.samples[side] ?? .zero
                    text += "\(index),\(position),\(side.rawValue),\(sample.firstToken),\(sample.total),\(sample.fallback ?? "")\n"
                }
            }
            try Data(text.utf8).write(to: URL(fileURLWithPath: csv))
        }
    }

    struct Sample {
        static let zero = Sample(firstToken: 0, total: 0)
        /// Milliseconds from the call to the first text event.
        var firstToken: Double
        /// Milliseconds from the call to the end of the stream.
        var total: Double
        /// The reason of the answer's one fallback, if it had one.
        var fallback: String?
    }

    /// One request of each side.
    struct Round {
        var samples: [Side: Sample] = [:]
        /// The sides in the order they ran.
        var order: [Side]
    }

    struct Incomplete: Error, CustomStringConvertible {
        var description: String
    }

    /// The provider alone: its events until its stream ends.
    static func direct(_ provider: OpenAICompatibleProvider, _ request: ChatRequest, tokens: Int) async throws -> Sample {
        let start = ContinuousClock.now
        var first: ContinuousClock.Instant?
        var count = 0
        var finished = false
        for try await event in provider.stream(request) {
            switch event {
            case .text:
                if first == nil { first = .now }
                count += 1
            case .finished: finished = true
            case .reasoning, .usage: break
            }
        }
        let end = ContinuousClock.now
        guard let first, count == tokens, finished else {
            throw Incomplete(description: "direct: \(count) text events of \(tokens), finished: \(finished)")
        }
        return Sample(firstToken: (first - start).milliseconds, total: (end - start).milliseconds)
    }

    /// A router: its events until its stream ends, which must be the whole
    /// answer from `answeredBy`; returns the answer's fallbacks to check.
    static func routed(_ router: ModelRouter, _ request: RoutedRequest, tokens: Int, answeredBy: String) async throws -> (Sample, [ModelFallback]) {
        let start = ContinuousClock.now
        var first: ContinuousClock.Instant?
        var count = 0
        var summary: RoutingSummary?
        for try await event in router.stream(request) {
            switch event {
            case .text:
                if first == nil { first = .now }
                count += 1
            case .finished(let finished): summary = finished
            case .model, .fallback, .reasoning, .usage: break
            }
        }
        let end = ContinuousClock.now
        guard let first, count == tokens, let summary, summary.answeredBy == answeredBy else {
            throw Incomplete(description: "routed: \(count) text events of \(tokens), summary: \(String(describing: summary))")
        }
        return (Sample(firstToken: (first - start).milliseconds, total: (end - start).milliseconds), summary.fallbacks)
    }

    /// What the cooling side has seen of its first model's cooldown, shared
    /// by the clients: when the latest cooldown it saw set ends.
    final class CoolingWatch: Sendable {
        let until = Mutex<Date?>(nil)
    }

    /// The cooling chain: one fallback each time. `rate_limited` (the 429
    /// met, the cooldown set) only when no cooldown was known to be running
    /// as the request started: the run's first, a request racing it, or the
    /// first after the cooldown ended; `cooling_down` (skipped) only once a
    /// cooldown was set.
    static func cooling(_ router: ModelRouter, _ request: RoutedRequest, tokens: Int, watch: CoolingWatch) async throws -> Sample {
        let startedAt = Date()
        let known = watch.until.withLock { $0 }
        let (timing, fallbacks) = try await Self.routed(router, request, tokens: tokens, answeredBy: Names.answering)
        guard fallbacks.count == 1, let fallback = fallbacks.first, fallback.from == Names.rateLimitedRetryAfter, fallback.to == Names.answering,
            !fallback.afterFirstToken
        else {
            throw Incomplete(description: "cooling: expected one fallback from \(Names.rateLimitedRetryAfter), got \(fallbacks)")
        }
        switch fallback.reason {
        case "rate_limited":
            if let known, known > startedAt {
                throw Incomplete(
                    description: "cooling: met the 429 \(String(format: "%.1f", known.timeIntervalSince(startedAt) * 1000)) ms before the cooldown known at its start ended (\(known))")
            }
            // The router recorded the Retry-After as the model's cooldown.
            guard let until = await router.health()[Names.rateLimitedRetryAfter]?.cooldownUntil, until > startedAt else {
                throw Incomplete(description: "cooling: the 429's Retry-After set no cooldown")
            }
            watch.until.withLock { $0 = max($0 ?? until, until) }
        case "cooling_down":
            // A client racing the first 429 may see its cooldown before the watch does.
            let cooled = watch.until.withLock { $0 }
            let stored = await router.health()[Names.rateLimitedRetryAfter]?.cooldownUntil
            guard cooled != nil || stored != nil else {
                throw Incomplete(description: "cooling: skipped a model no 429 had cooled")
            }
        default:
            throw Incomplete(description: "cooling: a fallback for \(fallback.reason): \(fallback.detail)")
        }
        var sample = timing
        sample.fallback = fallback.reason
        return sample
    }

    /// The provider's stream relayed by a task of its own through a second
    /// stream: the router's structure (a task between the provider and the
    /// caller, one more hop per event) without its work.
    static func relay(_ provider: OpenAICompatibleProvider, _ request: ChatRequest, tokens: Int) async throws -> Sample {
        let start = ContinuousClock.now
        let (stream, continuation) = AsyncThrowingStream<ChatStreamEvent, any Error>.makeStream()
        let task = Task {
            do {
                for try await event in provider.stream(request) { continuation.yield(event) }
                continuation.finish()
            } catch {
                continuation.finish(throwing: error)
            }
        }
        continuation.onTermination = { _ in task.cancel() }
        var first: ContinuousClock.Instant?
        var count = 0
        var finished = false
        for try await event in stream {
            switch event {
            case .text:
                if first == nil { first = .now }
                count += 1
            case .finished: finished = true
            case .reasoning, .usage: break
            }
        }
        let end = ContinuousClock.now
        guard let first, count == tokens, finished else {
            throw Incomplete(description: "relay: \(count) text events of \(tokens), finished: \(finished)")
        }
        return Sample(firstToken: (first - start).milliseconds, total: (end - start).milliseconds)
    }

    static func report(_ rounds: [Round], elapsed: Duration, options: RouterOverhead) {
        func padded(_ text: String, _ width: Int) -> String { text.count >= width ? text : text + String(repeating: " ", count: width - text.count) }
        func row(_ label: String, _ values: [Double]) -> String {
            padded(label, 40) + values.enumerated().map { String(format: $0.offset == 3 ? "   %9.3f" : " %9.3f", $0.element) }.joined()
        }
        func figures(_ first: Summary, _ total: Summary) -> [Double] {
            [first.percentile(50), first.percentile(99), first.mean, total.percentile(50), total.percentile(99), total.mean]
        }
        func sideFigures(_ side: Side) -> [Double] {
            figures(Summary(values: rounds.map { $0.samples[side]?.firstToken ?? .nan }), Summary(values: rounds.map { $0.samples[side]?.total ?? .nan }))
        }
        /// Percentiles of the differences within each round.
        func paired(_ side: Side, _ base: Side) -> [Double] {
            figures(
                Summary(values: rounds.map { ($0.samples[side]?.firstToken ?? .nan) - ($0.samples[base]?.firstToken ?? .nan) }),
                Summary(values: rounds.map { ($0.samples[side]?.total ?? .nan) - ($0.samples[base]?.total ?? .nan) }))
        }
        let sides = Side.allCases.filter { side in rounds.first?.samples[side] != nil }
        let what =
            options.failover
            ? "# failover cost: chain \(Names.rateLimited) (\(options.rateLimited), 429) or \(Names.rateLimitedRetryAfter) "
                + "(\(options.rateLimitedRetryAfter), 429 + Retry-After), then \(Names.answering) (\(options.upstream) model=\(options.model))"
            : "# router overhead: \(options.upstream) model=\(options.model)"
        print(
            what + ", \(options.tokens) tokens; \(rounds.count) rounds (\(sides.map(\.rawValue).joined(separator: ", ")), in turn; the order rotates), "
                + "concurrency \(options.concurrency), \(options.warmup) warm-up rounds; " + String(format: "%.1f s", elapsed.milliseconds / 1000))
        print(padded("ms", 40) + ["ttft p50", "ttft p99", "mean", "total p50", "total p99", "mean"].enumerated().map {
            ($0.offset == 3 ? "   " : " ") + String(repeating: " ", count: max(0, 9 - $0.element.count)) + $0.element
        }.joined())
        for side in sides { print(row(side.label, sideFigures(side))) }
        if sides.contains(.direct) {
            for side in sides where side != .direct {
                print(row("added: \(side.rawValue) p - direct p", zip(sideFigures(side), sideFigures(.direct)).map { $0 - $1 }))
                print(row("added: p of (\(side.rawValue) - direct) pairs", paired(side, .direct)))
            }
        }
        if sides.contains(.routed), sides.contains(.relay) {
            print(row("added: routed p - relay p", zip(sideFigures(.routed), sideFigures(.relay)).map { $0 - $1 }))
        }
        if sides.contains(.cooling) {
            let met = rounds.filter { $0.samples[.cooling]?.fallback == "rate_limited" }.count
            print(
                "# cooling: \(rounds.count - met) of \(rounds.count) timed requests skipped the cooling model (cooling_down), "
                    + "\(met) met the 429 (rate_limited: the cooldown had ended)")
        }
        if sides.contains(.failover) {
            print("# failover: all \(rounds.count) timed requests met the 429 and fell back (rate_limited)")
        }
    }
}
