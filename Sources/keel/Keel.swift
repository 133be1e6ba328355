import ArgumentParser
import KeelCore

@main
struct Keel: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keel",
        abstract: "A server for AI web applications whose every piece of state lives in a shared, durable store.",
        version: KeelVersion.current,
        subcommands: [Serve.self, Worker.self, Migrate.self, Upload.self, Probe.self, Doctor.self, Models.self, Keys.self]
    )
}
