import ArgumentParser
import AsyncHTTPClient
import Foundation
import KeelCore
import KeelModels
import KeelSQLite
import Logging

/// Issue 17: what the model router adds to a streamed answer. The same
/// ``OpenAICompatibleProvider`` (one HTTP client, one upstream) is called
/// two ways, taken in turn: directly, and through a ``ModelRouter`` over it
/// (a one-model chain, the shared health in a real, migrated SQLite store).
/// Each pair runs direct-then-routed or routed-then-direct, alternately, so
/// that neither always comes second on a warm connection. Timed from the
/// call to the first text event and to the end of the stream, in this
/// process; the upstream (`bench/models-router.sh`: nginx sending a static
/// 500-chunk stream) runs in another.
struct RouterOverhead: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "router",
        abstract: "The model router's added time to first token and total time, against its provider called directly (interleaved pairs).")

    @Option(help: "The upstream's OpenAI-compatible base URL, up to and including /v1.") var upstream = "http://127.0.0.1:8081/v1"
    @Option(help: "The model id sent upstream.") var model = "tokens-500"
    @Option(help: "Text events every answer must have (the run fails otherwise).") var tokens = 500
    @Option(help: "Timed pairs (one direct and one routed request each).") var requests = 1000
    @Option(help: "Untimed pairs first (connections, caches, the store).") var warmup = 200
    @Option(help: "Concurrent clients, each running its share of the pairs in turn.") var concurrency = 1
    @Option(help: "SQLite file of the models' shared health (default: a new one in a temporary directory).") var store: String?
    @Option(help: "Run only one side, for a profiler (direct, routed or relay); the table then shows zeros for the others.") var only: Side?
    @Option(help: "Write every timed request to this CSV file (round, position in its round, side, ttft_ms, total_ms).") var csv: String?
    @Option(help: "How stale the router's copy of the shared health may be, in milliseconds (RouterLimits.healthCacheAge; keel serve: 1000).")
    var healthCacheAgeMs = 1000
    @Flag(help: "Also time a bare relay: the provider's stream read in a task of its own and passed on through a second AsyncThrowingStream, as the router does, with none of its work.")
    var withRelay = false

    enum Side: String, ExpressibleByArgument, Sendable {
        case direct
        case routed
        case relay
    }

    func validate() throws {
        guard self.requests > 0, self.warmup >= 0, self.concurrency > 0, self.tokens > 0 else {
            throw ValidationError("--requests, --concurrency and --tokens must be positive, --warmup not negative")
        }
    }

    func run() async throws {
        let logger = {
            var logger = Logger(label: "keel-bench.router")
            logger.logLevel = .warning
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
        let catalog = ModelCatalog(
            providers: [ModelCatalog.Provider(name: "upstream", kind: .openai, baseURL: self.upstream)],
            models: [ModelCatalog.Model(name: "fake", provider: "upstream", model: self.model)],
            chains: [("default", ["fake"])])
        let messages: [ChatMessage] = [.user("Say 500 words.")]
        // What the router sends for this model: the same request, byte for byte.
        let direct = ChatRequest(model: self.model, messages: messages, includeUsage: true)
        let routed = RoutedRequest(messages: messages)
        let tokens = self.tokens

        let store = try SQLiteStore(path: path!)
        let (pairs, elapsed) = try await store.withRunning {
            _ = try await store.migrate(logger: logger)
            // What a refresh of the router's health cache costs: one read of the store.
            var reads: [Double] = []
            for _ in 0..<200 {
                let sent = ContinuousClock.now
                _ = try await store.modelHealth.health(models: ["fake"])
                reads.append((ContinuousClock.now - sent).milliseconds)
            }
            print("# one read of the shared health (SQLite, the cache's refresh, once per healthCacheAge): \(Summary(values: reads))")
            var limits = RouterLimits()
            limits.healthCacheAge = .milliseconds(self.healthCacheAgeMs)
            let router = ModelRouter(catalog: catalog, providers: ["fake": provider], healthStore: store.modelHealth, limits: limits, logger: logger)
            let warmup = self.warmup
            let concurrency = self.concurrency
            let requests = self.requests
            let only = self.only
            let withRelay = self.withRelay
            let started = ContinuousClock.now
            let pairs = try await withThrowingTaskGroup(of: [Pair].self) { group in
                for worker in 0..<concurrency {
                    // Pairs of this client: its share of the timed ones, after its share of the warm-up.
                    let timed = requests / concurrency + (worker < requests % concurrency ? 1 : 0)
                    let untimed = warmup / concurrency + (worker < warmup % concurrency ? 1 : 0)
                    group.addTask {
                        var pairs: [Pair] = []
                        pairs.reserveCapacity(timed)
                        for index in 0..<(untimed + timed) {
                            // Each side in turn: the order rotates from one pair to the next.
                            var sides: [Side] = only.map { [$0] } ?? (withRelay ? [.direct, .routed, .relay] : [.direct, .routed])
                            sides = Array(sides[((index + worker) % sides.count)...] + sides[..<((index + worker) % sides.count)])
                            var pair = Pair(direct: .zero, routed: .zero, relay: nil, order: sides)
                            for side in sides {
                                switch side {
                                case .direct: pair.direct = try await Self.direct(provider, direct, tokens: tokens)
                                case .routed: pair.routed = try await Self.routed(router, routed, tokens: tokens)
                                case .relay: pair.relay = try await Self.relay(provider, direct, tokens: tokens)
                                }
                            }
                            if index >= untimed { pairs.append(pair) }
                        }
                        return pairs
                    }
                }
                return try await group.reduce(into: []) { $0 += $1 }
            }
            return (pairs, ContinuousClock.now - started)
        }
        try await store.close()
        Self.report(pairs, elapsed: elapsed, options: self)
        if let csv = self.csv {
            var text = "round,position,side,ttft_ms,total_ms\n"
            for (round, pair) in pairs.enumerated() {
                for (position, side) in pair.order.enumerated() {
                    let sample = side == .direct ? pair.direct : side == .routed ? pair.routed : pair.relay ?? .zero
                    text += "\(round),\(position),\(side.rawValue),\(sample.firstToken),\(sample.total)\n"
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
    }

    struct Pair {
        var direct: Sample
        var routed: Sample
        var relay: Sample?
        /// The sides in the order they ran.
        var order: [Side] = []
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

    /// The router over the same provider: its events until its stream ends.
    static func routed(_ router: ModelRouter, _ request: RoutedRequest, tokens: Int) async throws -> Sample {
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
        guard let first, count == tokens, let summary, summary.answeredBy == "fake", summary.fallbacks.isEmpty else {
            throw Incomplete(description: "routed: \(count) text events of \(tokens), summary: \(String(describing: summary))")
        }
        return Sample(firstToken: (first - start).milliseconds, total: (end - start).milliseconds)
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

    static func report(_ pairs: [Pair], elapsed: Duration, options: RouterOverhead) {
        func padded(_ text: String, _ width: Int) -> String { text.count >= width ? text : text + String(repeating: " ", count: width - text.count) }
        func row(_ label: String, _ values: [Double]) -> String {
            padded(label, 38) + values.enumerated().map { String(format: $0.offset == 3 ? "   %9.3f" : " %9.3f", $0.element) }.joined()
        }
        let directFirst = Summary(values: pairs.map(\.direct.firstToken))
        let directTotal = Summary(values: pairs.map(\.direct.total))
        let routedFirst = Summary(values: pairs.map(\.routed.firstToken))
        let routedTotal = Summary(values: pairs.map(\.routed.total))
        let pairedFirst = Summary(values: pairs.map { $0.routed.firstToken - $0.direct.firstToken })
        let pairedTotal = Summary(values: pairs.map { $0.routed.total - $0.direct.total })
        func figures(_ first: Summary, _ total: Summary) -> [Double] {
            [first.percentile(50), first.percentile(99), first.mean, total.percentile(50), total.percentile(99), total.mean]
        }
        print(
            "# router overhead: \(options.upstream) model=\(options.model), \(options.tokens) tokens; \(pairs.count) pairs "
                + "(direct and routed\(options.withRelay ? " and relay" : ""), in turn; the order rotates), concurrency \(options.concurrency), \(options.warmup) warm-up pairs; "
                + String(format: "%.1f s", elapsed.milliseconds / 1000))
        print(padded("ms", 38) + ["ttft p50", "ttft p99", "mean", "total p50", "total p99", "mean"].enumerated().map {
            ($0.offset == 3 ? "   " : " ") + String(repeating: " ", count: max(0, 9 - $0.element.count)) + $0.element
        }.joined())
        let direct = figures(directFirst, directTotal)
        let routed = figures(routedFirst, routedTotal)
        print(row("direct (provider alone)", direct))
        print(row("routed (ModelRouter + provider)", routed))
        print(row("added: routed p - direct p", zip(routed, direct).map { $0 - $1 }))
        print(row("added: p of (routed - direct) pairs", figures(pairedFirst, pairedTotal)))
        let relays = pairs.compactMap { pair in pair.relay.map { (pair.direct, $0) } }
        if !relays.isEmpty {
            let relay = figures(Summary(values: relays.map(\.1.firstToken)), Summary(values: relays.map(\.1.total)))
            print(row("relay (provider + one stream hop)", relay))
            print(row("added: relay p - direct p", zip(relay, direct).map { $0 - $1 }))
            print(row("added: routed p - relay p", zip(routed, relay).map { $0 - $1 }))
        }
    }
}
