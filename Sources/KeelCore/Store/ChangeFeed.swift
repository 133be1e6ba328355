/// Something another process (or this one) committed to the store that
/// waiting parties may care about. Changes only say where to look: readers
/// always read the store itself, so a duplicated or spurious change is
/// harmless, and a lost one is covered by ``StoreChange/resync``.
public enum StoreChange: Sendable, Hashable {
    /// A job of this type may be ready to claim.
    case jobReady(type: String)
    /// This job's event log grew (or the job changed state).
    case jobEvents(jobID: String)
    /// Someone asked this running job to stop: its worker checks now rather
    /// than at its next heartbeat.
    case cancelRequested(jobID: String)
    /// Changes may have been missed (a reconnect, say): everyone re-reads.
    case resync
}

/// Tells a process about changes committed by other processes, so idle
/// workers and open event streams wake promptly instead of polling the
/// store one by one. PostgreSQL delivers `NOTIFY`s on one listening
/// connection; SQLite watches the file's data version with a short poll.
public protocol ChangeFeed: Sendable {
    /// Delivers batches of changes to `deliver` until the task is cancelled.
    /// Throws when the feed broke; the caller may call it again, and should
    /// then treat everything as changed.
    func follow(_ deliver: @escaping @Sendable ([StoreChange]) -> Void) async throws
}
