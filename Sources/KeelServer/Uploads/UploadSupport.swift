import Crypto
import Foundation
import KeelCore
import Logging
import Metrics
import Synchronization

/// Code that runs when an upload completes: later layers turn uploads into
/// documents here. Delivery is at least once: a hook that fails, or an
/// instance that dies before the hooks ran, gets a retry from the janitor, so
/// hooks must be idempotent (enqueue a job with the upload id as its
/// Idempotency-Key, say).
public struct UploadHooks: Sendable {
    public typealias Hook = @Sendable (Upload) async throws -> Void
    var onComplete: [Hook] = []

    public init() {}

    public mutating func onCompletion(_ hook: @escaping Hook) {
        self.onComplete.append(hook)
    }
}

/// Runs the completion hooks of an upload and records that they ran.
struct UploadAnnouncer: Sendable {
    let store: any UploadStore
    let hooks: UploadHooks
    let clock: any KeelClock
    let metrics: UploadMetrics
    let logger: Logger

    /// Returns whether every hook succeeded (then the upload is marked announced).
    @discardableResult
    func announce(_ upload: Upload) async -> Bool {
        do {
            for hook in self.hooks.onComplete { try await hook(upload) }
            try await self.store.markAnnounced(uploadID: upload.id, now: self.clock.now())
            return true
        } catch {
            self.logger.warning("upload completion hook failed; the janitor retries", metadata: ["keel.upload": "\(upload.id)", "keel.error": "\(error)"])
            return false
        }
    }
}

/// The upload metrics, as Prometheus series.
final class UploadMetrics: Sendable {
    let created: Metrics.Counter
    let finished: Metrics.Counter
    let expired: Metrics.Counter
    /// Finished uploads removed because their session ended.
    let orphaned: Metrics.Counter
    let terminated: Metrics.Counter
    let bytesReceived: Metrics.Counter
    let patchDuration: Metrics.Timer
    let lockTakeovers: Metrics.Counter
    let lockRefusals: Metrics.Counter

    init(_ metrics: KeelMetrics) {
        self.created = metrics.counter("keel_uploads_created_total")
        self.finished = metrics.counter("keel_uploads_finished_total")
        self.expired = metrics.counter("keel_uploads_expired_total")
        self.orphaned = metrics.counter("keel_uploads_orphaned_total")
        self.terminated = metrics.counter("keel_uploads_terminated_total")
        self.bytesReceived = metrics.counter("keel_upload_bytes_received_total")
        self.patchDuration = Metrics.Timer(label: "keel_upload_patch_duration_seconds", factory: metrics.factory)
        self.lockTakeovers = metrics.counter("keel_upload_lock_takeovers_total")
        self.lockRefusals = metrics.counter("keel_upload_lock_refusals_total")
    }
}

/// A tus checksum algorithm and its running hash.
enum ChecksumAlgorithm: String, CaseIterable, Sendable {
    case sha1
    case sha256
    case md5

    var digestLength: Int {
        switch self {
        case .sha1: 20
        case .sha256: 32
        case .md5: 16
        }
    }

    func makeHasher() -> ChecksumHasher {
        switch self {
        case .sha1: .sha1(Insecure.SHA1())
        case .sha256: .sha256(SHA256())
        case .md5: .md5(Insecure.MD5())
        }
    }
}

enum ChecksumHasher {
    case sha1(Insecure.SHA1)
    case sha256(SHA256)
    case md5(Insecure.MD5)

    mutating func update(_ bytes: UnsafeRawBufferPointer) {
        switch self {
        case .sha1(var hasher):
            hasher.update(bufferPointer: bytes)
            self = .sha1(hasher)
        case .sha256(var hasher):
            hasher.update(bufferPointer: bytes)
            self = .sha256(hasher)
        case .md5(var hasher):
            hasher.update(bufferPointer: bytes)
            self = .md5(hasher)
        }
    }

    func finalize() -> [UInt8] {
        switch self {
        case .sha1(let hasher): Array(hasher.finalize())
        case .sha256(let hasher): Array(hasher.finalize())
        case .md5(let hasher): Array(hasher.finalize())
        }
    }
}

/// An `Upload-Checksum` header: algorithm and expected digest.
struct UploadChecksum: Sendable {
    var algorithm: ChecksumAlgorithm
    var digest: [UInt8]

    init(header: String) throws {
        let parts = header.split(separator: " ", omittingEmptySubsequences: true)
        guard parts.count == 2 else {
            throw KeelError(.badRequest, "Upload-Checksum must be an algorithm and a base64 digest.", hint: "For example: Upload-Checksum: sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=")
        }
        guard let algorithm = ChecksumAlgorithm(rawValue: parts[0].lowercased()) else {
            throw KeelError(
                .badRequest, "Checksum algorithm '\(parts[0])' is not supported.",
                hint: "Use one of \(ChecksumAlgorithm.allCases.map(\.rawValue).joined(separator: ", ")) (Tus-Checksum-Algorithm).")
        }
        guard let digest = Data(base64Encoded: String(parts[1])), digest.count == algorithm.digestLength else {
            throw KeelError(.badRequest, "The \(algorithm.rawValue) digest in Upload-Checksum is not valid base64 of \(algorithm.digestLength) bytes.")
        }
        self.algorithm = algorithm
        self.digest = Array(digest)
    }
}

/// HTTP dates (RFC 9110 IMF-fixdate), as `Upload-Expires` needs.
enum HTTPDate {
    private static let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
    private static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    static func string(_ date: Date) -> String {
        var seconds = time_t(date.timeIntervalSince1970.rounded(.down))
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return "\(days[Int(parts.tm_wday)]), \(two(parts.tm_mday)) \(months[Int(parts.tm_mon)]) \(parts.tm_year + 1900) "
            + "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)) GMT"
    }
}
