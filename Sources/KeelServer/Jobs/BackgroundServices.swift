import Foundation
import Synchronization
import KeelCore
import Logging
import ServiceLifecycle

/// Follows the store's change feed and hands every change to the hub,
/// reconnecting (and telling everyone to re-read) when the feed breaks.
struct ChangeFeedService: Service {
    let feed: any ChangeFeed
    let hub: ChangeHub
    let logger: Logger

    func run() async throws {
        let hub = self.hub
        await cancelWhenGracefulShutdown {
            var delay = Duration.milliseconds(100)
            while !Task.isCancelled {
                do {
                    try await self.feed.follow { changes in hub.publish(changes) }
                } catch is CancellationError {
                    return
                } catch {
                    if Task.isCancelled { return }
                    self.logger.warning("change feed broke; reconnecting", metadata: ["keel.error": "\(error)", "keel.retry_in": "\(delay)"])
                }
                try? await Task.sleep(for: delay)
                delay = min(delay * 2, .seconds(5))
                hub.publish([.resync])
            }
        }
    }
}

/// Chores one instance at a time should do, under the `janitor` leader
/// lease: send jobs of dead workers back to the queue, purge finished jobs
/// (with their events) and sessions past their expiry, and refresh the
/// queue-depth gauge.
struct JanitorService: Service {
    let store: any KeelStore
    let owner: String
    let settings: JobSettings
    let hub: ChangeHub
    let clock: any KeelClock
    let metrics: JobMetrics
    let logger: Logger
    let uploads: UploadRuntime
    /// When this process's janitor last looked for orphaned uploads (a scan
    /// of finished uploads: once a minute is enough).
    let orphanSweeps = SweepSchedule(every: .seconds(60))

    static let leaseName = "janitor"
    static let purgeBatch = 500

    func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                await self.sweep()
                try? await Task.sleep(for: self.settings.janitorInterval)
            }
        }
    }

    /// One round; returns whether this process held the lease.
    @discardableResult
    func sweep() async -> Bool {
        do {
            // Held for three rounds, renewed every round: a dead leader is replaced within three intervals.
            let leader = try await self.store.leases.acquire(
                Self.leaseName, owner: self.owner, duration: self.settings.janitorInterval * 3, now: self.clock.now())
            guard leader else { return false }
            let now = self.clock.now()
            let rescued = try await self.store.jobs.rescueExpiredLeases(timing: JobTiming(now: now, resultTTL: self.settings.resultTTL))
            if rescued > 0 {
                self.metrics.leaseRescues.increment(by: rescued)
                self.logger.notice("rescued jobs of workers whose leases expired", metadata: ["keel.jobs": "\(rescued)"])
                self.hub.publish([.resync])
            }
            var purgedJobs = 0
            while !Task.isCancelled {
                let purged = try await self.store.jobs.purgeExpired(now: now, limit: Self.purgeBatch)
                purgedJobs += purged
                if purged < Self.purgeBatch { break }
            }
            var purgedSessions = 0
            while !Task.isCancelled {
                let purged = try await self.store.sessions.purgeExpiredSessions(before: now, limit: Self.purgeBatch)
                purgedSessions += purged
                if purged < Self.purgeBatch { break }
            }
            try await self.sweepUploads(now: now)
            while !Task.isCancelled, try await self.store.rateWindows.purgeExpired(now: now, limit: Self.purgeBatch) == Self.purgeBatch {}
            if purgedJobs + purgedSessions > 0 {
                self.logger.info("purged expired state", metadata: ["keel.jobs": "\(purgedJobs)", "keel.sessions": "\(purgedSessions)"])
            }
            self.metrics.queueDepth.record(try await self.store.jobs.queueDepth())
            return true
        } catch {
            if !Task.isCancelled { self.logger.warning("janitor round failed", metadata: ["keel.error": "\(error)"]) }
            return false
        }
    }
}

extension JanitorService {
    /// How long after completion an upload's announcement counts as lost (its instance died before the hooks ran).
    static let announcementGrace: Duration = .seconds(30)

    /// Expires unfinished uploads (deleting their bytes), removes finished
    /// ones past retention, forgets ended ones after a day, and reruns
    /// completion hooks that never ran.
    func sweepUploads(now: Date) async throws {
        let store = self.store.uploads
        var expired = 0
        while !Task.isCancelled {
            let batch = try await store.expire(now: now, limit: Self.purgeBatch)
            for (upload, _) in batch {
                // Counted when the store says so, before the bytes go: whoever
                // sees the bytes gone also sees the count.
                if upload.status == .uploading { self.uploads.metrics.expired.increment() }
                do {
                    try await self.uploads.blobs.deleteBlobs(uploadID: upload.id, keeping: [])
                } catch {
                    self.logger.warning("could not delete an expired upload's bytes", metadata: ["keel.upload": "\(upload.id)", "keel.error": "\(error)"])
                }
            }
            expired += batch.count
            if batch.count < Self.purgeBatch { break }
        }
        // Finished uploads of ended sessions: nobody can read or delete them any more.
        let orphaned =
            self.orphanSweeps.isDue(now)
            ? try await store.removeOrphaned(
                completedBefore: now.addingTimeInterval(-self.uploads.settings.orphanRetention.timeInterval), limit: Self.purgeBatch)
            : []
        for (upload, _) in orphaned {
            self.uploads.metrics.orphaned.increment()
            do {
                try await self.uploads.blobs.deleteBlobs(uploadID: upload.id, keeping: [])
            } catch {
                self.logger.warning("could not delete an orphaned upload's bytes", metadata: ["keel.upload": "\(upload.id)", "keel.error": "\(error)"])
            }
        }
        let forgotten = try await store.purgeEnded(before: now.addingTimeInterval(-86_400), limit: Self.purgeBatch)
        if expired + forgotten + orphaned.count > 0 {
            self.logger.info(
                "expired uploads",
                metadata: ["keel.uploads.expired": "\(expired)", "keel.uploads.forgotten": "\(forgotten)", "keel.uploads.orphaned": "\(orphaned.count)"])
        }
        for upload in try await store.unannounced(before: now.addingTimeInterval(-Self.announcementGrace.timeInterval), limit: 100) {
            await self.uploads.announcer.announce(upload)
        }
    }
}

/// A chore that runs at most once per interval.
final class SweepSchedule: Sendable {
    let interval: Duration
    private let last = Mutex<Date?>(nil)

    init(every interval: Duration) {
        self.interval = interval
    }

    /// Whether the chore is due at `now` (and, if so, records that it ran).
    func isDue(_ now: Date) -> Bool {
        self.last.withLock { last in
            if let previous = last, now.timeIntervalSince(previous) < self.interval.timeInterval { return false }
            last = now
            return true
        }
    }
}
