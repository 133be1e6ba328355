import ArgumentParser
import AsyncHTTPClient
import Crypto
import Foundation
import KeelCore
import NIOCore
import NIOHTTP1

#if canImport(Darwin)
import Darwin
#elseif canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// `keel upload FILE --server URL`: a resumable tus 1.0.0 upload with a
/// progress bar, that picks up where the server says it stopped when run
/// again for the same file, and verifies the stored file's SHA-256.
struct Upload: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Upload a file resumably (tus 1.0.0), with progress; run it again to resume.",
        discussion: """
            Creates a session (or uses --token), creates the upload, and sends the file in --chunk-size PATCHes, each \
            with an Upload-Checksum (sha256) the server verifies. After any failure (network error, 5xx, 409, 423, \
            460) it waits (0.5 s, 1 s, 2 s … at most 10 s, or Retry-After), asks HEAD for the stored offset and \
            continues from there. Interrupted runs resume: the upload URL and token are kept in --state-file, keyed by \
            server, path, size and modification time. At the end the server's SHA-256 of the stored file must equal \
            the local one. Prints the upload's URL on stdout; progress and the summary go to stderr.
            """
    )

    @Argument(help: "The file to upload.")
    var file: String

    @Option(help: "Keel's base URL (env KEEL_SERVER; default http://127.0.0.1:8080).")
    var server: String?

    @Option(help: "A session token to upload with (env KEEL_TOKEN); without one a session is created.")
    var token: String?

    @Option(name: .customLong("chunk-size"), help: "Bytes per PATCH.")
    var chunkSize: Int = 5 * 1_048_576

    @Option(name: .customLong("state-file"), help: "Where interrupted uploads are remembered (default ~/.keel/uploads.json).")
    var stateFile: String?

    @Option(help: "Failed attempts in a row to tolerate before giving up (backoff 0.5 s, 1 s, 2 s … at most 10 s).")
    var retries: Int = 10

    @Option(help: "The file's media type, sent as filetype metadata.")
    var filetype: String?

    @Flag(help: "No progress bar.")
    var quiet = false

    func validate() throws {
        guard (1_024...1_073_741_824).contains(self.chunkSize) else { throw ValidationError("--chunk-size must be from 1024 bytes to 1 GiB.") }
        guard self.retries >= 0 else { throw ValidationError("--retries cannot be negative.") }
    }

    func run() async throws {
        try await Runtime.reportingErrors {
            let environment = ProcessInfo.processInfo.environment
            var server = self.server ?? environment["KEEL_SERVER"].flatMap { $0.isEmpty ? nil : $0 } ?? "http://127.0.0.1:8080"
            while server.hasSuffix("/") { server.removeLast() }
            guard let url = URL(string: server), let scheme = url.scheme?.lowercased(), scheme == "http" || scheme == "https", url.host != nil else {
                throw KeelError(.invalidConfiguration, "--server '\(server)' is not an http(s) URL.", hint: "For example --server https://keel.example.com.")
            }
            let source = try UploadSource(self.file)
            let home = environment["HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? NSHomeDirectory()
            let explicitToken = self.token ?? environment["KEEL_TOKEN"].flatMap { $0.isEmpty ? nil : $0 }

            // Ctrl-C: the upload URL is already in the state file, so say how to go on rather than just vanish.
            signal(SIGINT, SIG_IGN)
            let interrupt = DispatchSource.makeSignalSource(signal: SIGINT, queue: .global())
            interrupt.setEventHandler {
                UploadProgress.write((isatty(2) == 1 ? "\n" : "") + "interrupted; run the same command again to resume\n")
                terminateProcess(130)
            }
            interrupt.resume()
            defer { interrupt.cancel() }

            let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: HTTPClient.Configuration(timeout: .init(connect: .seconds(5))))
            var job = UploadJob(
                tus: TusClient(client: client, server: server, chunkSize: self.chunkSize),
                source: source,
                name: self.file,
                state: UploadStateFile(path: self.stateFile ?? (home + "/.keel/uploads.json")),
                explicitToken: explicitToken,
                chunkSize: self.chunkSize,
                retries: self.retries,
                filetype: self.filetype,
                progress: UploadProgress(total: source.size, enabled: !self.quiet)
            )
            let result: UploadJob.Result
            do {
                result = try await job.run()
            } catch {
                try? await client.shutdown()
                throw error
            }
            try await client.shutdown()
            let rate = Double(result.sent) / 1_048_576 / result.seconds
            UploadProgress.write(
                "uploaded \(self.file) (\(UploadProgress.bytes(source.size))) to \(result.url) in \(String(format: "%.1f", result.seconds))s, "
                    + "\(String(format: "%.1f", rate)) MiB/s, sha256 \(result.sha256) verified\n")
            print(result.url)
        }
    }
}

