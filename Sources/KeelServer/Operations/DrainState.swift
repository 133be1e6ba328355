import Synchronization

/// Whether this process is draining: set once on SIGTERM, read by `/ready`
/// and, later, by anything that must stop taking new work.
public final class DrainState: Sendable {
    private let draining = Atomic<Bool>(false)

    public init() {}

    public var isDraining: Bool { self.draining.load(ordering: .relaxed) }

    public func begin() { self.draining.store(true, ordering: .relaxed) }
}
