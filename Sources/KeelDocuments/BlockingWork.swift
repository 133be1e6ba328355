import Dispatch
import Synchronization

/// Runs a blocking parser on a Dispatch thread, off Swift's cooperative
/// pool, and stops waiting for it at the deadline or when the calling task
/// is cancelled: then `deadline.stop()` makes the parser's own deadline
/// checks end it soon after, and its result is dropped.
enum BlockingWork {
    static func run<T: Sendable>(deadline: Deadline, _ work: @escaping @Sendable () throws -> T) async throws -> T {
        let once = OneShot<T>()
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
                once.arm(continuation)
                DispatchQueue.global(qos: .utility).async {
                    let result = Result { try work() }
                    once.resume(with: result)
                }
                let seconds = deadline.remaining.components
                // Clamped so that absurd time limits cannot overflow DispatchTime.
                let nanoseconds = min(seconds.seconds, 100_000_000) * 1_000_000_000 + seconds.attoseconds / 1_000_000_000
                DispatchQueue.global(qos: .utility).asyncAfter(deadline: .now() + .nanoseconds(Int(nanoseconds))) { [weak once] in
                    guard let once, once.isPending else { return }
                    deadline.stop()
                    once.resume(with: .failure(DocumentExtractionError.timeout))
                }
            }
        } onCancel: {
            deadline.stop()
            once.resume(with: .failure(CancellationError()))
        }
    }
}

/// A continuation resumed exactly once, by whichever of the work, the timer
/// and the cancellation handler comes first. A result that arrives before
/// the continuation (a task cancelled before it started) waits for it.
private final class OneShot<T: Sendable>: Sendable {
    private enum State {
        case waiting
        case armed(CheckedContinuation<T, any Error>)
        case early(Result<T, any Error>)
        case done
    }

    private let state = Mutex<State>(.waiting)

    var isPending: Bool {
        self.state.withLock { if case .done = $0 { false } else { true } }
    }

    func arm(_ continuation: CheckedContinuation<T, any Error>) {
        let early: Result<T, any Error>? = self.state.withLock { state in
            switch state {
            case .waiting:
                state = .armed(continuation)
                return nil
            case .early(let result):
                state = .done
                return result
            case .armed, .done:
                preconditionFailure("armed twice")
            }
        }
        if let early { continuation.resume(with: early) }
    }

    func resume(with result: Result<T, any Error>) {
        let continuation: CheckedContinuation<T, any Error>? = self.state.withLock { state in
            switch state {
            case .waiting:
                state = .early(result)
                return nil
            case .armed(let continuation):
                state = .done
                return continuation
            case .early, .done:
                return nil
            }
        }
        continuation?.resume(with: result)
    }
}
