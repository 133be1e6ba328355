import Foundation
import KeelCore
import Synchronization
import Testing

/// The contract of `SessionStore`, run unchanged against every driver.
@Suite("SessionStore conformance")
struct SessionStoreConformanceTests {
    static let t0 = Date(timeIntervalSince1970: 1_800_000_000)

    static func session(_ id: String = Identifiers.random(), data: String = "{}", expiresIn: TimeInterval = 3600) -> Session {
        Session(id: id, dataJSON: data, version: 1, createdAt: t0, lastSeenAt: t0, expiresAt: t0.addingTimeInterval(expiresIn))
    }

    @Test("create then read returns the same session", arguments: Driver.available)
    func roundTrip(driver: Driver) async throws {
        try await StoreFixture.make(driver).withStore { store in
            let session = Self.session(data: #"{"a":[1,2,{"b":"ü\n"}]}"#)
            try await store.sessions.createSession(session)
            #expect(try await store.sessions.session(id: session.id) == session)
            #expect(try await store.sessions.session(id: Identifiers.random()) == nil)
        }
    }

    @Test("update applies the transform atomically and bumps the version", arguments: Driver.available)
    func update(driver: Driver) async throws {
        try await StoreFixture.make(driver).withStore { store in
            let session = Self.session()
            try await store.sessions.createSession(session)
            let later = Self.t0.addingTimeInterval(60)
            let updated = try await store.sessions.updateSession(id: session.id, expectedVersion: nil) { current in
                var next = current
                next.dataJSON = #"{"k":1}"#
                next.lastSeenAt = later
                next.expiresAt = later.addingTimeInterval(3600)
                return next
            }
            #expect(updated?.version == 2)
            #expect(updated?.dataJSON == #"{"k":1}"#)
            #expect(try await store.sessions.session(id: session.id) == updated)
            let missing = try await store.sessions.updateSession(id: Identifiers.random(), expectedVersion: nil) { $0 }
            #expect(missing == nil)
        }
    }

    @Test("a stale expected version is refused and changes nothing", arguments: Driver.available)
    func versionConflict(driver: Driver) async throws {
        try await StoreFixture.make(driver).withStore { store in
            let session = Self.session(data: #"{"keep":true}"#)
            try await store.sessions.createSession(session)
            await expectKeelError(.versionConflict) {
                try await store.sessions.updateSession(id: session.id, expectedVersion: 7) { current in
                    var next = current
                    next.dataJSON = #"{"lost":true}"#
                    return next
                }
            }
            #expect(try await store.sessions.session(id: session.id) == session)
            let ok = try await store.sessions.updateSession(id: session.id, expectedVersion: 1) { $0 }
            #expect(ok?.version == 2)
        }
    }

    @Test("a transform that throws leaves the session intact", arguments: Driver.available)
    func throwingTransform(driver: Driver) async throws {
        try await StoreFixture.make(driver).withStore { store in
            let session = Self.session(data: #"{"x":1}"#)
            try await store.sessions.createSession(session)
            await expectKeelError(.sessionDataTooLarge) {
                try await store.sessions.updateSession(id: session.id, expectedVersion: nil) { _ in
                    throw KeelError(.sessionDataTooLarge, "too big")
                }
            }
            #expect(try await store.sessions.session(id: session.id) == session)
        }
    }

    @Test("concurrent updates from many tasks and two store handles lose nothing", arguments: Driver.available)
    func concurrentUpdates(driver: Driver) async throws {
        let fixture = try await StoreFixture.make(driver)
        let session = Self.session()
        try await fixture.withStore { store in try await store.sessions.createSession(session) }
        // Two independent store objects stand in for two processes.
        let first = try fixture.openStore()
        let second = try fixture.openStore()
        try await first.withRunning {
            try await second.withRunning {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for index in 0..<50 {
                        let store = index.isMultiple(of: 2) ? first : second
                        group.addTask {
                            _ = try await store.sessions.updateSession(id: session.id, expectedVersion: nil) { current in
                                var data = try JSONValue.parse(Array(current.dataJSON.utf8)).objectValue ?? [:]
                                data["k\(index)"] = .int(Int64(index))
                                var next = current
                                next.dataJSON = JSONValue.object(data).serialized()
                                return next
                            }
                        }
                    }
                    try await group.waitForAll()
                }
            }
        }
        try await fixture.withStore { store in
            let stored = try #require(try await store.sessions.session(id: session.id))
            let data = try #require(try JSONValue.parse(Array(stored.dataJSON.utf8)).objectValue)
            #expect(data.count == 50)
            #expect(stored.version == 51)
        }
    }

    @Test("concurrent reads of many sessions each get their own, and never a value older than a finished write", arguments: Driver.available)
    func concurrentReads(driver: Driver) async throws {
        try await StoreFixture.make(driver).withStore { store in
            // Many lookups at once (PostgreSQL shares one query between the
            // lookups that wait): each must get its own session, or nil.
            var sessions: [Session] = []
            for index in 0..<40 {
                let session = Self.session(data: #"{"n":\#(index)}"#)
                try await store.sessions.createSession(session)
                sessions.append(session)
            }
            let expected = sessions
            try await withThrowingTaskGroup(of: Void.self) { group in
                for round in 0..<10 {
                    for session in expected {
                        group.addTask {
                            let read = try await store.sessions.session(id: session.id)
                            #expect(read == session, "round \(round)")
                        }
                    }
                    group.addTask {
                        let read = try await store.sessions.session(id: Identifiers.random())
                        #expect(read == nil)
                    }
                }
                try await group.waitForAll()
            }

            // While readers keep the store busy (reading the target too, so
            // queries for it are always in flight), every read that starts
            // after an update returned sees that update: no read rides on a
            // query sent before it began.
            let target = expected[0]
            let stop = StopFlag()
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<32 {
                    group.addTask {
                        while !stop.isStopped {
                            // SQLite reads may complete without suspending:
                            // yield, or these loops starve the writer.
                            await Task.yield()
                            _ = try await store.sessions.session(id: expected[Int.random(in: 0..<expected.count)].id)
                        }
                    }
                }
                for step in 1...30 {
                    let written = try #require(
                        try await store.sessions.updateSession(id: target.id, expectedVersion: nil) { current in
                            var next = current
                            next.dataJSON = #"{"step":\#(step)}"#
                            return next
                        }
                    )
                    let read = try await store.sessions.session(id: target.id)
                    #expect(read?.version == written.version, "step \(step)")
                    #expect(read?.dataJSON == #"{"step":\#(step)}"#, "step \(step)")
                }
                stop.stop()
                try await group.waitForAll()
            }
        }
    }

    @Test("touch extends expiry and never moves it back", arguments: Driver.available)
    func touch(driver: Driver) async throws {
        try await StoreFixture.make(driver).withStore { store in
            let session = Self.session(expiresIn: 3600)
            try await store.sessions.createSession(session)
            let later = Self.t0.addingTimeInterval(120)
            try await store.sessions.touchSession(id: session.id, lastSeenAt: later, expiresAt: later.addingTimeInterval(3600))
            var stored = try #require(try await store.sessions.session(id: session.id))
            #expect(stored.expiresAt == later.addingTimeInterval(3600))
            #expect(stored.lastSeenAt == later)
            #expect(stored.version == 1)
            try await store.sessions.touchSession(id: session.id, lastSeenAt: Self.t0, expiresAt: Self.t0.addingTimeInterval(10))
            stored = try #require(try await store.sessions.session(id: session.id))
            #expect(stored.expiresAt == later.addingTimeInterval(3600))
        }
    }

    @Test("delete and purge remove exactly what they should", arguments: Driver.available)
    func deleteAndPurge(driver: Driver) async throws {
        try await StoreFixture.make(driver).withStore { store in
            let live = Self.session(expiresIn: 3600)
            let expired = [Self.session(expiresIn: -10), Self.session(expiresIn: -20), Self.session(expiresIn: -30)]
            for session in [live] + expired { try await store.sessions.createSession(session) }
            #expect(try await store.sessions.purgeExpiredSessions(before: Self.t0, limit: 2) == 2)
            #expect(try await store.sessions.purgeExpiredSessions(before: Self.t0, limit: 100) == 1)
            #expect(try await store.sessions.session(id: live.id) == live)
            #expect(try await store.sessions.deleteSession(id: live.id))
            #expect(try await !store.sessions.deleteSession(id: live.id))
            #expect(try await store.sessions.session(id: live.id) == nil)
        }
    }
}

@Suite("MetaStore conformance")
struct MetaStoreConformanceTests {
    @Test("the first value written wins, even under a race", arguments: Driver.available)
    func firstWriterWins(driver: Driver) async throws {
        try await StoreFixture.make(driver).withStore { store in
            #expect(try await store.meta.metaValue(forKey: "secret") == nil)
            let winners = try await withThrowingTaskGroup(of: String.self) { group in
                for index in 0..<20 {
                    group.addTask { try await store.meta.insertMetaValueIfAbsent("value-\(index)", forKey: "secret") }
                }
                return try await group.reduce(into: Set<String>()) { $0.insert($1) }
            }
            #expect(winners.count == 1)
            #expect(try await store.meta.metaValue(forKey: "secret") == winners.first)
        }
    }
}

@Suite("Migrations")
struct MigrationTests {
    @Test("migrating twice applies nothing the second time", arguments: Driver.available)
    func idempotent(driver: Driver) async throws {
        let fixture = try await StoreFixture.make(driver)
        let store = try fixture.openStore()
        try await store.withRunning {
            #expect(try await store.schemaVersion() == 0)
            let first = try await store.migrate(logger: TestEnvironment.logger)
            #expect(first.fromVersion == 0 && !first.applied.isEmpty)
            let second = try await store.migrate(logger: TestEnvironment.logger)
            #expect(second.applied.isEmpty && second.fromVersion == first.toVersion)
            #expect(try await store.schemaVersion() == first.toVersion)
        }
    }

