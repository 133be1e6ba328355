import ArgumentParser
import Foundation
import KeelCore
import KeelModels

/// `keel models`: the models file's tools.
struct Models: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Work with the models file (--models).",
        subcommands: [Check.self]
    )

    /// `keel models check`: every model gets a tiny request; prints latency or the error.
    struct Check: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Send every model of the models file a tiny request and print its latency or its error.",
            discussion: """
                Reads the models file and the environment exactly as `keel serve` does (so a file it would refuse is refused \
                here, with the line and the fix), then asks each model, straight through its provider (no chain, no \
                cooldowns), to reply with one word. Prints time to first token, total time and token usage per model, or \
                the provider's error (secrets redacted). Exits 1 when any model fails. Costs one tiny request per model.
                """
        )

        @OptionGroup var common: CommonOptions
        @OptionGroup(title: "Models") var models: ModelOptions
        @Option(name: .customLong("model"), help: "Check only these models (repeatable); default: every model.") var only: [String] = []
        @Option(name: .customLong("timeout"), help: "The longest one model may take (default 60s).") var timeout: String = "60s"

        func run() async throws {
            try await Runtime.reportingErrors {
                let configuration = try self.common.load(extraFlags: self.models.flags)
                guard let timeout = Duration(parsing: self.timeout), timeout > .zero else {
                    throw ValidationError("--timeout '\(self.timeout)' is not a duration such as 60s.")
                }
                guard let service = try ModelService.load(configuration.models, environment: ProcessInfo.processInfo.environment) else {
                    throw KeelError.invalidConfiguration(
                        "No models file is configured.", hint: "Pass --models FILE (or set KEEL_MODELS); DESIGN.md shows the format.")
                }
                let names = self.only.isEmpty ? service.catalog.modelOrder : self.only
                for name in names where service.catalog.models[name] == nil {
                    await service.shutdown()
                    throw KeelError.invalidConfiguration(
                        "The models file has no model \"\(name)\".", hint: "Known models: \(service.catalog.modelOrder.joined(separator: ", ")).")
                }
                print("checking \(names.count) model(s) from \(service.source)")
                var failures = 0
                for name in names {
                    let check = await service.check(name, timeout: timeout)
                    let label = "\(check.model) (\(check.provider): \(check.providerModel))"
                    if let error = check.error {
                        failures += 1
                        print("FAIL  \(label): \(error) [after \(Self.milliseconds(check.total))]")
                    } else {
                        let first = check.timeToFirstToken.map(Self.milliseconds) ?? "no text"
                        let usage = check.usage.map { ", \($0.inputTokens) tokens in, \($0.outputTokens) out" } ?? ""
                        let reply = check.text.trimmingCharacters(in: .whitespacesAndNewlines).prefix(40)
                        print("PASS  \(label): first token \(first), total \(Self.milliseconds(check.total))\(usage); replied \"\(reply)\"")
                    }
                }
                await service.shutdown()
                print(failures == 0 ? "ok: \(names.count) model(s) answered" : "failed: \(failures) of \(names.count) model(s)")
                if failures > 0 { throw ExitCode(1) }
            }
        }

        static func milliseconds(_ duration: Duration) -> String {
            "\(Int((duration.timeInterval * 1000).rounded())) ms"
        }
    }
}
