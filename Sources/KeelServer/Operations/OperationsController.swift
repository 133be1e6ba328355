import Foundation
import Hummingbird
import KeelCore
import NIOCore

/// `/health`, `/ready`, `/system-health` and `/metrics`.
struct OperationsController: Sendable {
    let store: any KeelStore
    let drain: DrainState
    let metrics: KeelMetrics
    let instanceID: String
    let startedAt: Date
    let storeDescription: String
    let jobs: JobRuntime
    let streams: StreamSettings
    let uploads: UploadRuntime
    let access: OpsAccess

    func register(on routes: inout RouteTable) {
        routes.add("/health", .get, self.health)
        routes.add("/ready", .get, self.ready)
        routes.add("/system-health", .get, self.systemHealth)
        routes.add("/metrics", .get, self.metricsText)
    }

    /// Liveness: the process answers. Never touches the store, so a store
    /// outage does not get healthy processes restarted.
    @Sendable func health(_ request: Request, context: KeelRequestContext) async throws -> Response {
        .json(headers: [.cacheControl: "no-store"]) { $0.field("status", "ok") }
    }

    /// Readiness: the store answers and this process is not draining.
    @Sendable func ready(_ request: Request, context: KeelRequestContext) async throws -> Response {
        if self.drain.isDraining {
            throw KeelError(.draining, "This instance is shutting down.", hint: "The load balancer should route elsewhere; retry the request.")
        }
        try await self.store.ping()
        return .json(headers: [.cacheControl: "no-store"]) { $0.field("status", "ready") }
    }

    @Sendable func systemHealth(_ request: Request, context: KeelRequestContext) async throws -> Response {
        try self.access.check(request, context: context)
        let start = ContinuousClock.now
        var storeError: String?
        do {
            try await self.store.ping()
        } catch {
            storeError = (error as? KeelError)?.message ?? "\(error)"
        }
        let latency = ContinuousClock.now - start
        let schemaVersion = storeError == nil ? try? await self.store.schemaVersion() : nil
        let queueDepth = storeError == nil ? try? await self.store.jobs.queueDepth() : nil
        if let queueDepth { self.jobs.metrics.queueDepth.record(queueDepth) }
        let uptime = Date().timeIntervalSince(self.startedAt)
        return .json(status: storeError == nil ? .ok : .serviceUnavailable, headers: [.cacheControl: "no-store"]) { json in
            json.field("instance", self.instanceID)
            json.field("version", KeelVersion.current)
            json.field("started_at", self.startedAt)
            json.field("uptime_seconds", (uptime * 1000).rounded() / 1000)
            json.field("draining", self.drain.isDraining)
            json.field("jobs") { json in
                json.object { json in
                    if let queueDepth { json.field("queue_depth", Int64(queueDepth)) }
                    json.field("workers", Int64(self.jobs.workers.count))
                    json.field("model_workers", Int64(self.jobs.workers.modelWorkers))
                    json.field("workers_busy", Int64(self.jobs.metrics.busyCount))
                    json.field("workers_draining", self.jobs.workers.isDraining)
                }
            }
            json.field("streams") { json in
                json.object { json in
                    json.field("open", Int64(self.jobs.metrics.openStreams))
                    json.field("heartbeat_seconds", self.streams.heartbeatInterval.timeInterval)
                }
            }
            json.field("uploads") { json in
                json.object { json in
                    json.field("blobs", self.uploads.blobs.kind)
                    json.field("max_size", self.uploads.settings.maxSize)
                    json.field("lock_timeout_seconds", self.uploads.settings.lockTimeout.timeInterval)
                }
            }
            json.field("store") { json in
                json.object { json in
                    json.field("driver", self.store.driverName)
                    json.field("location", self.storeDescription)
                    json.field("ok", storeError == nil)
                    json.field("latency_ms", (latency.timeInterval * 1_000_000).rounded() / 1000)
                    if let schemaVersion { json.field("schema_version", Int64(schemaVersion)) }
                    if let storeError { json.field("error", storeError) }
                }
            }
        }
    }

    @Sendable func metricsText(_ request: Request, context: KeelRequestContext) async throws -> Response {
        try self.access.check(request, context: context)
        // The queue is shared by every instance: read its depth when scraped.
        if let depth = try? await self.store.jobs.queueDepth() { self.jobs.metrics.queueDepth.record(depth) }
        return Response(
            status: .ok,
            headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8", .cacheControl: "no-store"],
            body: .init(byteBuffer: ByteBuffer(bytes: self.metrics.render()))
        )
    }
}

/// Who may read `/metrics` and `/system-health`: they name hosts, store
/// locations, queue depths and traffic, which are nobody's business outside.
/// With `--ops-token`, requests bearing it; without, only clients on
/// loopback that came through no proxy (a proxy on the same machine adds
/// `X-Forwarded-For`, as the shipped nginx config does).
struct OpsAccess: Sendable {
    let token: String?

    func check(_ request: Request, context: KeelRequestContext) throws {
        if let token {
            let presented = request.headers[.authorization].flatMap { header -> Substring? in
                let parts = header.split(separator: " ", maxSplits: 1)
                guard parts.count == 2, parts[0].lowercased() == "bearer" else { return nil }
                return parts[1].trimmingBlanks()
            }
            guard let presented, Self.constantTimeEqual(Array(presented.utf8), Array(token.utf8)) else {
                throw KeelError(
                    .opsTokenRequired, "This endpoint needs the operator token.",
                    hint: "Send Authorization: Bearer <the --ops-token value>.")
            }
            return
        }
        let proxied = request.headers[.xForwardedFor] != nil || request.headers[.forwardedHeader] != nil || request.headers[.xRealIP] != nil
        let local = context.peerAddress.map(AddressBlock.isLoopback) ?? true
        guard local, !proxied else {
            throw KeelError(
                .opsTokenRequired, "This endpoint answers only local clients unless an operator token is configured.",
                hint: "Start keel with --ops-token (KEEL_OPS_TOKEN) and send it as a bearer token, or ask from the instance's own machine.")
        }
    }

    static func constantTimeEqual(_ lhs: [UInt8], _ rhs: [UInt8]) -> Bool {
        guard lhs.count == rhs.count else { return false }
        var difference: UInt8 = 0
        for index in lhs.indices { difference |= lhs[index] ^ rhs[index] }
        return difference == 0
    }
}
