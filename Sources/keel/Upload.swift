import ArgumentParser
import AsyncHTTPClient
import Crypto
import Foundation
import KeelCore
import NIOCore
import NIOHTTP1
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// `keel upload FILE --server URL`: a resumable tus 1.0 upload with a
/// progress bar, that picks up where the server says it stopped when run
/// again for the same file, and verifies the stored file's SHA-256.
struct Upload: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Upload a file resumably (tus 1.0), with progress; run it again to resume.",
        discussion: """
            Creates a session (or uses --token), creates the upload, and sends the file in --chunk-size PATCHes, each \
            with an Upload-Checksum (sha256) the server verifies. On a network error, a restarted instance or a 423 \
            it asks HEAD for the stored offset and continues. Interrupted runs resume: the upload URL and token are \
            kept in --state-file, keyed by server, path, size and modification time. At the end the server's SHA-256 \
            of the stored file must equal the local one. Prints the upload's URL on stdout.
            """
    )

    @Argument(help: "The file to upload.") var file: String
    @Option(help: "Keel's base URL (env KEEL_SERVER).") var server: String?
    @Option(help: "A session token to upload with (env KEEL_TOKEN); without one a session is created.") var token: String?
    @Option(name: .customLong("chunk-size"), help: "Bytes per PATCH.") var chunkSize: Int = 5 * 1_048_576
    @Option(name: .customLong("state-file"), help: "Where interrupted uploads are remembered (default ~/.keel/uploads.json).") var stateFile: String?
    @Option(help: "Attempts per chunk before giving up.") var retries: Int = 10
    @Option(help: "The file's media type, sent as filetype metadata.") var filetype: String?
    @Flag(help: "No progress output.") var quiet = false

    func run() async throws {
        let environment = ProcessInfo.processInfo.environment
        var server = self.server ?? environment["KEEL_SERVER"] ?? "http://127.0.0.1:8080"
        while server.hasSuffix("/") { server.removeLast() }
        guard (1_024...1_073_741_824).contains(self.chunkSize) else { throw ValidationError("--chunk-size must be from 1 KiB to 1 GiB.") }
        let path = URL(fileURLWithPath: self.file).standardizedFileURL.path
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: path), let size = (attributes[.size] as? NSNumber)?.int64Value else {
            throw ValidationError("Cannot read \(self.file).")
        }
        let modified = (attributes[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0
        let home = environment["HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? NSHomeDirectory()
        let store = UploadStateFile(path: self.stateFile ?? (home + "/.keel/uploads.json"))
        let fingerprint = "\(server) \(path) \(size) \(Int64(modified * 1000))"

        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: .init(timeout: .init(connect: .seconds(10))))
        do {
            let uploader = Uploader(
                client: client, server: server, path: path, size: size, chunkSize: self.chunkSize, retries: self.retries,
                progress: Progress(total: size, quiet: self.quiet))
            let remembered = store.entry(fingerprint)
            let token: String
            if let known = self.token ?? environment["KEEL_TOKEN"] ?? remembered?.token {
                token = known
            } else {
                token = try await uploader.createSession()
            }
            var location = remembered?.token == token ? remembered?.location : nil
            var offset: Int64 = 0
            if let known = location {
                switch try await uploader.offset(known, token: token) {
                case .some(let stored):
                    offset = stored
                    if !self.quiet { FileHandle.standardError.write(Data("resuming \(self.file) at \(Progress.bytes(stored)) of \(Progress.bytes(size))\n".utf8)) }
                case .none:
                    location = nil
                }
            }
            if location == nil {
                let created = try await uploader.create(token: token, filename: URL(fileURLWithPath: path).lastPathComponent, filetype: self.filetype)
                location = created
                offset = 0
            }
            guard let location else { throw KeelError(.internalError, "No upload location.") }
            try store.remember(fingerprint, UploadStateFile.Entry(location: location, token: token))
            let started = ContinuousClock.now
            try await uploader.send(location, token: token, from: offset)
            let seconds = max(0.001, (ContinuousClock.now - started).timeInterval)
            let localDigest = try uploader.digest()
            let remoteDigest = try await uploader.storedDigest(location, token: token)
            guard remoteDigest == localDigest else {
                throw KeelError(
                    .checksumMismatch, "The stored file's sha256 \(remoteDigest ?? "none") differs from the local \(localDigest).",
                    hint: "Upload it again; report this with the upload URL if it repeats.")
            }
            try store.forget(fingerprint)
            if !self.quiet {
                let rate = Double(size - offset) / 1_048_576 / seconds
                FileHandle.standardError.write(
                    Data("uploaded \(self.file) (\(Progress.bytes(size))) to \(server)\(location) in \(String(format: "%.1f", seconds)) s, \(String(format: "%.1f", rate)) MiB/s, sha256 \(localDigest) verified\n".utf8))
            }
            print(server + location)
            try await client.shutdown()
        } catch {
            try? await client.shutdown()
            let keelError =
                error as? KeelError
                ?? KeelError(.storeUnavailable, "Cannot talk to \(server): \(error).", hint: "Check --server; run the same command again to resume.")
            var text = "error: \(keelError.message)\n"
            if let hint = keelError.hint { text += "hint: \(hint)\n" }
            FileHandle.standardError.write(Data(text.utf8))
            throw ExitCode(1)
        }
    }
}

