import Foundation
import KeelCore

/// OpenAI's API for clients that already speak it: `GET /v1/models`,
/// `POST /v1/chat/completions` (streaming and not), and `/v1/responses`
/// (durable, resumable, cancellable), authenticated by API keys
/// (`keel keys create`). Errors come in OpenAI's shape. Built on the
/// module seam, over the same router as chat.
public struct OpenAIModule: KeelModule {
    public init() {}

    public func register(in app: inout KeelModuleBuilder) throws {
        let configuration = app.configuration
        ChatCompletionsController(
            router: app.models, keys: app.apiKeys, maxBodyBytes: configuration.maxBodyBytes, clock: app.clock, loadedAt: app.clock.now()
        ).register(in: &app)
        ResponsesController(
            router: app.models, keys: app.apiKeys, queue: app.store.jobs, events: app.store.events, jobs: app.jobs, streams: app.jobStreams,
            maxAttempts: configuration.jobs.maxAttempts, maxActiveJobs: configuration.quotas.activeJobsPerSession, maxBodyBytes: configuration.maxBodyBytes,
            resultTTL: configuration.jobs.resultTTL, clock: app.clock, waitLimit: configuration.models.totalTimeout + .seconds(30)
        ).register(in: &app)
        app.jobType(ResponseJob(router: app.models, keys: app.store.apiKeys, clock: app.clock, logger: app.logger))
    }
}
