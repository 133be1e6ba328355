import KeelCore
import Synchronization

/// A coalescing wake-up for one waiting task: any number of `fire()`s
/// before or during a wait end it once. Waiters always re-read the store
/// after waking, so a wake-up is a hint, never data.
final class WakeSignal: Sendable {
    private struct State {
        var pending = false
        var waiter: CheckedContinuation<Void, Never>?
    }

    private let state = Mutex(State())

    func fire() {
        let waiter = self.state.withLock { state -> CheckedContinuation<Void, Never>? in
            guard let waiter = state.waiter else {
                state.pending = true
                return nil
            }
            state.waiter = nil
            return waiter
        }
        waiter?.resume()
    }

    /// Waits until fired (`true`) or until `timeout` has passed (`false`).
    func wait(timeout: Duration) async -> Bool {
        let pending = self.state.withLock { state in
            defer { state.pending = false }
            return state.pending
        }
        if pending { return true }
        return await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                await self.waitUntilFired()
                return !Task.isCancelled
            }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return false
            }
            let first = await group.next() ?? false
            group.cancelAll()
            return first
        }
    }

    private func waitUntilFired() async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow = self.state.withLock { state -> Bool in
                    if state.pending || Task.isCancelled {
                        state.pending = false
                        return true
                    }
                    state.waiter = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            let waiter = self.state.withLock { state in
                defer { state.waiter = nil }
                return state.waiter
            }
            waiter?.resume()
        }
    }
}

/// Fans changes out inside one process: to the event streams following a
/// job, and to idle workers. Fed by this process's own writes (at once) and
/// by the store's ``ChangeFeed`` (other processes).
public final class ChangeHub: Sendable {
    private struct State {
        var streams: [String: [ObjectIdentifier: WakeSignal]] = [:]
        var workers: [ObjectIdentifier: WakeSignal] = [:]
        var streamsClosed = false
    }

    private let state = Mutex(State())

    public init() {}

    public func publish(_ changes: [StoreChange]) {
        var signals: [WakeSignal] = []
        self.state.withLock { state in
            var wakeWorkers = false
            for change in changes {
                switch change {
                case .jobEvents(let jobID):
                    if let followers = state.streams[jobID] { signals += followers.values }
                case .jobReady:
                    wakeWorkers = true
                case .resync:
                    wakeWorkers = true
                    for followers in state.streams.values { signals += followers.values }
                }
            }
            if wakeWorkers { signals += state.workers.values }
        }
        for signal in signals { signal.fire() }
    }

    func follow(jobID: String, _ signal: WakeSignal) {
        self.state.withLock { $0.streams[jobID, default: [:]][ObjectIdentifier(signal)] = signal }
    }

    func unfollow(jobID: String, _ signal: WakeSignal) {
        self.state.withLock { state in
            state.streams[jobID]?[ObjectIdentifier(signal)] = nil
            if state.streams[jobID]?.isEmpty == true { state.streams[jobID] = nil }
        }
    }

    func addWorker(_ signal: WakeSignal) {
        self.state.withLock { $0.workers[ObjectIdentifier(signal)] = signal }
    }

    func removeWorker(_ signal: WakeSignal) {
        self.state.withLock { _ = $0.workers.removeValue(forKey: ObjectIdentifier(signal)) }
    }

    func wakeWorkers() {
        let signals = self.state.withLock { Array($0.workers.values) }
        for signal in signals { signal.fire() }
    }

    /// Shutdown: every open stream ends after its current write, so its
    /// client reconnects (with `Last-Event-ID`) to another instance.
    func closeStreams() {
        let signals = self.state.withLock { state in
            state.streamsClosed = true
            return state.streams.values.flatMap(\.values)
        }
        for signal in signals { signal.fire() }
    }

    var streamsClosed: Bool { self.state.withLock { $0.streamsClosed } }

    var openStreams: Int { self.state.withLock { $0.streams.values.reduce(0) { $0 + $1.count } } }
}
