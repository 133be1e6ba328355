import Foundation
import HTTPTypes
import Hummingbird
import KeelCore
import KeelModels
import Logging
import ServiceLifecycle

/// This process's own figures for the admin dashboard: what only it knows
/// (its open streams and connections, its busy workers, its models'
/// counters), written to the store by ``InstanceReporter`` so that any
/// instance can show every instance.
struct InstanceFigures: Sendable {
    /// What kind of process reports: `keel serve` or `keel worker`.
    enum Role: String, Sendable {
        case server
        case worker
    }

    let instanceID: String
    let role: Role
    let startedAt: Date
    let workers: Int
    /// The model lane's capacity (`--model-workers`, 0 when off).
    let modelWorkers: Int
    let jobs: JobMetrics
    let connections: ConnectionCount
    let drain: DrainState
    let models: RouterMetrics?

    func report(now: Date) -> InstanceReport {
        var models: [String: JSONValue] = [:]
        for (name, tally) in self.models?.tallies() ?? [:] {
            models[name] = .object([
                "attempts": .int(Int64(tally.attempts)),
                "failures": .object(tally.failures.mapValues { .int(Int64($0)) }),
                "fallbacks_from": .int(Int64(tally.fallbacksFrom)),
                "input_tokens": .int(Int64(tally.inputTokens)),
                "output_tokens": .int(Int64(tally.outputTokens)),
                "ttft_count": .int(Int64(tally.firstTokenCount)),
                "ttft_total_ms": .double(tally.firstTokenTotalMilliseconds),
                "ttft_recent_ms": .array(tally.recentFirstTokenMilliseconds.map { .double(($0 * 10).rounded() / 10) }),
            ])
        }
        return InstanceReport(
            id: self.instanceID, version: KeelVersion.current, startedAt: self.startedAt, seenAt: now,
            figures: .object([
                "role": .string(self.role.rawValue),
                "open_streams": .int(Int64(self.jobs.openStreams)),
                "open_connections": .int(Int64(self.connections.open.load(ordering: .relaxed))),
                "workers": .int(Int64(self.workers)),
                "model_workers": .int(Int64(self.modelWorkers)),
                "busy_workers": .int(Int64(self.jobs.busyCount)),
                "draining": .bool(self.drain.isDraining),
                "models": .object(models),
            ]))
    }
}

/// Writes this instance's report every `--instance-report-interval`, and
/// now and then deletes the rows of instances gone for a day. A failed
/// write is logged and tried again at the next tick.
struct InstanceReporter: Service {
    let figures: InstanceFigures
    let store: any OverviewStore
    let interval: Duration
    let clock: any KeelClock
    let logger: Logger

    /// Rows of instances not seen for this long are deleted.
    static let forgetAfter: TimeInterval = 86_400

    func run() async throws {
        var tick = 0
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            let now = self.clock.now()
            do {
                try await self.store.recordInstance(self.figures.report(now: now))
                if tick % 720 == 0 { _ = try await self.store.purgeInstances(seenBefore: now.addingTimeInterval(-Self.forgetAfter)) }
            } catch {
                self.logger.warning("could not write this instance's report for the admin dashboard", metadata: ["keel.error": "\(error)"])
            }
            tick += 1
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: self.interval) }
        }
    }
}

/// Who may read the admin dashboard: requests bearing `--admin-token`.
/// Without the flag the dashboard does not exist (404), so that a
/// deployment that never set a token shows no admin surface at all.
struct AdminAccess: Sendable {
    let token: String?

    var enabled: Bool { self.token != nil }

    func check(_ request: Request) throws {
        guard let token else {
            throw KeelError(.notFound, "No route matches \(request.uri.path).")
        }
        let presented = APIKeyAccess.bearerToken(in: request)
        guard let presented, OpsAccess.constantTimeEqual(Array(presented.utf8), Array(token.utf8)) else {
            throw KeelError(
                .adminTokenRequired, "The admin dashboard needs the admin token.",
                hint: "Send Authorization: Bearer <the --admin-token value>; the page at /admin asks for it.")
        }
    }
}

/// `GET /api/admin/overview`: the admin dashboard's data, for the whole
/// deployment, from any instance (docs/architecture.md, "Admin dashboard").
struct AdminController: Sendable {
    let store: any KeelStore
    let access: AdminAccess
    let figures: InstanceFigures
    let router: ModelRouter?
    let clock: any KeelClock

