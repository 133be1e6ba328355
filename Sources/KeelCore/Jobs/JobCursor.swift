import Foundation

/// A position in a session's newest-first job list: the last job shown.
public struct JobCursor: Sendable, Equatable {
    public var createdAt: Int64
    public var id: String

    public init(createdAt: Int64, id: String) {
        self.createdAt = createdAt
        self.id = id
    }

    /// Parses `<created-at-ms>.<id>`; throws ``KeelError/Code/invalidCursor``.
    public init(parsing text: String) throws {
        let parts = text.split(separator: ".", maxSplits: 1)
        guard parts.count == 2, let createdAt = Int64(parts[0]), Identifiers.isBase64URL(parts[1], length: parts[1].utf8.count), !parts[1].isEmpty
        else {
            throw KeelError(.invalidCursor, "The cursor '\(text)' is not one this server handed out.", hint: "Use next_cursor from the previous page, unchanged.")
        }
        self.init(createdAt: createdAt, id: String(parts[1]))
    }

    public var text: String { "\(self.createdAt).\(self.id)" }
}

extension JobPage {
    /// A page from up to `limit + 1` rows: the extra row only says there is more.
    public init(jobs rows: [Job], limit: Int) {
        let page = Array(rows.prefix(limit))
        self.jobs = page
        if rows.count > limit, let last = page.last {
            self.nextCursor = JobCursor(createdAt: Int64((last.createdAt.timeIntervalSince1970 * 1000).rounded()), id: last.id).text
        } else {
            self.nextCursor = nil
        }
    }
}

extension JobFailure {
    /// The failure recorded when a worker's lease expired (it died or stalled).
    public static let workerLost = JobFailure(code: "worker_lost", message: "The worker running this attempt stopped heartbeating (killed or stalled).")
}

/// JSON columns of the job tables (progress, error), shared by the drivers.
public enum JobRowCoding {
    public static func decode(_ type: JobProgress.Type, from text: String?) throws -> JobProgress? {
        guard let text, !text.isEmpty else { return nil }
        if text == "{}" { return JobProgress() }
        guard case .object(let members) = try JSONValue.parse(Array(text.utf8)) else { return JobProgress() }
        var progress = JobProgress()
        if case .string(let stage)? = members["stage"] { progress.stage = stage }
        switch members["percent"] {
        case .int(let value)?: progress.percent = Double(value)
        case .double(let value)?: progress.percent = value
        default: break
        }
        if case .string(let message)? = members["message"] { progress.message = message }
        return progress
    }

    public static func decode(_ type: JobFailure.Type, from text: String?) throws -> JobFailure? {
        guard let text, !text.isEmpty, text != "null" else { return nil }
        guard case .object(let members) = try JSONValue.parse(Array(text.utf8)) else { return nil }
        guard case .string(let code)? = members["code"] else { return nil }
        let message: String
        if case .string(let text)? = members["message"] { message = text } else { message = "" }
        return JobFailure(code: code, message: message)
    }

    public static func encode(_ failure: JobFailure) throws -> String {
        JSONValue.object(["code": .string(failure.code), "message": .string(failure.message)]).serialized()
    }
}
