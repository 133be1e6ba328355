import Logging
import ServiceLifecycle

/// Deletes what a module keeps for sessions that have ended (their rows
/// outlive the session: documents, chats, analyses), in batches, on every
/// instance (the deletes are idempotent and skip rows another instance
/// holds). Runs every janitor interval, at least a minute apart.
struct OrphanSweeper: Service {
    /// What is swept, for the log: "documents", "chats".
    let what: String
    /// Deletes at most the given number; returns how many it deleted.
    let remove: @Sendable (Int) async throws -> Int
    let interval: Duration
    let logger: Logger

    static let batch = 10

    func run() async throws {
        while !Task.isShuttingDownGracefully, !Task.isCancelled {
            do {
                var removed = 0
                repeat {
                    removed = try await self.remove(Self.batch)
                    if removed > 0 { self.logger.info("removed \(self.what) of ended sessions", metadata: ["keel.removed": "\(removed)"]) }
                } while removed == Self.batch && !Task.isCancelled
            } catch {
                self.logger.warning("sweep of \(self.what) failed; retrying later", metadata: ["keel.error": "\(error)"])
            }
            try? await cancelWhenGracefulShutdown {
                try await Task.sleep(for: max(self.interval, .seconds(60)))
            }
        }
    }
}
