import Foundation
import KeelCore
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// schemathesis fuzzes a live `keel serve` from its own `/openapi.json`:
/// examples, boundary cases, random inputs and stateful sequences along the
/// document's links, checked for server errors and for answers that differ
/// from the document (status, content type, headers, body schema). Zero
/// failures. CI always runs it (`scripts/test` installs schemathesis).
@Suite("API contract fuzzed", .timeLimit(.minutes(10)))
struct ContractFuzzTests {
    static var schemathesis: String? {
        guard let python = ThirdPartyClientTests.python else { return nil }
        let st = URL(fileURLWithPath: python).deletingLastPathComponent().appendingPathComponent("st").path
        return FileManager.default.isExecutableFile(atPath: st) ? st : nil
    }

    @Test("CI has schemathesis")
    func availableInCI() {
        if ProcessInfo.processInfo.environment["CI"] != nil {
            #expect(Self.schemathesis != nil, "scripts/test installs schemathesis from Tests/Clients/requirements.txt")
        }
    }

    @Test("schemathesis finds no server error and no answer that departs from the OpenAPI document", .enabled(if: schemathesis != nil))
    func fuzz() async throws {
        let fixture = try await StoreFixture.make(.sqlite)
        // With a model (the fake upstream), as a deployment that chats and
        // analyses runs: a request naming a chain is then answered, not 503.
        let fake = try await FakeOpenAIUpstream.start()
        defer { fake.stop() }
        let models = fixture.directory.appendingPathComponent("models.json")
        try #"{"providers": {"fake": {"kind": "openai", "base_url": "\#(fake.baseURL)"}}, "models": {"ok": {"provider": "fake", "model": "ok"}}}"#
            .write(to: models, atomically: true, encoding: .utf8)
        let server = try await KeelProcess.serve(
            store: fixture.location, arguments: ["--workers", "2", "--log-level", "error", "--models", models.path])
        defer { server.signal(SIGKILL) }
        let token = try await MultiProcessJobTests.session(on: server)
        let hooks = ThirdPartyClientTests.clientsDirectory.appendingPathComponent("contract")
        let reports = fixture.directory.appendingPathComponent("schemathesis")
        let finished = try await ChildProcess.run(
            try #require(Self.schemathesis),
            [
                "run", server.baseURL + "/openapi.json", "-H", "Authorization: Bearer \(token)",
                "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance",
                // Ending the session would end the token every later request uses.
                "--exclude-operation-id", "deleteSession",
                // One worker: with two threads, CPython 3.11's ast.parse (which
                // Hypothesis calls to describe its strategies) now and then fails
                // with "SystemError: AST constructor recursion depth mismatch",
                // reported as a schemathesis runtime error, not a Keel failure.
                "--max-examples", "30", "--seed", "20261203", "--workers", "1", "--no-color",
                "--report", "junit", "--report-dir", reports.path,
            ],
            environment: ["SCHEMATHESIS_HOOKS": "keel_schemathesis_hooks", "PYTHONPATH": hooks.path],
            // Its example cache (.schemathesis/) goes to the scratch directory, not the checkout.
            workingDirectory: fixture.directory
        )
        let output = finished.output + finished.errors
        #expect(finished.status == 0, "\(output.suffix(12000))\n\(server.logTail())")
        #expect(output.contains("Stateful"), "the stateful phase did not run:\n\(output.suffix(2000))")
    }
}
