import AsyncHTTPClient
import Foundation
import KeelCore
import NIOCore
import NIOHTTP1
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A real `keel` process, started from the binary this package builds.
final class KeelProcess: Sendable {
    let port: Int
    let logPath: String
    let pid: Int32
    private let exitState = Mutex<(status: Int32?, waiters: [CheckedContinuation<Int32, Never>])>((nil, []))

    var baseURL: String { "http://127.0.0.1:\(self.port)" }

    static var binary: URL {
        if let path = ProcessInfo.processInfo.environment["KEEL_BINARY"] { return URL(fileURLWithPath: path) }
        let besideTests = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("keel")
        if FileManager.default.isExecutableFile(atPath: besideTests.path) { return besideTests }
        // swift test runs from the package root: fall back to the default build folder.
        return URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent(".build/debug/keel")
    }

    private init(port: Int, logPath: String, process: Process) {
        self.port = port
        self.logPath = logPath
        self.pid = process.processIdentifier
    }

    /// Runs `keel <arguments>` to completion and returns its exit status and output.
    static func run(_ arguments: [String], environment: [String: String] = [:]) async throws -> (status: Int32, output: String) {
        let directory = try TestEnvironment.directory("run")
        let logPath = directory.appendingPathComponent("output.log").path
        let process = try Self.launch(arguments, environment: environment, logPath: logPath, directory: directory)
        let status = await process.waitForExit()
        return (status, (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "")
    }

    /// Starts `keel serve` on `store` and waits until it answers `/health`.
    static func serve(
        store: StoreLocation,
        port: Int? = nil,
        arguments: [String] = [],
        environment: [String: String] = [:],
        fileLimit: Int? = nil
    ) async throws -> KeelProcess {
        let port = try port ?? freePort()
        let directory = try TestEnvironment.directory("serve")
        let storeArgument = Self.argument(for: store)
        let process = try Self.launch(
            ["serve", "--port", String(port), "--store", storeArgument, "--drain-delay", "0s", "--instance-id", "proc-\(port)"]
                + Self.testDefaults + arguments,
            environment: environment,
            logPath: directory.appendingPathComponent("keel.log").path,
            directory: directory,
            fileLimit: fileLimit
        )
        try await process.waitUntilHealthy()
        return process
    }

    /// What every test server runs with unless its arguments say otherwise
    /// (a later flag wins): the demo job type, and no quotas.
    static let testDefaults = ["--demo-jobs", "true", "--session-create-rate", "0", "--session-max-active-jobs", "0"]

    /// `store` as `--store` takes it.
    static func argument(for store: StoreLocation) -> String {
        switch store {
        case .sqlite(let path): "sqlite:\(path)"
        case .postgres(let url): url
        }
    }

    /// Starts `keel worker` on `store` (it has no HTTP port to wait for).
    static func worker(store: StoreLocation, arguments: [String] = []) throws -> KeelProcess {
        let directory = try TestEnvironment.directory("worker")
        let storeArgument = Self.argument(for: store)
        return try Self.launch(
            ["worker", "--store", storeArgument, "--demo-jobs", "true"] + arguments, environment: [:],
            logPath: directory.appendingPathComponent("keel.log").path, directory: directory
        )
    }

    /// `fileLimit`: the process runs under `ulimit -n` (soft and hard), so it cannot raise it.
    private static func launch(
        _ arguments: [String], environment: [String: String], logPath: String, directory: URL, fileLimit: Int? = nil
    ) throws -> KeelProcess {
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        let process = Process()
        if let fileLimit {
            process.executableURL = URL(fileURLWithPath: "/bin/sh")
            process.arguments = ["-c", "ulimit -n \(fileLimit) && exec \"$0\" \"$@\"", Self.binary.path] + arguments
        } else {
            process.executableURL = Self.binary
            process.arguments = arguments
        }
        process.currentDirectoryURL = directory
        var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("KEEL_") }
        env["KEEL_LOG_LEVEL"] = "info"
        env.merge(environment) { $1 }
        process.environment = env
        process.standardOutput = log
        process.standardError = log
        let port = arguments.firstIndex(of: "--port").map { Int(arguments[$0 + 1]) ?? 0 } ?? 0
        let keel = Box()
        process.terminationHandler = { finished in
            keel.value?.finish(finished.terminationStatus)
        }
        try process.run()
        let result = KeelProcess(port: port, logPath: logPath, process: process)
        keel.value = result
        if !process.isRunning { result.finish(process.terminationStatus) }
        return result
    }

