import KeelCore
import KeelModels
import Synchronization

/// A routed answer read in batches, for a handler that writes each event to
/// the store: the router is read in a child task while the handler writes,
/// and each batch is everything that arrived during the previous write,
/// adjacent text (and reasoning) joined into one piece. When the store keeps
/// up, every piece is written as it comes (nothing waits for a timer); when
/// it falls behind (hundreds of answers at once, one SQLite writer, one
/// PostgreSQL commit lock), the pieces of one answer share a write, like a
/// group commit. Order is kept: text never passes a `model` or `fallback`.
///
/// Cancelling the calling task cancels the router's request.
func forEachBatch(
    of source: AsyncThrowingStream<RouterEvent, any Error>, _ body: ([RouterEvent]) async throws -> Void
) async throws {
    let inbox = RouterInbox()
    try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask {
            do {
                for try await event in source { inbox.push(event) }
                inbox.finish(nil)
            } catch {
                inbox.finish(error)
            }
        }
        defer { group.cancelAll() }
        while true {
            let (batch, end) = await inbox.take()
            try Task.checkCancellation()
            if !batch.isEmpty { try await body(batch) }
            if let end {
                if case .failure(let error) = end { throw error }
                return
            }
        }
    }
}

/// Events handed from the reading task to the writing one.
final class RouterInbox: Sendable {
    private struct State {
        var events: [RouterEvent] = []
        var end: Result<Void, any Error>?
    }

    private let state = Mutex(State())
    private let signal = WakeSignal()

    func push(_ event: RouterEvent) {
        self.state.withLock { state in
            switch (state.events.last, event) {
            case (.text(let before)?, .text(let piece)): state.events[state.events.count - 1] = .text(before + piece)
            case (.reasoning(let before)?, .reasoning(let piece)): state.events[state.events.count - 1] = .reasoning(before + piece)
            default: state.events.append(event)
            }
        }
        self.signal.fire()
    }

    func finish(_ error: (any Error)?) {
        self.state.withLock { $0.end = error.map { .failure($0) } ?? .success(()) }
        self.signal.fire()
    }

    /// What arrived since the last take, waiting for something if nothing
    /// did (or until the task is cancelled); `end` once the reader is done
    /// and everything before it was taken.
    func take() async -> (events: [RouterEvent], end: Result<Void, any Error>?) {
        while true {
            let taken = self.state.withLock { state -> ([RouterEvent], Result<Void, any Error>?)? in
                guard !state.events.isEmpty || state.end != nil else { return nil }
                defer { state.events.removeAll(keepingCapacity: true) }
                return (state.events, state.end)
            }
            if let taken { return taken }
            if Task.isCancelled { return ([], nil) }
            await self.signal.wait()
        }
    }
}
