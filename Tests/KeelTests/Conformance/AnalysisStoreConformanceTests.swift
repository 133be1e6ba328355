import Foundation
import KeelCore
import Testing

/// The contract of `AnalysisStore`, run unchanged on every driver.
@Suite("Analysis store conformance")
struct AnalysisStoreConformanceTests {
    static let t0 = Date(timeIntervalSince1970: 1_800_000_000)

    static func analysis(_ id: String, session: String = "s1", document: String = "d1", at offset: TimeInterval = 0) -> Analysis {
        Analysis(
            id: id, sessionID: session, documentID: document, jobID: "job-\(id)", instructions: "Summarise each section; list risks.",
            sections: [0, 2, 5], chain: "fast", createdAt: t0.addingTimeInterval(offset))
    }

    static func result(_ index: Int, _ text: String, at offset: TimeInterval = 1) -> AnalysisSectionResult {
        AnalysisSectionResult(
            index: index, title: "Section \(index)", content: text,
            metadata: ["model": .string("small"), "usage": .object(["input": .int(100), "output": .int(20)]), "fallbacks": .array([])],
            completedAt: t0.addingTimeInterval(offset))
    }

    @Test("an analysis is stored running with no results, and belongs to its session", arguments: Driver.available)
    func create(driver: Driver) async throws {
        try await StoreFixture.make(driver).withStore { store in
            let analyses = store.analyses
            let created = Self.analysis("a1")
            try await analyses.createAnalysis(created)
            #expect(try await analyses.analysis(id: "a1", sessionID: "s1") == created)
            #expect(try await analyses.analysis(id: "a1") == created)
            #expect(try await analyses.analysis(id: "a1", sessionID: "s2") == nil)
            #expect(try await analyses.analysis(id: "missing", sessionID: "s1") == nil)
            #expect(try await analyses.analysis(id: "missing") == nil)
            let stored = try #require(try await analyses.analysis(id: "a1"))
            #expect(stored.status == .running && stored.results.isEmpty && stored.sections == [0, 2, 5] && stored.chain == "fast")

            var plain = Self.analysis("a2")
            plain.chain = nil
            plain.sections = []
            try await analyses.createAnalysis(plain)
            #expect(try await analyses.analysis(id: "a2") == plain)
        }
    }