/// `exit` from C (inside a command, `exit` names ArgumentParser's).
private func terminateProcess(_ status: Int32) -> Never {
    exit(status)
}

// MARK: The upload

/// One run of `keel upload`: which session and upload it talks to, how far
/// the server has the file, and the SHA-256 of the file's acknowledged prefix.
struct UploadJob {
    struct Result {
        var url: String
        var sha256: String
        /// Bytes the server acknowledged during this run.
        var sent: Int64
        var seconds: Double
    }

    let tus: TusClient
    let source: UploadSource
    /// The file as the user named it, for messages.
    let name: String
    let state: UploadStateFile
    let explicitToken: String?
    let chunkSize: Int
    let retries: Int
    let filetype: String?
    var progress: UploadProgress

    var token: String?
    var url: String?
    var offset: Int64 = 0
    var digest = PrefixDigest()
    /// Failed attempts in a row; any acknowledged chunk resets it.
    var failures = 0
    /// Whether the server has answered anything yet; until it has, connection errors give up sooner.
    var contacted = false
    var restarts = 0
    var renewals = 0
    var sent: Int64 = 0

    var fingerprint: String { UploadStateFile.fingerprint(server: self.tus.server, source: self.source) }

    mutating func run() async throws -> Result {
        let remembered = self.state.entry(self.fingerprint, server: self.tus.server)
        self.token = self.explicitToken ?? remembered?.token
        if let remembered, remembered.token == self.token { self.url = remembered.url }

        // A remembered upload: HEAD says where to continue.
        var needsHead = self.url != nil
        var announced = false
        var started = ContinuousClock.now
        while true {
            if self.token == nil { self.token = try await self.createSession() }
            guard let token = self.token else { continue }
            if self.url == nil {
                try await self.createUpload(token: token)
                needsHead = false
                continue
            }
            guard let url = self.url else { continue }
            if needsHead {
                guard try await self.head(url, token: token) else { continue }
                needsHead = false
                if !announced {
                    announced = true
                    if self.offset > 0 {
                        UploadProgress.write(
                            "resuming \(self.name) at \(UploadProgress.bytes(self.offset)) of \(UploadProgress.bytes(self.source.size)) "
                                + "(offset \(self.offset)) on \(url)\n")
                        // The part already on the server counts towards the file's SHA-256: hash it first.
                        try self.digest.extend(to: self.offset, from: self.source, pieceSize: self.chunkSize)
                        started = ContinuousClock.now
                        self.progress.restartClock()
                    }
                }
            }
            announced = true
            self.progress.update(done: self.offset, sent: self.sent)
            if self.offset >= self.source.size { break }

            let start = self.offset
            let chunk = try self.source.read(at: start, count: Int(min(Int64(self.chunkSize), self.source.size - start)))
            let next: Int64
            do throws(TusFailure) {
                next = try await self.tus.patch(url, token: token, offset: start, chunk: chunk)
                guard next > start, next <= self.source.size else {
                    throw .transient("PATCH at \(start) answered Upload-Offset \(next)", retryAfter: nil)
                }
            } catch {
                // Whatever happened, HEAD has the authoritative offset.
                try await self.recover(from: error)
                needsHead = true
                continue
            }
            self.contacted = true
            try self.digest.absorb(chunk, at: start, upTo: next, file: self.source, pieceSize: self.chunkSize)
            self.sent += next - start
            self.offset = next
            self.failures = 0
        }
        self.progress.finish()
        let seconds = max(0.001, (ContinuousClock.now - started).timeInterval)
        guard let url = self.url, let token = self.token else { throw KeelError(.internalError, "The upload finished without a URL.") }

        try self.source.checkUnchanged()
        try self.digest.extend(to: self.source.size, from: self.source, pieceSize: self.chunkSize)
        let local = self.digest.hex()
        let info = try await self.info(url, token: token)
        let remote = info["sha256"]?.stringValue
        guard remote?.lowercased() == local else {
            // This upload will never verify: the next run starts a new one.
            try? self.state.forget(self.fingerprint)
            throw KeelError(
                .checksumMismatch,
                "The server's sha256 of \(url) is \(remote ?? "missing") (status \(info["status"]?.stringValue ?? "unknown")), "
                    + "but the local file's is \(local).",
                hint: "The stored file is not this file; upload it again, and report the upload URL if it repeats."
            )
        }
        try self.state.forget(self.fingerprint)
        return Result(url: url, sha256: local, sent: self.sent, seconds: seconds)
    }

