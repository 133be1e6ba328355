import ArgumentParser
import KeelCore
import Logging

struct Migrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Apply pending schema migrations to the store and exit.",
        discussion: "Safe to run while other instances start or serve: migrations are serialized by a lock in the store."
    )

    @OptionGroup var common: CommonOptions

    func run() async throws {
        try await Runtime.reportingErrors {
            let configuration = try self.common.load()
            let logger = Runtime.bootstrapLogging(configuration)
            let store = try Runtime.makeStore(configuration, logger: logger)
            let report = try await store.withRunning {
                try await store.migrate(logger: logger)
            }
            try await store.close()
            if report.applied.isEmpty {
                print("store \(configuration.store) is at schema version \(report.toVersion); nothing to apply")
            } else {
                print("store \(configuration.store) migrated from version \(report.fromVersion) to \(report.toVersion): \(report.applied.joined(separator: ", "))")
            }
        }
    }
}