    @Test("the first result of a section wins; results come in section order", arguments: Driver.available)
    func sections(driver: Driver) async throws {
        try await StoreFixture.make(driver).withStore { store in
            let analyses = store.analyses
            try await analyses.createAnalysis(Self.analysis("a1"))
            #expect(try await analyses.recordSection(analysisID: "a1", Self.result(5, "Five", at: 1)))
            #expect(try await analyses.recordSection(analysisID: "a1", Self.result(0, "Zero — résumé 概要", at: 2)))
            // A retried job writes a section again: the first result stays.
            #expect(try await analyses.recordSection(analysisID: "a1", Self.result(5, "Five again", at: 3)) == false)
            #expect(try await analyses.recordSection(analysisID: "a1", Self.result(2, "Two", at: 4)))
            let analysis = try #require(try await analyses.analysis(id: "a1", sessionID: "s1"))
            #expect(
                analysis.results == [Self.result(0, "Zero — résumé 概要", at: 2), Self.result(2, "Two", at: 4), Self.result(5, "Five", at: 1)])
            #expect(analysis.status == .running)
            // A missing analysis takes nothing.
            #expect(try await analyses.recordSection(analysisID: "missing", Self.result(0, "x")) == false)
        }
    }

    @Test("an analysis ends once, from running only, and then takes no more results", arguments: Driver.available)
    func finishing(driver: Driver) async throws {
        try await StoreFixture.make(driver).withStore { store in
            let analyses = store.analyses
            try await analyses.createAnalysis(Self.analysis("a1"))
            try await analyses.recordSection(analysisID: "a1", Self.result(0, "Zero"))
            try await analyses.finishAnalysis(
                id: "a1", status: .failed, errorCode: "models_failed", errorMessage: "Every model failed.", now: Self.t0.addingTimeInterval(10))
            var analysis = try #require(try await analyses.analysis(id: "a1"))
            #expect(analysis.status == .failed && analysis.errorCode == "models_failed" && analysis.errorMessage == "Every model failed.")
            #expect(analysis.updatedAt == Self.t0.addingTimeInterval(10))

            // Ended: a late section is refused, and another end changes nothing.
            #expect(try await analyses.recordSection(analysisID: "a1", Self.result(2, "Two")) == false)
            try await analyses.finishAnalysis(id: "a1", status: .complete, errorCode: nil, errorMessage: nil, now: Self.t0.addingTimeInterval(20))
            try await analyses.finishAnalysis(
                id: "a1", status: .failed, errorCode: "models_failed", errorMessage: "Every model failed.", now: Self.t0.addingTimeInterval(30))
            analysis = try #require(try await analyses.analysis(id: "a1"))
            #expect(analysis.status == .failed && analysis.errorCode == "models_failed" && analysis.updatedAt == Self.t0.addingTimeInterval(10))
            #expect(analysis.results.map(\.index) == [0])

            try await analyses.createAnalysis(Self.analysis("a2"))
            try await analyses.finishAnalysis(id: "a2", status: .complete, errorCode: nil, errorMessage: nil, now: Self.t0.addingTimeInterval(5))
            try await analyses.finishAnalysis(id: "a2", status: .complete, errorCode: nil, errorMessage: nil, now: Self.t0.addingTimeInterval(6))
            analysis = try #require(try await analyses.analysis(id: "a2"))
            #expect(analysis.status == .complete && analysis.errorCode == nil && analysis.updatedAt == Self.t0.addingTimeInterval(5))

            try await analyses.createAnalysis(Self.analysis("a3"))
            try await analyses.finishAnalysis(id: "a3", status: .cancelled, errorCode: "cancelled", errorMessage: "Stopped.", now: Self.t0)
            #expect(try await analyses.analysis(id: "a3")?.status == .cancelled)
            #expect(try await analyses.recordSection(analysisID: "a3", Self.result(0, "Zero")) == false)
            // Finishing a missing analysis is nothing.
            try await analyses.finishAnalysis(id: "missing", status: .complete, errorCode: nil, errorMessage: nil, now: Self.t0)
        }
    }

    @Test("analyses whose session ended are removed with their results, in batches; a live session's are kept", arguments: Driver.available)
    func orphans(driver: Driver) async throws {
        try await StoreFixture.make(driver).withStore { store in
            let analyses = store.analyses
            let live = Session(id: "s1", dataJSON: "{}", version: 1, createdAt: Self.t0, lastSeenAt: Self.t0, expiresAt: Self.t0.addingTimeInterval(3600))
            try await store.sessions.createSession(live)
            try await analyses.createAnalysis(Self.analysis("kept"))
            try await analyses.recordSection(analysisID: "kept", Self.result(1, "One"))
            for index in 0..<3 {
                try await analyses.createAnalysis(Self.analysis("gone\(index)", session: "ended"))
                try await analyses.recordSection(analysisID: "gone\(index)", Self.result(1, "One"))
            }
            #expect(try await analyses.removeOrphaned(limit: 2) == 2)
            #expect(try await analyses.removeOrphaned(limit: 2) == 1)
            #expect(try await analyses.removeOrphaned(limit: 2) == 0)
            #expect(try await analyses.analysis(id: "gone0") == nil)
            #expect(try await analyses.analysis(id: "kept", sessionID: "s1")?.results == [Self.result(1, "One")])
            // Nothing was left behind: an analysis created again with a swept id starts without results.
            try await analyses.createAnalysis(Self.analysis("gone2"))
            #expect(try await analyses.analysis(id: "gone2")?.results.isEmpty == true)
        }
    }

    @Test("a document's analyses list newest first for their session, and go with the document", arguments: Driver.available)
    func listing(driver: Driver) async throws {
        try await StoreFixture.make(driver).withStore { store in
            let analyses = store.analyses
            try await analyses.createAnalysis(Self.analysis("a1", at: 1))
            try await analyses.createAnalysis(Self.analysis("a3", at: 3))
            try await analyses.createAnalysis(Self.analysis("a2", at: 2))
            try await analyses.createAnalysis(Self.analysis("other-document", document: "d2", at: 4))
            try await analyses.createAnalysis(Self.analysis("other-session", session: "s2", at: 5))
            try await analyses.recordSection(analysisID: "a3", Self.result(2, "Two"))
            let listed = try await analyses.analyses(documentID: "d1", sessionID: "s1")
            #expect(listed.map(\.id) == ["a3", "a2", "a1"])
            #expect(listed.first?.results == [Self.result(2, "Two")])
            #expect(try await analyses.analyses(documentID: "d1", sessionID: "s2").map(\.id) == ["other-session"])
            #expect(try await analyses.analyses(documentID: "d9", sessionID: "s1").isEmpty)

            try await analyses.deleteAnalyses(documentID: "d1")
            #expect(try await analyses.analyses(documentID: "d1", sessionID: "s1").isEmpty)
            #expect(try await analyses.analyses(documentID: "d1", sessionID: "s2").isEmpty)
            #expect(try await analyses.analysis(id: "a3") == nil)
            #expect(try await analyses.analyses(documentID: "d2", sessionID: "s1").map(\.id) == ["other-document"])
            // Nothing is left behind: an analysis created again with the same id starts without results.
            try await analyses.createAnalysis(Self.analysis("a3", at: 6))
            #expect(try await analyses.analysis(id: "a3")?.results.isEmpty == true)
            try await analyses.deleteAnalyses(documentID: "nothing")
        }
    }
}
