import Synchronization

/// The moment an extraction must stop by. Parsers check it in their loops:
/// cancelling a task does not stop a loop that never looks. Parsers may run
/// on a Dispatch thread, where `Task.isCancelled` is always false, so the
/// deadline also carries a flag that whoever gives up on the work (the time
/// limit, a cancelled caller) sets with `stop()`.
struct Deadline: Sendable {
    let instant: ContinuousClock.Instant
    private let flag: StopFlag

    init(after duration: Duration) {
        self.instant = ContinuousClock.now.advanced(by: duration)
        self.flag = StopFlag()
    }

    var hasPassed: Bool { self.flag.isSet || ContinuousClock.now >= self.instant || Task.isCancelled }

    func check() throws(DocumentExtractionError) {
        if self.hasPassed { throw .timeout }
    }

    /// Makes `hasPassed` true from now on, on every thread.
    func stop() { self.flag.set() }

    /// Time left, zero once passed.
    var remaining: Duration { max(.zero, ContinuousClock.now.duration(to: self.instant)) }
}

private final class StopFlag: Sendable {
    private let value = Atomic<Bool>(false)
    var isSet: Bool { self.value.load(ordering: .relaxed) }
    func set() { self.value.store(true, ordering: .relaxed) }
}