/// The client side of tus, one chunk in memory at a time.
struct Uploader: Sendable {
    let client: HTTPClient
    let server: String
    let path: String
    let size: Int64
    let chunkSize: Int
    let retries: Int
    let progress: Progress

    struct Answer: Sendable {
        var status: Int
        var headers: HTTPHeaders
        var body: String
        var json: [String: JSONValue] { (try? JSONValue.parse(Array(self.body.utf8)))?.objectValue ?? [:] }
        var error: KeelError {
            let error = self.json["error"]?.objectValue
            return KeelError(
                .badRequest, error?["message"]?.stringValue ?? "The server answered \(self.status).", hint: error?["hint"]?.stringValue)
        }
    }

    func request(_ method: HTTPMethod, _ path: String, token: String?, headers: [(String, String)] = [], body: ByteBuffer? = nil) async throws -> Answer {
        var request = HTTPClientRequest(url: path.hasPrefix("http") ? path : self.server + path)
        request.method = method
        if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let body { request.body = .bytes(body) }
        let response = try await self.client.execute(request, timeout: .seconds(300))
        let collected = try await response.body.collect(upTo: 1 << 20)
        return Answer(status: Int(response.status.code), headers: response.headers, body: String(buffer: collected))
    }

    func createSession() async throws -> String {
        let answer = try await self.request(.POST, "/api/session", token: nil)
        guard answer.status == 201, let token = answer.json["token"]?.stringValue else { throw answer.error }
        return token
    }

    func create(token: String, filename: String, filetype: String?) async throws -> String {
        var metadata = "filename " + Data(filename.utf8).base64EncodedString()
        if let filetype { metadata += ",filetype " + Data(filetype.utf8).base64EncodedString() }
        let answer = try await self.request(
            .POST, "/api/uploads", token: token,
            headers: [("Tus-Resumable", "1.0.0"), ("Upload-Length", String(self.size)), ("Upload-Metadata", metadata)])
        guard answer.status == 201, let location = answer.headers.first(name: "Location") else { throw answer.error }
        return location.hasPrefix(self.server) ? String(location.dropFirst(self.server.count)) : location
    }

    /// The stored offset, or nil when the upload is gone (404, 410).
    func offset(_ location: String, token: String) async throws -> Int64? {
        let answer = try await self.request(.HEAD, location, token: token, headers: [("Tus-Resumable", "1.0.0")])
        if answer.status == 404 || answer.status == 410 { return nil }
        guard answer.status == 200, let offset = answer.headers.first(name: "Upload-Offset").flatMap({ Int64($0) }) else { throw answer.error }
        return offset
    }