    // MARK: Steps, each retried as the failure allows

    mutating func createSession() async throws -> String {
        while true {
            do throws(TusFailure) {
                let token = try await self.tus.createSession()
                self.contacted = true
                self.failures = 0
                return token
            } catch {
                switch error {
                case .transient, .unreachable: try await self.recover(from: error)
                case .gone(let reason): throw KeelError(.notFound, "\(self.tus.server) has no /api/session (\(reason)).", hint: "Check --server: it must be Keel's base URL.")
                case .session(let error, _), .fatal(let error): throw error
                }
            }
        }
    }

    /// Creates the upload and remembers it; on a session problem clears the token instead.
    mutating func createUpload(token: String) async throws {
        while true {
            do throws(TusFailure) {
                let url = try await self.tus.create(
                    token: token, length: self.source.size, filename: URL(fileURLWithPath: self.source.path).lastPathComponent, filetype: self.filetype)
                self.contacted = true
                self.failures = 0
                self.url = url
                self.offset = 0
                do {
                    try self.state.remember(self.fingerprint, UploadStateFile.Entry(url: url, token: token))
                } catch let error as KeelError {
                    UploadProgress.write("warning: \(error.message) An interrupted upload will start over.\n")
                } catch {
                    UploadProgress.write("warning: cannot write \(self.state.path); an interrupted upload will start over.\n")
                }
                return
            } catch {
                switch error {
                case .transient, .unreachable, .session: return try await self.recover(from: error)
                case .gone(let reason): throw KeelError(.notFound, "\(self.tus.server) does not accept tus uploads (\(reason)).", hint: "Check --server, and that the server's version has /api/uploads.")
                case .fatal(let error): throw error
                }
            }
        }
    }

    /// Asks HEAD for the stored offset. False when the upload or session is gone (they were cleared to start over).
    mutating func head(_ url: String, token: String) async throws -> Bool {
        while true {
            do throws(TusFailure) {
                let (offset, length) = try await self.tus.head(url, token: token)
                self.contacted = true
                if let length, length != self.source.size {
                    throw .gone("it is \(length) bytes long, the file \(self.source.size)")
                }
                guard offset <= self.source.size else { throw .gone("its offset \(offset) is past the file's end") }
                self.offset = offset
                return true
            } catch {
                switch error {
                case .transient, .unreachable: try await self.recover(from: error)
                case .gone, .session, .fatal:
                    try await self.recover(from: error)
                    return false
                }
            }
        }
    }

    /// The finished upload's `/info`, once it has its SHA-256 (a large
    /// upload is hashed by a job on the server: `sha256_job` names it until then).
    mutating func info(_ url: String, token: String) async throws -> [String: JSONValue] {
        let deadline = ContinuousClock.now + .seconds(3600)
        while true {
            do throws(TusFailure) {
                let info = try await self.tus.info(url, token: token)
                if info["sha256"]?.stringValue == nil, info["sha256_job"] != nil, ContinuousClock.now < deadline {
                    try? await Task.sleep(for: .seconds(1))
                    continue
                }
                return info
            } catch {
                switch error {
                case .transient, .unreachable: try await self.recover(from: error)
                case .gone(let reason): throw KeelError(.notFound, "The finished upload \(url) is gone (\(reason)).", hint: "Upload the file again.")
                case .session(let error, _), .fatal(let error): throw error
                }
            }
        }
    }

