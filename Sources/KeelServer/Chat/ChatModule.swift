import KeelCore

/// Conversations over documents and section-by-section analysis
/// (`/api/chats`, the `chat.reply` job; `/api/documents/{id}/analyses`,
/// `/api/analyses/{id}`, the `document.analyze` job). Answers through the
/// models' router (`app.models`); without models, chat replies in a
/// labelled retrieval-only mode and analysis is 503 `no_models_configured`.
public struct ChatModule: KeelModule {
    public init() {}

    public func register(in app: inout KeelModuleBuilder) throws {
        let configuration = app.configuration
        ChatsController(
            chats: app.store.chats, documents: app.store.documents, queue: app.store.jobs, jobs: app.jobs, streams: app.jobStreams,
            sessions: app.sessions, router: app.models, settings: configuration.chat, maxAttempts: configuration.jobs.maxAttempts,
            maxActiveJobs: configuration.quotas.activeJobsPerSession, maxBodyBytes: configuration.maxBodyBytes, resultTTL: configuration.jobs.resultTTL, clock: app.clock
        ).register(in: &app)
        AnalysesController(
            analyses: app.store.analyses, documents: app.store.documents, queue: app.store.jobs, jobs: app.jobs, sessions: app.sessions,
            router: app.models, maxAttempts: configuration.jobs.maxAttempts, maxActiveJobs: configuration.quotas.activeJobsPerSession,
            maxBodyBytes: configuration.maxBodyBytes, clock: app.clock
        ).register(in: &app)
        app.jobType(
            ChatReplyJob(
                chats: app.store.chats, documents: app.store.documents, router: app.models, settings: configuration.chat, clock: app.clock,
                logger: app.logger))
        app.jobType(DocumentAnalyzeJob(analyses: app.store.analyses, documents: app.store.documents, router: app.models, clock: app.clock, logger: app.logger))
        // Chats and analyses go when their session ends (a running reply or
        // analysis then finds its chat or analysis gone and writes nothing).
        let chats = app.store.chats
        let analyses = app.store.analyses
        let interval = configuration.jobs.janitorInterval
        app.service(OrphanSweeper(what: "chats", remove: { try await chats.removeOrphaned(limit: $0) }, interval: interval, logger: app.logger))
        app.service(OrphanSweeper(what: "analyses", remove: { try await analyses.removeOrphaned(limit: $0) }, interval: interval, logger: app.logger))
    }
}