    /// Sends every chunk from `from`, asking HEAD for the offset after any failure.
    func send(_ location: String, token: String, from start: Int64) async throws {
        let file = try FileHandle(forReadingFrom: URL(fileURLWithPath: self.path))
        defer { try? file.close() }
        var offset = start
        var failures = 0
        self.progress.update(offset)
        while offset < self.size {
            try file.seek(toOffset: UInt64(offset))
            let chunk = try file.read(upToCount: Int(min(Int64(self.chunkSize), self.size - offset))) ?? Data()
            let digest = Data(SHA256.hash(data: chunk)).base64EncodedString()
            var answer: Answer?
            var failure: String
            do {
                answer = try await self.request(
                    .PATCH, location, token: token,
                    headers: [
                        ("Tus-Resumable", "1.0.0"), ("Upload-Offset", String(offset)), ("Content-Type", "application/offset+octet-stream"),
                        ("Upload-Checksum", "sha256 \(digest)"),
                    ],
                    body: ByteBuffer(bytes: chunk))
                if answer?.status == 204, let next = answer?.headers.first(name: "Upload-Offset").flatMap({ Int64($0) }) {
                    offset = next
                    failures = 0
                    self.progress.update(offset)
                    continue
                }
                failure = "\(answer!.status) \(answer!.error.message)"
                if let status = answer?.status, [400, 401, 403, 404, 410, 413, 415].contains(status) { throw answer!.error }
            } catch let error as KeelError {
                throw error
            } catch {
                failure = "\(error)"
            }
            failures += 1
            guard failures <= self.retries else {
                throw KeelError(.storeUnavailable, "Giving up after \(self.retries) failed attempts at offset \(offset): \(failure).", hint: "Run the same command again to resume.")
            }
            self.progress.note("retrying at \(Progress.bytes(offset)) (\(failure))")
            let wait = answer?.headers.first(name: "Retry-After").flatMap(Double.init) ?? min(10, 0.5 * Double(1 << min(failures - 1, 5)))
            try await Task.sleep(for: .milliseconds(Int(wait * 1000)))
            if let stored = try? await self.offset(location, token: token) {
                offset = stored
            } else if answer?.status == 404 || answer?.status == 410 {
                throw KeelError(.notFound, "The upload is gone from the server.", hint: "Run the command again to start a new upload.")
            }
        }
        self.progress.finish()
    }

    func digest() throws -> String {
        let file = try FileHandle(forReadingFrom: URL(fileURLWithPath: self.path))
        defer { try? file.close() }
        var hasher = SHA256()
        while let data = try file.read(upToCount: 4 * 1_048_576), !data.isEmpty { hasher.update(data: data) }
        return hasher.finalize().map { String(format: "%02x", $0) }.joined()
    }

    func storedDigest(_ location: String, token: String) async throws -> String? {
        let answer = try await self.request(.GET, location + "/info", token: token)
        guard answer.status == 200 else { throw answer.error }
        return answer.json["sha256"]?.stringValue
    }
}

/// The progress line on standard error: bytes, rate, ETA. On a terminal it
/// redraws one line; otherwise it prints a line every 5 %.
final class Progress: Sendable {
    let total: Int64
    let quiet: Bool
    let interactive = isatty(2) == 1
    let started = ContinuousClock.now
    private let state = Mutex<(first: Int64?, lastPercent: Int)>((nil, -1))

    init(total: Int64, quiet: Bool) {
        self.total = total
        self.quiet = quiet
    }

