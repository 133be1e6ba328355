import Foundation

/// The rules that govern session lifetime and size.
public struct SessionPolicy: Sendable, Equatable {
    /// A session not used for this long expires (sliding expiry).
    public var idleTimeout: Duration
    /// Activity extends a session at most this often, so reads rarely write.
    public var refreshInterval: Duration
    /// The largest serialized `data` object a session may hold, in bytes.
    public var maxDataBytes: Int

    public init(idleTimeout: Duration = .seconds(86_400), refreshInterval: Duration = .seconds(60), maxDataBytes: Int = 65_536) {
        self.idleTimeout = idleTimeout
        self.refreshInterval = refreshInterval
        self.maxDataBytes = maxDataBytes
    }

    public func expiry(from now: Date) -> Date {
        now.addingTimeInterval(self.idleTimeout.timeInterval)
    }

    /// Whether activity at `now` should extend the session in the store.
    public func needsRefresh(_ session: Session, at now: Date) -> Bool {
        now.timeIntervalSince(session.lastSeenAt) >= self.refreshInterval.timeInterval
    }

    /// Throws ``KeelError/Code/sessionDataTooLarge`` when `dataJSON` exceeds the limit.
    public func checkSize(of dataJSON: String) throws {
        let size = dataJSON.utf8.count
        guard size <= self.maxDataBytes else {
            throw KeelError(
                .sessionDataTooLarge,
                "Session data would be \(size) bytes; the limit is \(self.maxDataBytes).",
                hint: "Keep large content in uploads or jobs and store only references in the session (limit: --session-max-bytes)."
            )
        }
    }
}

extension Duration {
    /// The duration in (fractional) seconds.
    public var timeInterval: TimeInterval {
        let (seconds, attoseconds) = self.components
        return TimeInterval(seconds) + TimeInterval(attoseconds) / 1e18
    }
}
