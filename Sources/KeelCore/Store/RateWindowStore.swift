import Foundation

/// Counters in fixed time windows, shared by every instance: per-client and
/// per-key rate limits hold across a cluster, not per process.
public protocol RateWindowStore: Sendable {
    /// Counts one hit for `key` in the window of length `window` that holds
    /// `now` (windows start at multiples of `window` since 1970), and returns
    /// the window's count including this hit.
    func hit(key: String, window: Duration, now: Date) async throws -> RateWindowCount

    /// Deletes windows that ended before `now`; returns how many.
    func purgeExpired(now: Date, limit: Int) async throws -> Int
}

/// One window's count after a hit.
public struct RateWindowCount: Sendable, Equatable {
    public var count: Int
    /// When the window ends (and a refused client may try again).
    public var windowEnds: Date

    public init(count: Int, windowEnds: Date) {
        self.count = count
        self.windowEnds = windowEnds
    }
}

extension RateWindowStore {
    /// The start and end, in milliseconds since 1970, of the window holding `now`.
    public static func bounds(window: Duration, now: Date) -> (start: Int64, end: Int64) {
        let length = max(1, Int64(window.timeInterval * 1000))
        let milliseconds = Int64((now.timeIntervalSince1970 * 1000).rounded(.down))
        let start = milliseconds - ((milliseconds % length) + length) % length
        return (start, start + length)
    }
}
