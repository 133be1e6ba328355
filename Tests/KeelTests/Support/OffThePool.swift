import Crypto
import Dispatch
import Foundation

#if canImport(Glibc)
import Glibc
#endif

// Swift's cooperative pool has one thread per core (two on this machine and
// in CI), and every test of the run shares it. Work that blocks a thread for
// seconds (waiting for a child process, generating or hashing hundreds of
// megabytes in a debug build) stalls every other test meanwhile: a test that
// must signal a server before its job ends then signals too late. Such work
// runs on a Dispatch thread instead, and the test awaits it.

/// Runs `work` on a Dispatch thread, outside the cooperative pool.
func offThePool<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        DispatchQueue.global().async { continuation.resume(with: Result { try work() }) }
    }
}

/// `megabytes` MiB of random bytes from the kernel (about 0.7 s for 160 MiB;
/// a Swift loop over a random generator takes 11 s in a debug build).
func randomBytes(megabytes: Int) async throws -> [UInt8] {
    try await offThePool {
        let count = megabytes * 1_048_576
        let source = try FileHandle(forReadingFrom: URL(fileURLWithPath: "/dev/urandom"))
        defer { try? source.close() }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(count)
        while bytes.count < count {
            guard let data = try source.read(upToCount: min(count - bytes.count, 16 * 1_048_576)), !data.isEmpty else {
                throw CocoaError(.fileReadUnknown)
            }
            bytes += data
        }
        return bytes
    }
}

/// The SHA-256 of `bytes` in lowercase hex, computed outside the cooperative pool.
func sha256Hex(_ bytes: [UInt8]) async throws -> String {
    try await offThePool { SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined() }
}

/// A child process run to completion without holding a cooperative thread:
/// its output goes to files, and its exit resumes the waiting test.
enum ChildProcess {
    struct Finished: Sendable {
        let status: Int32
        let output: String
        let errors: String
    }

    /// `environment` is added to this process's own; `workingDirectory` is where it runs.
    static func run(
        _ executable: String, _ arguments: [String], environment: [String: String] = [:], workingDirectory: URL? = nil
    ) async throws -> Finished {
        let directory = try TestEnvironment.directory("child")
        defer { try? FileManager.default.removeItem(at: directory) }
        let outputPath = directory.appendingPathComponent("stdout").path
        let errorsPath = directory.appendingPathComponent("stderr").path
        _ = FileManager.default.createFile(atPath: outputPath, contents: nil)
        _ = FileManager.default.createFile(atPath: errorsPath, contents: nil)
        let output = try FileHandle(forWritingTo: URL(fileURLWithPath: outputPath))
        let errors = try FileHandle(forWritingTo: URL(fileURLWithPath: errorsPath))
        defer {
            try? output.close()
            try? errors.close()
        }
        let status = try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Int32, any Error>) in
            let process = Process()
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = arguments
            if let workingDirectory { process.currentDirectoryURL = workingDirectory }
            if !environment.isEmpty {
                process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
            }
            process.standardOutput = output
            process.standardError = errors
            process.terminationHandler = { continuation.resume(returning: $0.terminationStatus) }
            do {
                try process.run()
            } catch {
                continuation.resume(throwing: error)
            }
        }
        return Finished(
            status: status,
            output: (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "",
            errors: (try? String(contentsOfFile: errorsPath, encoding: .utf8)) ?? "")
    }
}