    func update(_ done: Int64) {
        guard !self.quiet else { return }
        let (first, shouldPrint) = self.state.withLock { state -> (Int64, Bool) in
            if state.first == nil { state.first = done }
            let percent = self.total == 0 ? 100 : Int(done * 100 / self.total)
            let due = self.interactive || percent / 5 != state.lastPercent / 5
            if due { state.lastPercent = percent }
            return (state.first!, due)
        }
        guard shouldPrint else { return }
        let seconds = max(0.001, (ContinuousClock.now - self.started).timeInterval)
        let rate = Double(done - first) / seconds
        let eta = rate > 0 ? Double(self.total - done) / rate : 0
        let percent = self.total == 0 ? 100.0 : Double(done) * 100 / Double(self.total)
        let width = 30
        let filled = Int(percent / 100 * Double(width))
        let bar = String(repeating: "=", count: filled) + (filled < width ? ">" : "") + String(repeating: " ", count: max(0, width - filled - 1))
        let line = String(format: "[%@] %5.1f%%  %@ / %@  %.1f MiB/s  ETA %@", bar, percent, Self.bytes(done), Self.bytes(self.total), rate / 1_048_576, Self.duration(eta))
        FileHandle.standardError.write(Data((self.interactive ? "\r\u{1B}[K" + line : line + "\n").utf8))
    }

    func note(_ text: String) {
        guard !self.quiet else { return }
        FileHandle.standardError.write(Data(((self.interactive ? "\n" : "") + text + "\n").utf8))
    }

    func finish() {
        if !self.quiet && self.interactive { FileHandle.standardError.write(Data("\n".utf8)) }
    }

    static func bytes(_ count: Int64) -> String {
        let value = Double(count)
        if value >= 1_073_741_824 { return String(format: "%.2f GiB", value / 1_073_741_824) }
        if value >= 1_048_576 { return String(format: "%.1f MiB", value / 1_048_576) }
        if value >= 1024 { return String(format: "%.1f KiB", value / 1024) }
        return "\(count) B"
    }

    static func duration(_ seconds: Double) -> String {
        let whole = Int(seconds.rounded())
        return whole >= 60 ? "\(whole / 60)m\(String(format: "%02d", whole % 60))s" : "\(whole)s"
    }
}

/// Interrupted uploads, remembered between runs: fingerprint → upload URL and token.
struct UploadStateFile: Sendable {
    struct Entry: Sendable, Equatable {
        var location: String
        var token: String
    }

    let path: String

    func entries() -> [String: Entry] {
        guard let data = FileManager.default.contents(atPath: self.path), let parsed = try? JSONValue.parse(Array(data)), let object = parsed.objectValue else { return [:] }
        var entries: [String: Entry] = [:]
        for (key, value) in object {
            if let location = value.objectValue?["location"]?.stringValue, let token = value.objectValue?["token"]?.stringValue {
                entries[key] = Entry(location: location, token: token)
            }
        }
        return entries
    }

    func entry(_ fingerprint: String) -> Entry? { self.entries()[fingerprint] }

    func remember(_ fingerprint: String, _ entry: Entry) throws {
        var entries = self.entries()
        entries[fingerprint] = entry
        try self.write(entries)
    }

    func forget(_ fingerprint: String) throws {
        var entries = self.entries()
        guard entries.removeValue(forKey: fingerprint) != nil else { return }
        try self.write(entries)
    }

    /// Written to a temporary file and renamed, so a crash never leaves half a file. It holds tokens: owner-only.
    private func write(_ entries: [String: Entry]) throws {
        let object = JSONValue.object(entries.mapValues { .object(["location": .string($0.location), "token": .string($0.token)]) })
        let directory = URL(fileURLWithPath: self.path).deletingLastPathComponent()
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let temporary = self.path + ".tmp-\(getpid())"
        guard FileManager.default.createFile(atPath: temporary, contents: Data(object.serialized().utf8), attributes: [.posixPermissions: 0o600]) else {
            throw KeelError(.internalError, "Cannot write \(temporary).")
        }
        guard rename(temporary, self.path) == 0 else { throw KeelError(.internalError, "Cannot replace \(self.path).") }
    }
}
