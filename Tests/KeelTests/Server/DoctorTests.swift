import Foundation
import KeelCore
import KeelServer
import KeelSQLite
import Testing

@Suite("keel doctor")
struct DoctorTests {
    static func levels(_ findings: [ConfigurationDoctor.Finding]) -> [String: ConfigurationDoctor.Finding.Level] {
        Dictionary(findings.map { ($0.check, $0.level) }, uniquingKeysWith: { first, second in first == .fail ? first : second })
    }

    @Test("heartbeat against the balancer's idle timeout, drain against the grace period")
    func timeouts() {
        var configuration = KeelConfiguration()
        configuration.streams.heartbeatInterval = .seconds(15)
        let good = ConfigurationDoctor(configuration: configuration, balancerIdleTimeout: .seconds(60), gracePeriod: .seconds(45)).checkSettings()
        #expect(Self.levels(good)["heartbeat"] == .pass)
        #expect(Self.levels(good)["drain"] == .pass)

        let cut = ConfigurationDoctor(configuration: configuration, balancerIdleTimeout: .seconds(10), gracePeriod: .seconds(30)).checkSettings()
        #expect(Self.levels(cut)["heartbeat"] == .fail)
        // 5 s delay + 30 s timeout + 5 s of lease release do not fit Kubernetes' default 30 s.
        #expect(Self.levels(cut)["drain"] == .fail)
        #expect(cut.first { $0.check == "drain" }?.message.contains("40s") == true)

        let thin = ConfigurationDoctor(configuration: configuration, balancerIdleTimeout: .seconds(20)).checkSettings()
        #expect(Self.levels(thin)["heartbeat"] == .warn)
        #expect(Self.levels(thin)["drain"] == .info)
    }

    @Test("PDF support: Poppler found, or a warning naming poppler-utils")
    func pdfSupport() throws {
        var configuration = KeelConfiguration()
        configuration.documents.popplerPath = try TestEnvironment.directory("no-poppler").path
        let missing = ConfigurationDoctor(configuration: configuration).checkSettings().first { $0.check == "pdf" }
        #expect(missing?.level == .warn && missing?.message.contains("poppler-utils") == true)
        if DocumentTools.popplerAvailable {
            configuration.documents.popplerPath = ""
            #expect(Self.levels(ConfigurationDoctor(configuration: configuration).checkSettings())["pdf"] == .pass)
        }
    }

    @Test("CORS, cookies and upload placement findings")
    func settings() {
        var configuration = KeelConfiguration()
        configuration.cors.allowedOrigins = ["http://app.example.com"]
        configuration.cookieSecure = .never
        configuration.store = .postgres(url: "postgres://keel@db/keel")
        configuration.uploads.blobs = .directory("/srv/uploads")
        let findings = ConfigurationDoctor(configuration: configuration).checkSettings()
        #expect(findings.contains { $0.check == "cors" && $0.level == .warn && $0.message.contains("plain http") })
        #expect(findings.contains { $0.check == "cookies" && $0.level == .warn })
        #expect(findings.contains { $0.check == "uploads" && $0.level == .warn && $0.message.contains("same volume") })
    }

    @Test("the store answers, migrations are current, the secret is shared", arguments: Driver.available)
    func store(driver: Driver) async throws {
        let fixture = try await StoreFixture.make(driver)
        try await fixture.withStore { store in
            var configuration = KeelConfiguration()
            configuration.store = fixture.location
            let doctor = ConfigurationDoctor(configuration: configuration)
            let findings = await doctor.checkStore(store)
            #expect(Self.levels(findings) == ["store": .pass, "migrations": .pass, "secret": .pass], "\(findings)")
        }
        // A store no keel has migrated yet: the doctor says it will be.
        let fresh = try SQLiteStore(path: fixture.directory.appendingPathComponent("fresh.sqlite").path)
        let unmigrated = await ConfigurationDoctor(configuration: KeelConfiguration()).checkStore(fresh)
        #expect(Self.levels(unmigrated)["migrations"] == .warn)
        try await fresh.close()
    }
}