    /// The window's bounds in minutes (`?minutes=`).
    static let minutes = 1...1440
    static let defaultMinutes = 60

    func register(on routes: inout RouteTable) {
        routes.add("/api/admin/overview", .get, self.overview)
    }

    @Sendable func overview(_ request: Request, context: KeelRequestContext) async throws -> Response {
        try self.access.check(request)
        var minutes = Self.defaultMinutes
        if let text = request.uri.queryParameters.get("minutes") {
            guard let value = Int(text), Self.minutes.contains(value) else {
                throw KeelError(.badRequest, "minutes must be a whole number from \(Self.minutes.lowerBound) to \(Self.minutes.upperBound).")
            }
            minutes = value
        }
        let now = self.clock.now()
        let since = now.addingTimeInterval(-Double(minutes) * 60)
        // Buckets of a minute up to two hours, then as many as fit 120.
        let bucketSeconds = max(60, (minutes * 60 / 120 + 59) / 60 * 60)
        let overview = self.store.overview
        async let reports = overview.instances(seenSince: since)
        async let counts = overview.jobCounts()
        async let activity = overview.jobActivity(since: since, bucket: .seconds(bucketSeconds))
        async let uploads = overview.uploadTotals(since: since)
        async let depth = self.store.jobs.queueDepth()
        // This instance as it is now, the others as they last reported.
        let mine = self.figures.report(now: now)
        let instances = [mine] + (try await reports).filter { $0.id != mine.id }
        let modelNames = self.router?.catalog.modelOrder ?? []
        let health = modelNames.isEmpty ? [:] : try await self.store.modelHealth.health(models: modelNames)

        let body: JSONValue = .object([
            "generated_at": .string(JSONWriter.timestamp(now)),
            "instance": .string(self.figures.instanceID),
            "window_minutes": .int(Int64(minutes)),
            "instances": .array(instances.map(Self.instance)),
            "jobs": Self.jobs(counts: try await counts, activity: try await activity, depth: try await depth, since: since, now: now, bucket: bucketSeconds),
            "uploads": Self.uploads(try await uploads),
            "streams": .object(["open": .int(instances.reduce(0) { $0 + Self.figure($1, "open_streams") })]),
            "models": .array(modelNames.map { self.model($0, health: health[$0], instances: instances, now: now) }),
        ])
        return .json(body.serialized(), headers: [.cacheControl: "no-store"])
    }

    static func figure(_ report: InstanceReport, _ name: String) -> Int64 {
        if case .int(let value)? = report.figures.objectValue?[name] { return value }
        return 0
    }

    static func instance(_ report: InstanceReport) -> JSONValue {
        var object: [String: JSONValue] = [
            "id": .string(report.id), "version": .string(report.version), "started_at": .string(JSONWriter.timestamp(report.startedAt)),
            "seen_at": .string(JSONWriter.timestamp(report.seenAt)),
            "draining": report.figures.objectValue?["draining"] ?? .bool(false),
            "role": report.figures.objectValue?["role"] ?? .string(InstanceFigures.Role.server.rawValue),
        ]
        for name in ["open_streams", "open_connections", "workers", "model_workers", "busy_workers"] { object[name] = .int(Self.figure(report, name)) }
        return .object(object)
    }

    static func jobs(counts: [JobCount], activity: [JobActivity], depth: Int, since: Date, now: Date, bucket: Int) -> JSONValue {
        var byStatus: [String: JSONValue] = [:]
        for status in JobStatus.allCases {
            byStatus[status.rawValue] = .int(Int64(counts.filter { $0.status == status }.reduce(0) { $0 + $1.count }))
        }
        // Every bucket of the window, empty ones too, oldest first.
        let (length, first) = OverviewBuckets.bounds(since: since, bucket: .seconds(bucket))
        let last = Int64((now.timeIntervalSince1970 * 1000).rounded())
        var byStart: [Int64: JobActivity] = [:]
        for item in activity { byStart[Int64((item.start.timeIntervalSince1970 * 1000).rounded())] = item }
        var timeline: [JSONValue] = []
        var start = first
        while start <= last {
            let item = byStart[start] ?? JobActivity(start: Date(timeIntervalSince1970: TimeInterval(start) / 1000))
            timeline.append(
                .object([
                    "start": .string(JSONWriter.timestamp(item.start)), "created": .int(Int64(item.created)),
                    "succeeded": .int(Int64(item.succeeded)), "failed": .int(Int64(item.failed)), "cancelled": .int(Int64(item.cancelled)),
                ]))
            start += length
        }
        return .object([
            "queue_depth": .int(Int64(depth)),
            "by_status": .object(byStatus),
            "by_type": .array(
                counts.map { .object(["type": .string($0.type), "status": .string($0.status.rawValue), "count": .int(Int64($0.count))]) }),
            "bucket_seconds": .int(Int64(bucket)),
            "timeline": .array(timeline),
        ])
    }

