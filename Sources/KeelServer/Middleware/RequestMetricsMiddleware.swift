import Hummingbird

/// Counts requests and measures their latency by method, route pattern and
/// status, and logs each request at debug level.
struct RequestMetricsMiddleware<Context: RequestContext>: RouterMiddleware {
    let metrics: KeelMetrics

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let start = ContinuousClock.now
        let status: Int
        do {
            let response = try await next(request, context)
            status = response.status.code
            self.finish(request, context: context, status: status, start: start)
            return response
        } catch {
            self.finish(request, context: context, status: 500, start: start)
            throw error
        }
    }

    private func finish(_ request: Request, context: Context, status: Int, start: ContinuousClock.Instant) {
        let duration = ContinuousClock.now - start
        // Unmatched paths share one label so scanners cannot blow up cardinality.
        let route = context.endpointPath ?? "unmatched"
        self.metrics.recordRequest(method: request.method.rawValue, route: route, status: status, duration: duration)
        context.logger.debug(
            "request",
            metadata: [
                "keel.http.method": "\(request.method)", "keel.http.path": "\(request.uri.path)",
                "keel.http.status": "\(status)", "keel.http.duration_ms": "\(Double(duration.components.attoseconds / 1_000_000_000_000) / 1000 + Double(duration.components.seconds) * 1000)",
            ]
        )
    }
}
