import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
private let systemWrite = Glibc.write
#elseif canImport(Darwin)
import Darwin
private let systemWrite = Darwin.write
#endif

/// Upload bytes as files under one directory: `ROOT/<upload id>/<random>.blob`.
/// Several processes on one machine (or several machines on a shared volume)
/// may use the same directory: every writer makes its own file, and only the
/// upload store decides which files count.
///
/// Durability: `finish()` calls `fsync` on the file and, for a new file, on its
/// directory, before the caller commits the segment. File I/O runs on
/// Dispatch's global queue, never on Swift's cooperative threads.
public struct DirectoryBlobStore: BlobStore {
    public let kind = "directory"
    public let root: String

    public init(root: String) throws {
        self.root = URL(fileURLWithPath: root).standardizedFileURL.path
        do {
            try FileManager.default.createDirectory(atPath: self.root, withIntermediateDirectories: true)
        } catch {
            throw KeelError.invalidConfiguration("Cannot create the upload directory \(self.root): \(error)", hint: "Check that it is writable by this user.")
        }
    }

    public func makeWriter(uploadID: String) async throws -> any BlobWriter {
        try Self.checkName(uploadID)
        let key = uploadID + "/" + Identifiers.random(byteCount: 12)
        let directory = self.root + "/" + uploadID
        let path = self.root + "/" + key + ".blob"
        let fd = try await FileIO.run {
            if mkdir(directory, 0o700) != 0 && errno != EEXIST { throw FileIO.error("mkdir", directory) }
            let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            guard fd >= 0 else { throw FileIO.error("open", path) }
            return fd
        }
        return DirectoryBlobWriter(key: key, path: path, directory: directory, fd: fd)
    }

    public func read(key: String, offset: Int64, count: Int) async throws -> [UInt8] {
        let path = try self.path(of: key)
        return try await FileIO.run {
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            if fd < 0 && errno == ENOENT { return [] }
            guard fd >= 0 else { throw FileIO.error("open", path) }
            defer { close(fd) }
            var bytes = [UInt8](repeating: 0, count: count)
            var filled = 0
            try bytes.withUnsafeMutableBytes { buffer in
                while filled < count {
                    let n = pread(fd, buffer.baseAddress! + filled, count - filled, off_t(offset) + off_t(filled))
                    if n < 0 {
                        if errno == EINTR { continue }
                        throw FileIO.error("read", path)
                    }
                    if n == 0 { break }
                    filled += n
                }
            }
            bytes.removeLast(count - filled)
            return bytes
        }
    }

    public func deleteBlobs(uploadID: String, keeping: Set<String>) async throws {
        try Self.checkName(uploadID)
        let directory = self.root + "/" + uploadID
        try await FileIO.run {
            let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
            var kept = 0
            for name in names {
                let key = uploadID + "/" + (name.hasSuffix(".blob") ? String(name.dropLast(5)) : name)
                if keeping.contains(key) {
                    kept += 1
                } else {
                    unlink(directory + "/" + name)
                }
            }
            if kept == 0 { rmdir(directory) }
        }
    }

    private func path(of key: String) throws -> String {
        let parts = key.split(separator: "/")
        guard parts.count == 2 else { throw KeelError(.internalError, "Malformed blob key '\(key)'.") }
        try Self.checkName(String(parts[0]))
        try Self.checkName(String(parts[1]))
        return self.root + "/" + key + ".blob"
    }

    /// Keys and ids become path components: base64url only, never `..` or `/`.
    private static func checkName(_ name: String) throws {
        guard !name.isEmpty, name.utf8.count <= 128, Identifiers.isBase64URL(Substring(name), length: name.utf8.count) else {
            throw KeelError(.internalError, "'\(name)' cannot name a blob.")
        }
    }
}

/// One new file being written.
final class DirectoryBlobWriter: BlobWriter {
    let key: String
    let path: String
    let directory: String
    /// The open descriptor; -1 once finished or discarded.
    private let fd: Mutex<Int32>

    init(key: String, path: String, directory: String, fd: Int32) {
        self.key = key
        self.path = path
        self.directory = directory
        self.fd = Mutex(fd)
    }

    deinit {
        let fd = self.fd.withLock { $0 }
        if fd >= 0 { close(fd) }
    }

    func write(_ bytes: [UInt8]) async throws {
        let fd = self.fd.withLock { $0 }
        guard fd >= 0 else { throw KeelError(.internalError, "The blob \(self.key) is closed.") }
        let path = self.path
        try await FileIO.run {
            try bytes.withUnsafeBytes { buffer in
                var written = 0
                while written < buffer.count {
                    let n = systemWrite(fd, buffer.baseAddress! + written, buffer.count - written)
                    if n < 0 {
                        if errno == EINTR { continue }
                        throw FileIO.error("write", path)
                    }
                    written += n
                }
            }
        }
    }

    func finish() async throws {
        let fd = self.fd.withLock { fd in
            defer { fd = -1 }
            return fd
        }
        guard fd >= 0 else { throw KeelError(.internalError, "The blob \(self.key) is closed.") }
        let (path, directory) = (self.path, self.directory)
        try await FileIO.run {
            defer { close(fd) }
            guard fsync(fd) == 0 else { throw FileIO.error("fsync", path) }
            // The new file's directory entry must be durable too.
            let directoryFD = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            guard directoryFD >= 0 else { throw FileIO.error("open", directory) }
            defer { close(directoryFD) }
            guard fsync(directoryFD) == 0 else { throw FileIO.error("fsync", directory) }
        }
    }

    func discard() async {
        let fd = self.fd.withLock { fd in
            defer { fd = -1 }
            return fd
        }
        let path = self.path
        try? await FileIO.run {
            if fd >= 0 { close(fd) }
            unlink(path)
        }
    }
}

/// Blocking file calls, off the cooperative thread pool.
enum FileIO {
    private static let queue = DispatchQueue(label: "keel.file-io", attributes: .concurrent)

    static func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            self.queue.async {
                continuation.resume(with: Result { try body() })
            }
        }
    }

    static func error(_ call: String, _ path: String) -> KeelError {
        let code = errno
        return KeelError(
            .storeUnavailable,
            "Upload storage failed.",
            hint: "Check the upload directory's disk space and permissions.",
            detail: "\(call) \(path): \(String(cString: strerror(code)))"
        )
    }
}