    /// Waits before the next attempt (transient failures), or forgets the
    /// upload (gone) or the session (401, unless the user gave the token), or throws.
    mutating func recover(from failure: TusFailure) async throws {
        if case .unreachable = failure {} else { self.contacted = true }
        switch failure {
        case .transient(let reason, let retryAfter):
            let (offset, size) = (self.offset, self.source.size)
            try await self.backoff(reason, retryAfter: retryAfter, limit: self.retries) {
                KeelError(
                    .storeUnavailable, "Giving up after \($0) failed attempts in a row at offset \(offset) of \(size): \(reason).",
                    hint: "Run the same command again to resume from where the server stopped.")
            }
        case .unreachable(let reason):
            let server = self.tus.server
            // Before the server ever answered, one retry is enough to tell a wrong --server (each attempt
            // already keeps connecting for the connect timeout).
            try await self.backoff(reason, retryAfter: nil, limit: self.contacted ? self.retries : min(self.retries, 1)) {
                KeelError(
                    .storeUnavailable, "Cannot talk to \(server) (\($0 == 1 ? "1 attempt" : "\($0) attempts")): \(reason).",
                    hint: "Check --server and the network; run the same command again to resume.")
            }
        case .gone(let reason):
            self.restarts += 1
            guard self.restarts <= 3 else {
                throw KeelError(.notFound, "The upload keeps disappearing from the server (\(reason)).", hint: "Check the server's upload expiry and logs.")
            }
            UploadProgress.write(self.progress.interrupting("the upload is gone (\(reason)); starting a new one\n"))
            try? self.state.forget(self.fingerprint)
            self.url = nil
            self.offset = 0
        case .session(let error, let reason):
            self.renewals += 1
            guard self.explicitToken == nil, self.renewals <= 2 else {
                throw KeelError(error.code, error.message, hint: error.hint ?? "Pass a valid --token (or KEEL_TOKEN), or none to create a session.")
            }
            UploadProgress.write(self.progress.interrupting("the session is no longer valid (\(reason)); starting over with a new session\n"))
            try? self.state.forget(self.fingerprint)
            self.token = nil
            self.url = nil
            self.offset = 0
        case .fatal(let error):
            throw error
        }
    }

    mutating func backoff(_ reason: String, retryAfter: Double?, limit: Int, exhausted: (Int) -> KeelError) async throws {
        self.failures += 1
        guard self.failures <= limit else { throw exhausted(self.failures) }
        let delay = retryAfter.map { min(max($0, 0), 60) } ?? min(10, 0.5 * Double(1 << min(self.failures - 1, 5)))
        UploadProgress.write(
            self.progress.interrupting("\(reason); retrying in \(String(format: "%g", delay)) s (attempt \(self.failures + 1) of \(limit + 1))\n"))
        try await Task.sleep(for: .milliseconds(Int64(delay * 1000)))
    }
}

// MARK: tus over HTTP

/// Why a request did not do what it should, and so what to do next.
enum TusFailure: Error {
    /// Retry after a pause (and HEAD): 5xx, 408, 409, 423, 429, 460, a broken answer.
    case transient(String, retryAfter: Double?)
    /// No answer at all: connection refused or reset, timeout.
    case unreachable(String)
    /// 404, 410: the upload is no more; start a new one.
    case gone(String)
    /// 401: the session is unknown or expired.
    case session(KeelError, String)
    /// Anything else: retrying will not help.
    case fatal(KeelError)
}

/// The requests of Keel's tus API, one chunk in memory at a time.
struct TusClient: Sendable {
    let client: HTTPClient
    /// Base URL without a trailing slash.
    let server: String
    let chunkSize: Int

    static let version = "1.0.0"

    struct Answer: Sendable {
        var status: UInt
        var headers: HTTPHeaders
        var body: ByteBuffer

        var json: [String: JSONValue] { (try? JSONValue.parse(self.body.readableBytesView))?.objectValue ?? [:] }