    static func uploads(_ totals: UploadTotals) -> JSONValue {
        var byStatus: [String: JSONValue] = [:]
        for status in UploadStatus.allCases { byStatus[status.rawValue] = .int(Int64(totals.byStatus[status] ?? 0)) }
        let complete = totals.byStatus[.complete] ?? 0
        let ended = complete + (totals.byStatus[.expired] ?? 0) + (totals.byStatus[.terminated] ?? 0)
        return .object([
            "active": .int(Int64(totals.byStatus[.uploading] ?? 0)),
            "by_status": .object(byStatus),
            "bytes_received": .int(totals.bytesReceived),
            // Of the uploads that ended, the share that completed.
            "success_rate": ended == 0 ? .null : .double(Double(complete) / Double(ended)),
        ])
    }

    func model(_ name: String, health: ModelHealth?, instances: [InstanceReport], now: Date) -> JSONValue {
        var attempts: Int64 = 0
        var fallbacks: Int64 = 0
        var input: Int64 = 0
        var output: Int64 = 0
        var failures: [String: Int64] = [:]
        var ttftCount: Int64 = 0
        var ttftTotal = 0.0
        var recent: [Double] = []
        for report in instances {
            guard let figures = report.figures.objectValue?["models"]?.objectValue?[name]?.objectValue else { continue }
            func int(_ key: String) -> Int64 { if case .int(let value)? = figures[key] { value } else { 0 } }
            attempts += int("attempts")
            fallbacks += int("fallbacks_from")
            input += int("input_tokens")
            output += int("output_tokens")
            ttftCount += int("ttft_count")
            if case .double(let total)? = figures["ttft_total_ms"] { ttftTotal += total } else { ttftTotal += Double(int("ttft_total_ms")) }
            for (reason, count) in figures["failures"]?.objectValue ?? [:] {
                if case .int(let value) = count { failures[reason, default: 0] += value }
            }
            for sample in figures["ttft_recent_ms"]?.arrayValue ?? [] {
                switch sample {
                case .double(let value): recent.append(value)
                case .int(let value): recent.append(Double(value))
                default: break
                }
            }
        }
        recent.sort()
        func percentile(_ p: Double) -> JSONValue {
            recent.isEmpty ? .null : .double(recent[min(recent.count - 1, Int((Double(recent.count) * p).rounded(.up)) - 1)])
        }
        let cooling = health?.isCooling(at: now) ?? false
        let provider = self.router?.catalog.models[name]?.provider
        return .object([
            "name": .string(name),
            "provider": provider.map(JSONValue.string) ?? .null,
            "cooling": .bool(cooling),
            "cooldown_until": cooling ? health?.cooldownUntil.map { .string(JSONWriter.timestamp($0)) } ?? .null : .null,
            "cooldown_reason": cooling ? health?.cooldownReason.map(JSONValue.string) ?? .null : .null,
            "consecutive_failures": .int(Int64(health?.consecutiveFailures ?? 0)),
            "attempts": .int(attempts),
            "failures": .object(failures.mapValues(JSONValue.int)),
            "fallbacks_from": .int(fallbacks),
            "time_to_first_token_ms": .object([
                "count": .int(ttftCount),
                "mean": ttftCount == 0 ? .null : .double((ttftTotal / Double(ttftCount) * 10).rounded() / 10),
                "p50": percentile(0.5), "p95": percentile(0.95),
            ]),
            "tokens": .object(["input": .int(input), "output": .int(output)]),
        ])
    }
}
