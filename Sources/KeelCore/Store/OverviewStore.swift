import Foundation

/// What the admin dashboard shows of the whole deployment, read from the
/// shared store so that any instance answers for all of them: the instances
/// that reported in lately (each writes its own figures every few seconds),
/// and counts over the jobs and uploads every instance shares.
public protocol OverviewStore: Sendable {
    /// Inserts or replaces the instance's row (by ``InstanceReport/id``).
    func recordInstance(_ report: InstanceReport) async throws

    /// Instances whose last report is at or after `since`, the most recent first.
    func instances(seenSince since: Date) async throws -> [InstanceReport]

    /// Deletes the rows of instances last seen before `before`; returns how many.
    func purgeInstances(seenBefore before: Date) async throws -> Int

    /// Every job in the store counted by type and status, by type then status.
    func jobCounts() async throws -> [JobCount]

    /// Jobs created, and jobs that ended (by their final status), in buckets
    /// of `bucket` (aligned to multiples of it since 1970) from the bucket
    /// holding `since`; only buckets with something in them, oldest first.
    func jobActivity(since: Date, bucket: Duration) async throws -> [JobActivity]

    /// Uploads created at or after `since`: how many in each status, and the
    /// bytes received by them.
    func uploadTotals(since: Date) async throws -> UploadTotals
}

/// One instance's latest report of itself.
public struct InstanceReport: Sendable, Equatable {
    /// The instance id (`Keel-Instance`).
    public var id: String
    public var version: String
    public var startedAt: Date
    /// When the report was written.
    public var seenAt: Date
    /// The instance's own figures, a JSON object (open streams, connections,
    /// workers, its models' counters): its shape is the admin endpoint's
    /// business, not the store's.
    public var figures: JSONValue

    public init(id: String, version: String, startedAt: Date, seenAt: Date, figures: JSONValue) {
        self.id = id
        self.version = version
        self.startedAt = startedAt
        self.seenAt = seenAt
        self.figures = figures
    }
}

/// How many jobs of one type are in one status.
public struct JobCount: Sendable, Equatable {
    public var type: String
    public var status: JobStatus
    public var count: Int

    public init(type: String, status: JobStatus, count: Int) {
        self.type = type
        self.status = status
        self.count = count
    }
}

/// The jobs created and ended in one time bucket.
public struct JobActivity: Sendable, Equatable {
    public var start: Date
    public var created: Int
    public var succeeded: Int
    public var failed: Int
    public var cancelled: Int

    public init(start: Date, created: Int = 0, succeeded: Int = 0, failed: Int = 0, cancelled: Int = 0) {
        self.start = start
        self.created = created
        self.succeeded = succeeded
        self.failed = failed
        self.cancelled = cancelled
    }
}

/// Uploads by status and the bytes they received.
public struct UploadTotals: Sendable, Equatable {
    public var byStatus: [UploadStatus: Int]
    public var bytesReceived: Int64

    public init(byStatus: [UploadStatus: Int] = [:], bytesReceived: Int64 = 0) {
        self.byStatus = byStatus
        self.bytesReceived = bytesReceived
    }
}

/// The time buckets of ``OverviewStore/jobActivity(since:bucket:)``, shared by the drivers and the dashboard.
public enum OverviewBuckets {
    /// The bucket length in milliseconds (at least 1) and the start, in
    /// milliseconds since 1970, of the bucket holding `since`.
    public static func bounds(since: Date, bucket: Duration) -> (length: Int64, first: Int64) {
        let length = max(1, Int64(bucket.timeInterval * 1000))
        let since = Int64((since.timeIntervalSince1970 * 1000).rounded())
        return (length, since - ((since % length) + length) % length)
    }

    /// Folds rows of `(bucket start, kind, count)` into activities, oldest
    /// first; `kind` is `created` or a terminal job status.
    public static func activities(_ rows: [(start: Int64, kind: String, count: Int)]) -> [JobActivity] {
        var byStart: [Int64: JobActivity] = [:]
        for row in rows {
            var activity = byStart[row.start] ?? JobActivity(start: Date(timeIntervalSince1970: TimeInterval(row.start) / 1000))
            switch row.kind {
            case "created": activity.created += row.count
            case JobStatus.succeeded.rawValue: activity.succeeded += row.count
            case JobStatus.failed.rawValue: activity.failed += row.count
            case JobStatus.cancelled.rawValue: activity.cancelled += row.count
            default: break
            }
            byStart[row.start] = activity
        }
        return byStart.keys.sorted().compactMap { byStart[$0] }
    }
}