    @Test("several processes migrating at once do not race", arguments: Driver.available)
    func concurrentStarts(driver: Driver) async throws {
        let fixture = try await StoreFixture.make(driver)
        let stores = try (0..<4).map { _ in try fixture.openStore() }
        let reports = try await withThrowingTaskGroup(of: MigrationReport.self) { group in
            for store in stores {
                group.addTask { try await store.withRunning { try await store.migrate(logger: TestEnvironment.logger) } }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(reports.filter { !$0.applied.isEmpty }.count == 1)
        #expect(Set(reports.map(\.toVersion)).count == 1)
    }

    @Test("an older binary refuses a newer schema", arguments: Driver.available)
    func schemaTooNew(driver: Driver) async throws {
        let fixture = try await StoreFixture.make(driver)
        try await fixture.withStore { _ in }
        try await fixture.execute("INSERT INTO keel_schema_migrations (version, name, applied_at) VALUES (999, 'from the future', 0)")
        let store = try fixture.openStore()
        try await store.withRunning {
            let error = await #expect(throws: KeelError.self) { try await store.migrate(logger: TestEnvironment.logger) }
            #expect(error?.code == .schemaTooNew)
            #expect(error?.message.contains("999") == true)
        }
    }
}

@Suite("Test environment")
struct TestEnvironmentTests {
    @Test("CI always runs the PostgreSQL driver")
    func postgresInCI() {
        if ProcessInfo.processInfo.environment["CI"] != nil {
            #expect(TestEnvironment.postgresURL != nil, "CI must set KEEL_TEST_POSTGRES_URL (scripts/test does)")
        }
    }

    /// Every store test is parameterized over both drivers; without a server
    /// the PostgreSQL cases cancel themselves (`StoreFixture.skipPostgres`),
    /// which the console does not print. This test is the visible line:
    /// "skipped" means no PostgreSQL case ran.
    @Test("the PostgreSQL cases of every store test run against a real server", .enabled(if: TestEnvironment.postgresURL != nil))
    func postgresCasesRun() async throws {
        try await StoreFixture.make(.postgres).withStore { store in
            try await store.ping()
            #expect(store.driverName == "postgres")
        }
    }
}

/// Tells looping tasks to stop.
private final class StopFlag: Sendable {
    private let flag = Atomic<Bool>(false)
    var isStopped: Bool { self.flag.load(ordering: .relaxed) }
    func stop() { self.flag.store(true, ordering: .relaxed) }
}