        /// The server's `{"error": {"code", "message", "hint"}}`, or a description of the status.
        var error: KeelError {
            let error = self.json["error"]?.objectValue
            let code = error?["code"]?.stringValue.flatMap(KeelError.Code.init(rawValue:)) ?? (self.status == 401 ? .sessionInvalid : .badRequest)
            let message = error?["message"]?.stringValue ?? "The server answered \(self.status)."
            return KeelError(code, message, hint: error?["hint"]?.stringValue)
        }

        var failure: TusFailure {
            let error = self.error
            // HEAD answers carry no body: then the status alone.
            let reason: String
            if var message = self.json["error"]?.objectValue?["message"]?.stringValue {
                if message.hasSuffix(".") { message.removeLast() }
                reason = "\(self.status) \(message)"
            } else {
                reason = "HTTP \(self.status)"
            }
            switch self.status {
            case 401: return .session(error, reason)
            case 404, 410: return .gone(reason)
            case 408, 409, 423, 429, 460, 500...599:
                return .transient(reason, retryAfter: self.headers.first(name: "Retry-After").flatMap { Double($0.trimmingCharacters(in: .whitespaces)) })
            default: return .fatal(error)
            }
        }
    }

    /// Long enough for a chunk at 256 KiB/s, and never under five minutes.
    var deadline: TimeAmount { .seconds(max(300, Int64(self.chunkSize / 262_144))) }

    func exchange(_ method: HTTPMethod, _ url: String, token: String?, headers: [(String, String)] = [], body: ByteBuffer? = nil) async throws(TusFailure) -> Answer {
        var request = HTTPClientRequest(url: url)
        request.method = method
        if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let body { request.body = .bytes(body) }
        do {
            let response = try await self.client.execute(request, timeout: self.deadline)
            let collected = try await response.body.collect(upTo: 1 << 20)
            return Answer(status: response.status.code, headers: response.headers, body: collected)
        } catch is CancellationError {
            throw .fatal(KeelError(.internalError, "Cancelled."))
        } catch {
            throw .unreachable("\(method.rawValue) \(url): \(Self.describe(error))")
        }
    }

    func createSession() async throws(TusFailure) -> String {
        let answer = try await self.exchange(.POST, self.server + "/api/session", token: nil)
        guard answer.status == 201 else { throw answer.status == 401 ? .fatal(answer.error) : answer.failure }
        guard let token = answer.json["token"]?.stringValue else { throw .transient("POST /api/session answered without a token", retryAfter: nil) }
        return token
    }

    /// Creates the upload; returns its absolute URL.
    func create(token: String, length: Int64, filename: String, filetype: String?) async throws(TusFailure) -> String {
        var metadata = "filename " + Data(filename.utf8).base64EncodedString()
        if let filetype { metadata += ",filetype " + Data(filetype.utf8).base64EncodedString() }
        let answer = try await self.exchange(
            .POST, self.server + "/api/uploads", token: token,
            headers: [("Tus-Resumable", Self.version), ("Upload-Length", String(length)), ("Upload-Metadata", metadata)])
        guard answer.status == 201 else { throw answer.failure }
        guard let location = answer.headers.first(name: "Location"), !location.isEmpty else {
            throw .fatal(KeelError(.badRequest, "POST /api/uploads answered 201 without a Location.", hint: "Is --server a tus 1.0.0 server?"))
        }
        return Self.resolve(location, against: self.server)
    }

    /// The stored offset and length (HEAD).
    func head(_ url: String, token: String) async throws(TusFailure) -> (offset: Int64, length: Int64?) {
        let answer = try await self.exchange(.HEAD, url, token: token, headers: [("Tus-Resumable", Self.version)])
        guard answer.status == 200 else { throw answer.failure }
        guard let offset = answer.headers.first(name: "Upload-Offset").flatMap({ Int64($0) }), offset >= 0 else {
            throw .transient("HEAD answered without a valid Upload-Offset", retryAfter: nil)
        }
        return (offset, answer.headers.first(name: "Upload-Length").flatMap { Int64($0) })
    }

