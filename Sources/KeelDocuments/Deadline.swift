/// The moment an extraction must stop by. Parsers check it in their loops:
/// cancelling a task does not stop a loop that never looks.
struct Deadline: Sendable {
    let instant: ContinuousClock.Instant

    init(after duration: Duration) {
        self.instant = ContinuousClock.now.advanced(by: duration)
    }

    var hasPassed: Bool { ContinuousClock.now >= self.instant || Task.isCancelled }

    func check() throws(DocumentExtractionError) {
        if self.hasPassed { throw .timeout }
    }
}
