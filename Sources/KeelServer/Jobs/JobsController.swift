import Foundation
import Hummingbird
import KeelCore

/// `/api/jobs`: create, read, list and cancel the caller's jobs. Jobs belong
/// to the session that created them; to any other session they do not exist.
struct JobsController: Sendable {
    let queue: any JobQueue
    let authenticator: SessionAuthenticator
    let registry: JobRegistry
    let settings: JobSettings
    let hub: ChangeHub
    let clock: any KeelClock
    let maxBodyBytes: Int
    let metrics: JobMetrics
    let submitter: JobSubmitter
    /// `--session-max-active-jobs` (0: no limit).
    let maxActiveJobs: Int

    static let maxIdempotencyKeyLength = 255
    static let defaultPageSize = 20
    static let maxPageSize = 100

    func register(on routes: inout RouteTable) {
        routes.add("/api/jobs", .post, self.create)
        routes.add("/api/jobs", .get, self.list)
        routes.add("/api/jobs/:id", .get, self.read)
        routes.add("/api/jobs/:id/cancel", .post, self.cancel)
    }

    @Sendable func create(_ request: Request, context: KeelRequestContext) async throws -> Response {
        var request = request
        let session = try await self.authenticator.authenticate(request).session
        let idempotencyKey = try Self.idempotencyKey(request)
        guard let body = try await request.jsonBody(limit: self.maxBodyBytes) else {
            throw KeelError(.invalidInput, "Creating a job needs a JSON body.", hint: #"Send {"type": "keel.probe", "input": {"tokens": 3}}."#)
        }
        guard case .object(let members) = body else {
            throw KeelError(.invalidInput, "The body must be a JSON object, not \(body.kindName).", hint: #"Send {"type": "…", "input": {…}}."#)
        }
        if let unknown = members.keys.sorted().first(where: { !["type", "input", "max_attempts"].contains($0) }) {
            throw KeelError(.invalidInput, "Unknown field '\(unknown)' in the job.", hint: "A job has type, input and optionally max_attempts.")
        }
        guard case .string(let type)? = members["type"] else {
            throw KeelError(.invalidInput, "The job needs a string 'type'.", hint: "Known types: \(self.registry.types.joined(separator: ", ")).")
        }
        guard let handler = self.registry.handler(for: type) else {
            throw KeelError(
                .unknownJobType,
                "There is no job type '\(type)'.",
                hint: "Known types: \(self.registry.types.joined(separator: ", "))."
            )
        }
        let input = try handler.validate(members["input"] ?? .null)
        var maxAttempts = self.settings.maxAttempts
        switch members["max_attempts"] {
        case nil, .null?: break
        case .int(let value)? where (1...100).contains(value): maxAttempts = Int(value)
        case .double(let value)? where value.rounded() == value && (1...100).contains(value): maxAttempts = Int(value)
        default: throw KeelError(.invalidInput, "max_attempts must be an integer from 1 to 100.")
        }
        let inputJSON = input.serialized()
        if self.maxActiveJobs > 0, try await self.queue.activeJobCount(sessionID: session.id) >= self.maxActiveJobs {
            // Two instances may both let one more in at once: the limit is a bound on
            // what one session can take from every worker, not an exact count.
            throw KeelError(
                .tooManyJobs,
                "This session has \(self.maxActiveJobs) jobs queued or running, the most allowed at once.",
                hint: "Wait for one to finish or cancel one; the limit is --session-max-active-jobs.",
                retryAfterSeconds: 1
            )
        }
        let (job, created) = try await self.submitter.enqueue(
            NewJob(sessionID: session.id, type: type, inputJSON: inputJSON, maxAttempts: maxAttempts, idempotencyKey: idempotencyKey)
        )
        if !created, job.type != type || job.inputJSON != inputJSON || job.maxAttempts != maxAttempts {
            throw KeelError(
                .idempotencyKeyReused,
                "This Idempotency-Key was already used for a different job (\(job.id)).",
                hint: "Use a fresh key for each distinct job; reuse a key only to retry the very same request."
            )
        }
        var headers: HTTPFields = [.location: "/api/jobs/\(job.id)", .cacheControl: "no-store"]
        if !created { headers[.idempotentReplayed] = "true" }
        return .json(job.jsonRepresentation(), status: created ? .accepted : .ok, headers: headers)
    }

    @Sendable func read(_ request: Request, context: KeelRequestContext) async throws -> Response {
        let session = try await self.authenticator.authenticate(request).session
        let job = try await self.ownedJob(context, session: session)
        return .json(job.jsonRepresentation(), headers: [.cacheControl: "no-store"])
    }

    @Sendable func list(_ request: Request, context: KeelRequestContext) async throws -> Response {
        let session = try await self.authenticator.authenticate(request).session
        let query = request.uri.queryParameters
        var status: JobStatus?
        if let text = query["status"].map(String.init), !text.isEmpty {
            guard let parsed = JobStatus(rawValue: text) else {
                throw KeelError(.invalidInput, "Unknown status '\(text)'.", hint: "Use one of \(JobStatus.allCases.map(\.rawValue).joined(separator: ", ")).")
            }
            status = parsed
        }
        var limit = Self.defaultPageSize
        if let text = query["limit"].map(String.init) {
            guard let parsed = Int(text), (1...Self.maxPageSize).contains(parsed) else {
                throw KeelError(.invalidInput, "limit must be an integer from 1 to \(Self.maxPageSize).")
            }
            limit = parsed
        }
        let cursor = query["cursor"].map(String.init).flatMap { $0.isEmpty ? nil : $0 }
        let page = try await self.queue.jobs(sessionID: session.id, status: status, limit: limit, cursor: cursor, now: self.clock.now())
        var json = JSONWriter()
        json.object { json in
            json.field("jobs") { json in
                json.array { json in
                    for job in page.jobs { json.element(rawJSON: job.jsonRepresentation()) }
                }
            }
            json.field("next_cursor", page.nextCursor)
        }
        return .json(json.text, headers: [.cacheControl: "no-store"])
    }

    @Sendable func cancel(_ request: Request, context: KeelRequestContext) async throws -> Response {
        let session = try await self.authenticator.authenticate(request).session
        let job = try await self.ownedJob(context, session: session)
        if job.status.isTerminal {
            throw KeelError(.jobFinished, "The job already ended: it is \(job.status.rawValue).", hint: "Only queued or running jobs can be cancelled.")
        }
        guard let updated = try await self.submitter.cancel(id: job.id, resultTTL: self.settings.resultTTL) else {
            throw Self.notFound(job.id)
        }
        if updated.status == .cancelled {
            self.metrics.finished(type: updated.type, status: updated.status.rawValue)
        } else if updated.status.isTerminal {
            // It ended on its own between our read and the cancel.
            throw KeelError(.jobFinished, "The job already ended: it is \(updated.status.rawValue).", hint: "Only queued or running jobs can be cancelled.")
        }
        // A running job stops once its worker hears of it (at once through
        // the change feed, at the latest at its next heartbeat).
        return .json(updated.jsonRepresentation(), status: updated.status == .cancelled ? .ok : .accepted, headers: [.cacheControl: "no-store"])
    }

    // MARK: Helpers

    func ownedJob(_ context: KeelRequestContext, session: Session) async throws -> Job {
        let id = try context.parameters.require("id")
        guard Identifiers.isBase64URL(Substring(id), length: id.utf8.count), id.utf8.count <= 64,
            let job = try await self.queue.job(id: id), job.sessionID == session.id, job.isVisible(at: self.clock.now())
        else {
            throw Self.notFound(id)
        }
        return job
    }

    static func notFound(_ id: String) -> KeelError {
        KeelError(
            .notFound,
            "No job '\(id)' for this session.",
            hint: "Jobs belong to the session that created them, and finished jobs expire after the result TTL."
        )
    }

    static func idempotencyKey(_ request: Request) throws -> String? {
        guard let key = request.headers[.idempotencyKey] else { return nil }
        guard !key.isEmpty, key.utf8.count <= Self.maxIdempotencyKeyLength, key.utf8.allSatisfy({ $0 >= 0x21 && $0 <= 0x7E }) else {
            throw KeelError(
                .badRequest,
                "Idempotency-Key must be 1 to \(Self.maxIdempotencyKeyLength) visible ASCII characters.",
                hint: "Send a random value such as a UUID, the same one when retrying the same request."
            )
        }
        return key
    }
}
