import KeelCore
import Logging
import PostgresNIO

/// Hears the `NOTIFY`s every instance sends when it commits new events or
/// claimable jobs, or ask a running job to stop: one pooled connection per
/// process `LISTEN`s on the three channels, and the server fans the changes
/// out in process.
final class PostgresChangeFeed: ChangeFeed {
    let client: PostgresClient
    let logger: Logger
    let started: StartSignal

    init(client: PostgresClient, logger: Logger, started: StartSignal) {
        self.client = client
        self.logger = logger
        self.started = started
    }

    /// A `keel_jobs` notification: `type`, or `type<TAB>count` when one
    /// statement stored several jobs of that type.
    static func readyJobs(_ payload: String) -> [StoreChange] {
        if let tab = payload.lastIndex(of: "\t"), let count = Int(payload[payload.index(after: tab)...]), count >= 1 {
            return Array(repeating: .jobReady(type: String(payload[..<tab])), count: min(count, 10_000))
        }
        return [.jobReady(type: payload)]
    }

    func follow(_ deliver: @escaping @Sendable ([StoreChange]) -> Void) async throws {
        await self.started.wait()
        try await withStoreErrors {
            try await self.client.withConnection { connection in
                try await connection.listen(on: PostgresSchema.eventsChannel) { events in
                    try await connection.listen(on: PostgresSchema.jobsChannel) { jobs in
                        try await connection.listen(on: PostgresSchema.cancelsChannel) { cancels in
                            // Anything committed before LISTEN took effect was not heard.
                            deliver([.resync])
                            try await withThrowingTaskGroup(of: Void.self) { group in
                                group.addTask {
                                    for try await notification in events { deliver([.jobEvents(jobID: notification.payload)]) }
                                }
                                group.addTask {
                                    for try await notification in jobs { deliver(Self.readyJobs(notification.payload)) }
                                }
                                group.addTask {
                                    for try await notification in cancels { deliver([.cancelRequested(jobID: notification.payload)]) }
                                }
                                try await group.next()
                                group.cancelAll()
                            }
                        }
                    }
                }
            }
        }
    }
}