    /// Sends one chunk with its SHA-256; returns the new offset.
    func patch(_ url: String, token: String, offset: Int64, chunk: ByteBuffer) async throws(TusFailure) -> Int64 {
        var hasher = SHA256()
        chunk.withUnsafeReadableBytes { hasher.update(bufferPointer: $0) }
        let digest = Data(hasher.finalize())
        let answer = try await self.exchange(
            .PATCH, url, token: token,
            headers: [
                ("Tus-Resumable", Self.version), ("Content-Type", "application/offset+octet-stream"), ("Upload-Offset", String(offset)),
                ("Upload-Checksum", "sha256 " + digest.base64EncodedString()),
            ],
            body: chunk)
        guard answer.status == 204 || answer.status == 200 else { throw answer.failure }
        guard let next = answer.headers.first(name: "Upload-Offset").flatMap({ Int64($0) }) else {
            throw .transient("PATCH answered without Upload-Offset", retryAfter: nil)
        }
        return next
    }

    /// `GET <upload>/info`: status, length, offset, sha256.
    func info(_ url: String, token: String) async throws(TusFailure) -> [String: JSONValue] {
        let answer = try await self.exchange(.GET, url + "/info", token: token)
        guard answer.status == 200 else { throw answer.failure }
        return answer.json
    }

    /// `Location` made absolute: a path is appended to the server URL (which keeps a proxy's path prefix).
    static func resolve(_ location: String, against server: String) -> String {
        let lowered = location.lowercased()
        if lowered.hasPrefix("http://") || lowered.hasPrefix("https://") { return location }
        if location.hasPrefix("/") { return server + location }
        return URL(string: location, relativeTo: URL(string: server + "/"))?.absoluteString ?? server + "/" + location
    }

    /// A one-line account of a transport error.
    static func describe(_ error: any Error) -> String {
        if let error = error as? IOError { return String(cString: strerror(error.errnoCode)) }
        let text = String(describing: error).replacingOccurrences(of: "\n", with: " ")
        return text.count > 300 ? String(text.prefix(300)) + "…" : text
    }
}

// MARK: The file

/// The file being uploaded, read with `pread` one chunk at a time.
final class UploadSource {
    /// Absolute, standardized path.
    let path: String
    let size: Int64
    /// Modification time in milliseconds since 1970.
    let modified: Int64
    private let descriptor: Int32

    init(_ argument: String) throws {
        let path = URL(fileURLWithPath: argument).standardizedFileURL.path
        let (size, modified) = try Self.stat(path, name: argument)
        let descriptor = open(path, O_RDONLY)
        guard descriptor >= 0 else {
            throw KeelError(.invalidInput, "Cannot open \(argument): \(String(cString: strerror(errno))).")
        }
        self.path = path
        self.size = size
        self.modified = modified
        self.descriptor = descriptor
    }

    deinit { close(self.descriptor) }

    static func stat(_ path: String, name: String) throws -> (size: Int64, modified: Int64) {
        let attributes: [FileAttributeKey: Any]
        do {
            attributes = try FileManager.default.attributesOfItem(atPath: path)
        } catch {
            throw KeelError(.invalidInput, "Cannot read \(name): no such file, or no permission.")
        }
        guard (attributes[.type] as? FileAttributeType) == .typeRegular, let size = (attributes[.size] as? NSNumber)?.int64Value else {
            throw KeelError(.invalidInput, "\(name) is not a regular file.", hint: "keel upload sends one file; archive a directory first.")
        }
        let modified = Int64(((attributes[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0) * 1000)
        return (size, modified)
    }

    /// Exactly `count` bytes from `offset`.
    func read(at offset: Int64, count: Int) throws -> ByteBuffer {
        var buffer = ByteBufferAllocator().buffer(capacity: count)
        while buffer.readableBytes < count {
            let position = offset + Int64(buffer.readableBytes)
            let wanted = count - buffer.readableBytes
            var failure: Int32 = 0
            let read = buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: wanted) { pointer -> Int in
                let read = pread(self.descriptor, pointer.baseAddress, wanted, off_t(position))
                if read < 0 {
                    failure = errno
                    return 0
                }
                return read
            }
            if failure == EINTR { continue }
            if failure != 0 { throw KeelError(.invalidInput, "Cannot read \(self.path): \(String(cString: strerror(failure))).") }
            if read == 0 {
                throw KeelError(
                    .invalidInput, "\(self.path) ends at \(position) bytes; it had \(self.size) when the upload began.",
                    hint: "Do not change a file while it uploads; run the command again to upload the new version.")
            }
        }
        return buffer
    }

    /// Throws when the file's size or modification time changed since the upload began.
    func checkUnchanged() throws {
        let now = try Self.stat(self.path, name: self.path)
        guard now.size == self.size, now.modified == self.modified else {
            throw KeelError(
                .invalidInput, "\(self.path) changed while it was uploading.",
                hint: "Run the command again to upload the new version (the old upload is not reused).")
        }
    }
}

/// SHA-256 of the file's first `count` bytes, extended as the server acknowledges chunks.
struct PrefixDigest {
    private var hasher = SHA256()
    private(set) var count: Int64 = 0

