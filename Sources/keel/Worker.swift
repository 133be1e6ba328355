import ArgumentParser
import KeelCore
import KeelServer
import Logging

struct Worker: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run job workers without an HTTP server.",
        discussion: """
            Claims and runs jobs from the same store as the servers, with as many workers as --workers (at least one). \
            Also takes part in the janitor election, and reports itself to the admin dashboard every \
            --instance-report-interval (its busy workers and its models' figures). On SIGTERM or SIGINT it stops claiming, lets running jobs finish \
            for up to --drain-timeout, releases the rest without counting the attempt, and exits 0.
            """
    )

    @OptionGroup var common: CommonOptions
    @OptionGroup(title: "Jobs") var jobs: JobOptions
    @OptionGroup(title: "Uploads") var uploads: UploadOptions
    @OptionGroup(title: "Documents") var documents: DocumentOptions
    @OptionGroup(title: "Models and chat") var models: ModelOptions
    @OptionGroup(title: "Admin dashboard") var dashboard: DashboardOptions

    func run() async throws {
        try await Runtime.reportingErrors {
            let configuration = try self.common.load(extraFlags: self.jobs.flags.merging(self.uploads.flags) { $1 }.merging(self.documents.flags) { $1 }.merging(self.models.flags) { $1 }.merging(self.dashboard.flags) { $1 })
            let logger = Runtime.bootstrapLogging(configuration)
            let store = try Runtime.makeStore(configuration, logger: logger)
            try await store.withRunning {
                try await store.migrate(logger: logger)
                let worker = try await KeelWorkerProcess(configuration: configuration, store: store, logger: logger)
                logger.notice("keel worker running", metadata: ["keel.store": "\(configuration.store)", "keel.workers": "\(max(1, configuration.jobs.workers))"])
                try await worker.runUntilShutdown()
                logger.notice("keel worker stopped")
            }
            try await store.close()
        }
    }
}
