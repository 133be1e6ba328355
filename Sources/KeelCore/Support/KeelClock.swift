import Foundation
import Synchronization

/// The source of wall-clock time for expiry decisions, injectable so tests
/// can move time without sleeping.
public protocol KeelClock: Sendable {
    func now() -> Date
}

/// The system's wall clock.
public struct SystemClock: KeelClock {
    public init() {}
    public func now() -> Date { Date() }
}

/// A clock that only moves when told to.
public final class ManualClock: KeelClock {
    private let current: Mutex<Date>

    public init(_ start: Date = Date(timeIntervalSince1970: 1_800_000_000)) {
        self.current = Mutex(start)
    }

    public func now() -> Date {
        self.current.withLock { $0 }
    }

    public func advance(by duration: Duration) {
        self.current.withLock { $0 = $0.addingTimeInterval(duration.timeInterval) }
    }
}
