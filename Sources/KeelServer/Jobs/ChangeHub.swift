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
                await self.wait()
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

    /// Waits until fired, or until the task is cancelled.
    func wait() async {
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

/// A worker waiting for a job, and the job types it claims.
struct IdleWorker: Sendable {
    let signal: WakeSignal
    let types: Set<String>
}

/// Fans changes out inside one process: to the event streams following a
/// job, and to idle workers. Fed by this process's own writes (at once) and
/// by the store's ``ChangeFeed`` (other processes).
public final class ChangeHub: Sendable {
    private struct State {
        var streams: [String: [ObjectIdentifier: WakeSignal]] = [:]
        var workers: [ObjectIdentifier: WakeSignal] = [:]
        /// Running jobs' workers, told when someone asks the job to stop.
        var cancelWatchers: [String: [ObjectIdentifier: @Sendable () -> Void]] = [:]
        /// Workers not running a job, oldest first: a ready job wakes one of
        /// them, not all (each wake-up costs a claim, a write transaction).
        var idleWorkers: [IdleWorker] = []

        /// Takes the longest-idle worker that claims `type` out of the idle list.
        mutating func popIdleWorker(claiming type: String) -> WakeSignal? {
            guard let index = self.idleWorkers.firstIndex(where: { $0.types.contains(type) }) else { return nil }
            return self.idleWorkers.remove(at: index).signal
        }

        /// Takes `signal` and the longest-idle other worker of the same
        /// lane (claiming the same `types`) out of the idle list.
        mutating func popIdleWorker(besides signal: WakeSignal, types: Set<String>) -> WakeSignal? {
            self.idleWorkers.removeAll { $0.signal === signal }
            guard let next = self.idleWorkers.firstIndex(where: { $0.types == types }) else { return nil }
            return self.idleWorkers.remove(at: next).signal
        }
        var streamsClosed = false
        /// Shared reads of the logs of jobs that several streams follow.
        var tails: [String: LogTail] = [:]
        /// One clock for every tail's generations, so a generation means the
        /// same thing even across a tail dropped and made again.
        var clock: UInt64 = 0

        mutating func tick() -> UInt64 {
            self.clock += 1
            return self.clock
        }
    }

    /// The recent end of one job's log, read once for all its followers.
    /// Events never change once written, so serving them from here is as
    /// good as reading the store; what is new is always fetched.
    private struct LogTail {
        /// Which tail this is: a fetch only completes into the tail that started it.
        var identity: UInt64
        var events: [JobEvent] = []
        /// The log is known up to this sequence (the last cached event, or
        /// where a fetch found nothing more); `nil` before the first fetch.
        var end: Int64?
        /// Advanced (from the hub's clock) by every change published for the job.
        var generation: UInt64
        /// The generation at the start of the newest fetch that completed.
        var fetchedGeneration: UInt64 = 0
        var inFlight: Task<[JobEvent], any Error>?

        init(clock: UInt64) {
            self.identity = clock
            self.generation = clock
        }
    }

    /// Most events kept per shared tail.
    static let tailCapacity = 256

    private let state = Mutex(State())

    public init() {}

    public func publish(_ changes: [StoreChange]) {
        var signals: [WakeSignal] = []
        var cancels: [@Sendable () -> Void] = []
        self.state.withLock { state in
            var wakeWorkers = false
            var readyTypes: [String] = []
            for change in changes {
                switch change {
                case .jobEvents(let jobID):
                    if let followers = state.streams[jobID] { signals += followers.values }
                    if state.tails[jobID] != nil {
                        let generation = state.tick()
                        state.tails[jobID]?.generation = generation
                    }
                case .cancelRequested(let jobID):
                    if let watchers = state.cancelWatchers[jobID] { cancels += watchers.values }
                case .jobReady(let type):
                    readyTypes.append(type)
                case .resync:
                    wakeWorkers = true
                    for jobID in Array(state.tails.keys) {
                        let generation = state.tick()
                        state.tails[jobID]?.generation = generation
                    }
                    for followers in state.streams.values { signals += followers.values }
                }
            }
            if wakeWorkers {
                signals += state.workers.values
                state.idleWorkers.removeAll()
            } else {
                for type in readyTypes {
                    if let idle = state.popIdleWorker(claiming: type) { signals.append(idle) }
                }
            }
        }
        for signal in signals { signal.fire() }
        for cancel in cancels { cancel() }
    }

    /// `onCancel` runs when a ``StoreChange/cancelRequested(jobID:)`` for the
    /// job is published, until ``unwatchCancel(jobID:_:)`` with the same `owner`.
    func watchCancel(jobID: String, owner: ObjectIdentifier, _ onCancel: @escaping @Sendable () -> Void) {
        self.state.withLock { $0.cancelWatchers[jobID, default: [:]][owner] = onCancel }
    }

    func unwatchCancel(jobID: String, _ owner: ObjectIdentifier) {
        self.state.withLock { state in
            state.cancelWatchers[jobID]?[owner] = nil
            if state.cancelWatchers[jobID]?.isEmpty == true { state.cancelWatchers[jobID] = nil }
        }
    }

    func follow(jobID: String, _ signal: WakeSignal) {
        self.state.withLock { $0.streams[jobID, default: [:]][ObjectIdentifier(signal)] = signal }
    }

    func unfollow(jobID: String, _ signal: WakeSignal) {
        self.state.withLock { state in
            state.streams[jobID]?[ObjectIdentifier(signal)] = nil
            if state.streams[jobID]?.isEmpty == true { state.streams[jobID] = nil }
            if (state.streams[jobID]?.count ?? 0) < 2 { state.tails[jobID] = nil }
        }
    }

    func addWorker(_ signal: WakeSignal) {
        self.state.withLock { $0.workers[ObjectIdentifier(signal)] = signal }
    }

    func removeWorker(_ signal: WakeSignal) {
        self.state.withLock { state in
            state.workers.removeValue(forKey: ObjectIdentifier(signal))
            state.idleWorkers.removeAll { $0.signal === signal }
        }
    }

    /// The worker is about to look for a job of `types`: a job of those made
    /// ready from now on may wake it (its signal remembers a wake-up that
    /// comes mid-claim).
    func markIdle(_ signal: WakeSignal, types: Set<String>) {
        self.state.withLock { state in
            if !state.idleWorkers.contains(where: { $0.signal === signal }) { state.idleWorkers.append(IdleWorker(signal: signal, types: types)) }
        }
    }

    /// The worker claimed a job. Another job may be waiting too, so the
    /// longest-idle worker of its lane (if any) is woken to look: a burst of
    /// jobs wakes workers one claim at a time, and never more than it can
    /// keep busy.
    func markBusy(_ signal: WakeSignal, types: Set<String>) {
        let next = self.state.withLock { state in state.popIdleWorker(besides: signal, types: types) }
        next?.fire()
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

    /// Events of `jobID` after `after`, for a stream following the job:
    /// when several streams follow it, they share one store read per change
    /// instead of each reading (1,000 streams on one job would otherwise
    /// mean 1,000 reads per event). Anything published before the call is
    /// in the answer, exactly as if the store had been read directly.
    func events(jobID: String, after: Int64, limit: Int, log: any EventLog) async throws -> [JobEvent] {
        enum Step {
            case answer([JobEvent])
            case direct
            case wait(Task<[JobEvent], any Error>)
        }
        var needed: UInt64?
        while true {
            let step = self.state.withLock { state -> Step in
                guard (state.streams[jobID]?.count ?? 0) >= 2 else { return .direct }
                var tail = state.tails[jobID] ?? LogTail(clock: state.tick())
                defer { state.tails[jobID] = tail }
                let generation = needed ?? tail.generation
                needed = generation
                if let first = tail.events.first, let last = tail.events.last, after >= first.sequence - 1, after < last.sequence {
                    let start = Int(after - first.sequence + 1)
                    return .answer(Array(tail.events[start..<min(tail.events.count, start + limit)]))
                }
                if let inFlight = tail.inFlight { return .wait(inFlight) }
                if let end = tail.end {
                    // Only a stream at the end of what is known can share the next read.
                    guard after == end else { return .direct }
                    // Nothing beyond it: known as of this stream's wake-up?
                    if tail.fetchedGeneration >= generation { return .answer([]) }
                }
                let from = after
                let started = tail.generation
                let identity = tail.identity
                let task = Task<[JobEvent], any Error> {
                    let result: Result<[JobEvent], any Error>
                    do {
                        result = .success(try await log.events(jobID: jobID, after: from, limit: Self.tailCapacity))
                    } catch {
                        result = .failure(error)
                    }
                    self.completeFetch(jobID: jobID, identity: identity, started: started, from: from, result: result)
                    return try result.get()
                }
                tail.inFlight = task
                return .wait(task)
            }
            switch step {
            case .answer(let events): return events
            case .direct: return try await log.events(jobID: jobID, after: after, limit: limit)
            case .wait(let task): _ = try await task.value
            }
        }
    }

    private func completeFetch(jobID: String, identity: UInt64, started: UInt64, from: Int64, result: Result<[JobEvent], any Error>) {
        self.state.withLock { state in
            // The tail may have been dropped (and made again) meanwhile: then this read is not its.
            guard var tail = state.tails[jobID], tail.identity == identity else { return }
            tail.inFlight = nil
            if case .success(let fetched) = result {
                if tail.end == from {
                    tail.events += fetched
                    if tail.events.count > Self.tailCapacity { tail.events.removeFirst(tail.events.count - Self.tailCapacity) }
                } else {
                    tail.events = fetched
                }
                tail.end = fetched.last?.sequence ?? from
                // A full page may have more behind it: only a short page proves the end.
                if fetched.count < Self.tailCapacity { tail.fetchedGeneration = max(tail.fetchedGeneration, started) }
            }
            state.tails[jobID] = tail
        }
    }

    var streamsClosed: Bool { self.state.withLock { $0.streamsClosed } }
}
