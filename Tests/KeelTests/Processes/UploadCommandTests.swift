import Foundation
import KeelCore
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `keel upload` against a real `keel serve`.
@Suite("keel upload", .timeLimit(.minutes(3)))
struct UploadCommandTests {
    @Test("uploads with per-chunk checksums and verifies the stored sha256; resumes an interrupted upload from the server's offset")
    func uploadAndResume() async throws {
        let fixture = try await StoreFixture.make(.sqlite)
        let server = try await KeelProcess.serve(store: fixture.location)
        defer { server.signal(SIGKILL) }
        let content = try await randomBytes(megabytes: 12)
        let file = fixture.directory.appendingPathComponent("report.bin")
        try Data(content).write(to: file)
        let state = fixture.directory.appendingPathComponent("state/uploads.json").path

        let first = try await KeelProcess.run(["upload", file.path, "--server", server.baseURL, "--state-file", state, "--chunk-size", "2097152"])
        #expect(first.status == 0, "\(first.output)")
        let digest = try await sha256Hex(content)
        #expect(first.output.contains("sha256 \(digest) verified"), "\(first.output)")

        // An upload someone began and left at 5 MiB, remembered in the state file as keel upload would.
        let token = try await MultiProcessJobTests.session(on: server)
        let location = try await MultiProcessUploadTests.create(server, token: token, length: content.count)
        let partial = try await MultiProcessUploadTests.patch(server, location, token: token, offset: 0, bytes: content[0..<(5 * 1_048_576)])
        #expect(partial.status == 204)
        let attributes = try FileManager.default.attributesOfItem(atPath: file.path)
        let modified = Int64(((attributes[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0) * 1000)
        let fingerprint = "\(server.baseURL) \(file.standardizedFileURL.path) \(content.count) \(modified)"
        let remembered = JSONValue.object([fingerprint: .object(["location": .string(location), "token": .string(token)])])
        try FileManager.default.createDirectory(atPath: fixture.directory.appendingPathComponent("state").path, withIntermediateDirectories: true)
        try Data(remembered.serialized().utf8).write(to: URL(fileURLWithPath: state))

        let resumed = try await KeelProcess.run(["upload", file.path, "--server", server.baseURL, "--state-file", state])
        #expect(resumed.status == 0, "\(resumed.output)")
        #expect(resumed.output.contains("resuming \(file.path) at 5.0 MiB of 12.0 MiB"), "\(resumed.output)")
        #expect(resumed.output.contains(server.baseURL + location))
        try await MultiProcessUploadTests.verify(server, location, token: token, content: content)
        // Finished uploads are forgotten.
        let left = try JSONValue.parse(Array(try Data(contentsOf: URL(fileURLWithPath: state))))
        #expect(left == .object([:]))

        // A server that is not there: a clear error and exit 1.
        let unreachable = try await KeelProcess.run(["upload", file.path, "--server", "http://127.0.0.1:1", "--state-file", state, "--quiet"])
        #expect(unreachable.status == 1)
        #expect(unreachable.output.contains("error: Cannot talk to http://127.0.0.1:1"))
    }
}