    private func finish(_ status: Int32) {
        let waiters = self.exitState.withLock { state in
            if state.status == nil { state.status = status }
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume(returning: status) }
    }

    var hasExited: Bool { self.exitState.withLock { $0.status != nil } }

    func waitForExit() async -> Int32 {
        await withCheckedContinuation { continuation in
            let status = self.exitState.withLock { state -> Int32? in
                if state.status == nil { state.waiters.append(continuation) }
                return state.status
            }
            if let status { continuation.resume(returning: status) }
        }
    }

    func signal(_ signal: Int32) {
        kill(self.pid, signal)
    }

    /// Stops the process (SIGTERM) and waits for it.
    @discardableResult
    func stop() async -> Int32 {
        self.signal(SIGTERM)
        return await self.waitForExit()
    }

    var log: String { (try? String(contentsOfFile: self.logPath, encoding: .utf8)) ?? "" }

    func waitUntilHealthy(timeout: Duration = .seconds(30)) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if self.hasExited {
                Issue.record("keel exited before becoming healthy:\n\(self.log)")
                throw KeelError(.internalError, "keel exited early")
            }
            if let response = try? await HTTP.send(.GET, self.baseURL + "/health", timeout: .seconds(2)), response.status == 200 {
                return
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        Issue.record("keel did not become healthy in \(timeout):\n\(self.log)")
        throw KeelError(.internalError, "keel not healthy")
    }
}

/// Lets the termination handler reach the `KeelProcess` created after launch.
private final class Box: Sendable {
    private let stored = Mutex<KeelProcess?>(nil)
    var value: KeelProcess? {
        get { self.stored.withLock { $0 } }
        set { self.stored.withLock { $0 = newValue } }
    }
}

/// A TCP port nothing listens on right now.
func freePort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) { pointer in
        pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
    }
    guard bound else { throw KeelError(.internalError, "no free port") }
    return Int(UInt16(bigEndian: address.sin_port))
}

/// A small HTTP client over AsyncHTTPClient for talking to real processes.
enum HTTP {
    struct Result: Sendable {
        var status: Int
        var headers: HTTPHeaders
        var body: String

        var json: [String: JSONValue] { (try? JSONValue.parse(Array(self.body.utf8)))?.objectValue ?? [:] }
        var errorCode: String? { self.json["error"]?.objectValue?["code"]?.stringValue }
    }

    static func send(
        _ method: HTTPMethod,
        _ url: String,
        token: String? = nil,
        body: String? = nil,
        headers: [(String, String)] = [],
        timeout: Duration = .seconds(30)
    ) async throws -> Result {
        var request = HTTPClientRequest(url: url)
        request.method = method
        if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(string: body))
        }
        return try await self.execute(request, timeout: timeout)
    }

    static func execute(_ request: HTTPClientRequest, timeout: Duration = .seconds(30)) async throws -> Result {
        let response = try await HTTPClient.shared.execute(request, timeout: .init(timeout))
        let body = try await response.body.collect(upTo: 16 * 1024 * 1024)
        return Result(status: Int(response.status.code), headers: response.headers, body: String(buffer: body))
    }
}

extension TimeAmount {
    init(_ duration: Duration) {
        self = .nanoseconds(duration.components.seconds * 1_000_000_000 + duration.components.attoseconds / 1_000_000_000)
    }
}

extension KeelProcess {
    /// The last lines of the process's log, for a failure message.
    func logTail(lines: Int = 30) -> String {
        let text = (try? String(contentsOfFile: self.logPath, encoding: .utf8)) ?? ""
        return text.split(separator: "\n", omittingEmptySubsequences: false).suffix(lines).joined(separator: "\n")
    }
}

/// Whether a TCP connection to 127.0.0.1:`port` is accepted (false once the
/// listener has closed: the kernel refuses it).
func canConnect(port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let result = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    return result == 0
}