    /// Takes the part of `chunk` (the file's bytes from `start`) below `end` that is not hashed yet.
    mutating func absorb(_ chunk: ByteBuffer, at start: Int64, upTo end: Int64, file: UploadSource, pieceSize: Int) throws {
        if start > self.count { try self.extend(to: start, from: file, pieceSize: pieceSize) }
        let stop = min(end, start + Int64(chunk.readableBytes))
        guard self.count < stop else { return }
        let from = Int(self.count - start)
        let to = Int(stop - start)
        chunk.withUnsafeReadableBytes { bytes in
            self.hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: bytes[from..<to]))
        }
        self.count = stop
    }

    /// Hashes the file's bytes from `count` up to `end`, reading `pieceSize` at a time.
    mutating func extend(to end: Int64, from file: UploadSource, pieceSize: Int) throws {
        while self.count < end {
            let piece = try file.read(at: self.count, count: Int(min(Int64(pieceSize), end - self.count)))
            piece.withUnsafeReadableBytes { self.hasher.update(bufferPointer: $0) }
            self.count += Int64(piece.readableBytes)
        }
    }

    func hex() -> String {
        self.hasher.finalize().map { String(format: "%02x", $0) }.joined()
    }
}

// MARK: Progress

/// Progress on standard error: a redrawn bar on a terminal, otherwise a
/// line every 5 %; bytes, average rate, ETA.
struct UploadProgress {
    let total: Int64
    let enabled: Bool
    let interactive = isatty(2) == 1
    private var started = ContinuousClock.now
    private var lastBucket = -1
    private var lastDraw: ContinuousClock.Instant?
    private var drawn = false

    init(total: Int64, enabled: Bool) {
        self.total = total
        self.enabled = enabled
    }

    /// `done`: the server's offset; `sent`: bytes acknowledged during this run (for the rate).
    mutating func update(done: Int64, sent: Int64) {
        guard self.enabled else { return }
        let now = ContinuousClock.now
        let percent = self.total == 0 ? 100.0 : Double(done) * 100 / Double(self.total)
        if self.interactive {
            if let lastDraw = self.lastDraw, now - lastDraw < .milliseconds(100), done < self.total { return }
        } else {
            let bucket = Int(percent) / 5
            guard bucket != self.lastBucket else { return }
            self.lastBucket = bucket
        }
        self.lastDraw = now
        let seconds = max(0.001, (now - self.started).timeInterval)
        let rate = Double(sent) / seconds
        let eta = done >= self.total ? "0s" : rate > 0 ? Self.duration(Double(self.total - done) / rate) : "?"
        let figures = String(
            format: "%5.1f%%  %@ / %@  %.1f MiB/s  ETA %@", percent, Self.bytes(done), Self.bytes(self.total), rate / 1_048_576, eta)
        if self.interactive {
            let width = 30
            let filled = min(width, Int(percent / 100 * Double(width)))
            let bar = String(repeating: "=", count: filled) + (filled < width ? ">" + String(repeating: " ", count: width - filled - 1) : "")
            Self.write("\r\u{1B}[K[\(bar)] \(figures)")
            self.drawn = true
        } else {
            Self.write(figures + "\n")
        }
    }

    /// Rates count from now (after hashing the part already uploaded).
    mutating func restartClock() {
        self.started = ContinuousClock.now
    }

