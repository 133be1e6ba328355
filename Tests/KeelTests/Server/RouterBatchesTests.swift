import KeelCore
import KeelModels
import Synchronization
import Testing

@testable import KeelServer

/// `forEachBatch`: a routed answer handed to a slow writer in batches,
/// adjacent text joined, order kept, errors and cancellation passed on.
@Suite("Router event batches")
struct RouterBatchesTests {
    @Test("events that wait for the writer are one batch with adjacent text joined; nothing passes a model or fallback")
    func joinsWhileWaiting() async throws {
        let inbox = RouterInbox()
        let fallback = ModelFallback(from: "a", to: "b", reason: "cut", detail: "", afterFirstToken: true)
        for event: RouterEvent in [.text("b"), .text("c"), .fallback(fallback), .text("d"), .reasoning("r1"), .reasoning("r2"), .text("e")] {
            inbox.push(event)
        }
        let first = await inbox.take()
        #expect(first.events == [.text("bc"), .fallback(fallback), .text("d"), .reasoning("r1r2"), .text("e")])
        #expect(first.end == nil)
        inbox.push(.text("f"))
        inbox.finish(nil)
        let last = await inbox.take()
        #expect(last.events == [.text("f")])
        if case .success? = last.end {} else { Issue.record("the end should follow the last events: \(String(describing: last.end))") }
    }

    @Test("a slow writer gets every event once, in order")
    func slowWriter() async throws {
        let (source, continuation) = AsyncThrowingStream<RouterEvent, any Error>.makeStream()
        let pieces = (0..<200).map { "tok\($0) " }
        Task {
            for piece in pieces { continuation.yield(.text(piece)) }
            continuation.finish()
        }
        let written = Mutex<[String]>([])
        try await forEachBatch(of: source) { batch in
            for case .text(let piece) in batch { written.withLock { $0.append(piece) } }
            try await Task.sleep(for: .milliseconds(5))
        }
        #expect(written.withLock { $0.joined() } == pieces.joined())
    }

    @Test("a failure of the answer is thrown after the events before it")
    func failure() async throws {
        let (source, continuation) = AsyncThrowingStream<RouterEvent, any Error>.makeStream()
        continuation.yield(.text("partial"))
        continuation.finish(throwing: RouterError(.modelsUnavailable, "every model failed"))
        let texts = Mutex<[String]>([])
        await #expect(throws: RouterError.self) {
            try await forEachBatch(of: source) { batch in
                for case .text(let piece) in batch { texts.withLock { $0.append(piece) } }
            }
        }
        #expect(texts.withLock { $0 } == ["partial"])
    }

    @Test("cancelling the writer cancels the answer's stream")
    func cancellation() async throws {
        let (source, continuation) = AsyncThrowingStream<RouterEvent, any Error>.makeStream()
        let terminated = Mutex(false)
        continuation.onTermination = { _ in terminated.withLock { $0 = true } }
        let task = Task {
            try await forEachBatch(of: source) { _ in }
        }
        continuation.yield(.text("one"))
        try await Task.sleep(for: .milliseconds(50))
        task.cancel()
        await #expect(throws: CancellationError.self) { try await task.value }
        try await waitFor("the stream to be terminated") { terminated.withLock { $0 } }
    }
}