    /// `text` prefixed so it starts on a line of its own when the bar is drawn.
    mutating func interrupting(_ text: String) -> String {
        guard self.drawn else { return text }
        self.drawn = false
        self.lastDraw = nil
        return "\r\u{1B}[K" + text
    }

    mutating func finish() {
        if self.drawn { Self.write("\n") }
        self.drawn = false
    }

    static func write(_ text: String) {
        FileHandle.standardError.write(Data(text.utf8))
    }

    static func bytes(_ count: Int64) -> String {
        let value = Double(count)
        if value >= 1_073_741_824 { return String(format: "%.2f GiB", value / 1_073_741_824) }
        if value >= 1_048_576 { return String(format: "%.1f MiB", value / 1_048_576) }
        if value >= 1024 { return String(format: "%.1f KiB", value / 1024) }
        return "\(count) B"
    }

    static func duration(_ seconds: Double) -> String {
        guard seconds.isFinite else { return "?" }
        let whole = Int(seconds.rounded())
        if whole >= 3600 { return "\(whole / 3600)h\(String(format: "%02d", whole % 3600 / 60))m" }
        return whole >= 60 ? "\(whole / 60)m\(String(format: "%02d", whole % 60))s" : "\(whole)s"
    }
}

// MARK: State between runs

/// Interrupted uploads, remembered between runs: fingerprint → `{upload_url, token}`.
struct UploadStateFile: Sendable {
    struct Entry: Sendable, Equatable {
        /// The upload's absolute URL.
        var url: String
        var token: String
    }

    let path: String

    /// Server URL, absolute path, size and modification time (ms).
    static func fingerprint(server: String, source: UploadSource) -> String {
        "\(server) \(source.path) \(source.size) \(source.modified)"
    }

    /// Every entry; relative URLs (older files' `location`) resolved against `server`.
    func entries(server: String) -> [String: Entry] {
        guard let data = FileManager.default.contents(atPath: self.path), let object = (try? JSONValue.parse(Array(data)))?.objectValue else { return [:] }
        var entries: [String: Entry] = [:]
        for (key, value) in object {
            guard let fields = value.objectValue, let token = fields["token"]?.stringValue,
                let url = fields["upload_url"]?.stringValue ?? fields["location"]?.stringValue
            else { continue }
            entries[key] = Entry(url: TusClient.resolve(url, against: server), token: token)
        }
        return entries
    }

    func entry(_ fingerprint: String, server: String) -> Entry? {
        self.entries(server: server)[fingerprint]
    }

    func remember(_ fingerprint: String, _ entry: Entry) throws {
        var object = self.object()
        object[fingerprint] = .object(["upload_url": .string(entry.url), "token": .string(entry.token)])
        try self.write(object)
    }

    func forget(_ fingerprint: String) throws {
        var object = self.object()
        guard object.removeValue(forKey: fingerprint) != nil else { return }
        try self.write(object)
    }

    /// The file as it is (other entries kept verbatim).
    private func object() -> [String: JSONValue] {
        guard let data = FileManager.default.contents(atPath: self.path) else { return [:] }
        return (try? JSONValue.parse(Array(data)))?.objectValue ?? [:]
    }

    /// Written to a temporary file and renamed, so a crash never leaves half a file. It holds tokens: owner-only.
    private func write(_ object: [String: JSONValue]) throws {
        let directory = URL(fileURLWithPath: self.path).deletingLastPathComponent()
        do {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw KeelError(.invalidInput, "Cannot create \(directory.path) for the upload state.", hint: "Pass a writable --state-file.")
        }
        let temporary = self.path + ".tmp-\(getpid())"
        guard FileManager.default.createFile(atPath: temporary, contents: Data(JSONValue.object(object).serialized().utf8), attributes: [.posixPermissions: 0o600]) else {
            throw KeelError(.invalidInput, "Cannot write \(temporary).", hint: "Pass a writable --state-file.")
        }
        guard rename(temporary, self.path) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(temporary)
            throw KeelError(.invalidInput, "Cannot replace \(self.path): \(reason).", hint: "Pass a writable --state-file.")
        }
    }
}
