import Foundation
import KeelCore
import Testing

/// The contract of `DocumentStore`, run unchanged on every driver.
@Suite("Document store conformance")
struct DocumentStoreConformanceTests {
    static let t0 = Date(timeIntervalSince1970: 1_800_000_000)

    static func document(_ id: String, session: String = "s1", upload: String? = nil, at offset: TimeInterval = 0) -> Document {
        Document(
            id: id, sessionID: session, uploadID: upload ?? "u-\(id)", filename: "\(id).md", format: "markdown", mediaType: "text/markdown",
            byteSize: 100, createdAt: t0.addingTimeInterval(offset))
    }

    /// A small report: two sections, the second long enough for two passages.
    static let content: DocumentContent = {
        let sections = [
            DocumentSection(index: 0, title: "Executive Summary", level: 2, path: ["Report", "Executive Summary"],
                text: "Latency fell sharply after the caching layer shipped. Customers reported faster dashboards."),
            DocumentSection(index: 1, title: "Recommendations", level: 2, path: ["Report", "Recommendations"],
                text: "We recommend budgeting for a second region. The migration of invoices should finish before spring.", firstPage: 2,
                lastPage: 3),
        ]
        let passages = [
            DocumentPassage(sectionIndex: 0, ordinal: 0, heading: "Report › Executive Summary", text: sections[0].text),
            DocumentPassage(sectionIndex: 1, ordinal: 0, heading: "Report › Recommendations", text: "We recommend budgeting for a second region."),
            DocumentPassage(sectionIndex: 1, ordinal: 1, heading: "Report › Recommendations", text: "The migration of invoices should finish before spring."),
        ]
        return DocumentContent(title: "Report", pageCount: 3, sections: sections, passages: passages)
    }()

    /// Creates a document, assigns it to `job` and stores ``content``.
    static func ingested(_ store: any KeelStore, _ id: String, session: String = "s1", job: String = "j1") async throws -> Document {
        _ = try await store.documents.createDocument(Self.document(id, session: session))
        #expect(try await store.documents.assignIngest(documentID: id, jobID: job, replacing: nil, now: t0) != nil)
        #expect(try await store.documents.claimIngest(documentID: id, jobID: job, attempt: 1, now: t0))
        #expect(try await store.documents.completeIngest(documentID: id, jobID: job, attempt: 1, content: Self.content, now: t0.addingTimeInterval(1)))
        return try #require(try await store.documents.document(id: id, sessionID: session))
    }

    @Test("a document belongs to its session, and asking twice for one upload gives the same document", arguments: Driver.available)
    func ownership(driver: Driver) async throws {
        try await StoreFixture.make(driver).withStore { store in
            let first = try await store.documents.createDocument(Self.document("d1", upload: "up"))
            #expect(first.created && first.document.status == .processing)
            let again = try await store.documents.createDocument(Self.document("d2", upload: "up"))
            #expect(!again.created && again.document.id == "d1")
            // The same upload id in another session is another document.
            #expect(try await store.documents.createDocument(Self.document("d3", session: "s2", upload: "up")).created)
            #expect(try await store.documents.document(id: "d1", sessionID: "s1")?.filename == "d1.md")
            #expect(try await store.documents.document(id: "d1", sessionID: "s2") == nil)
            #expect(try await store.documents.deleteDocument(id: "d1", sessionID: "s2") == false)
            #expect(try await store.documents.document(id: "d1", sessionID: "s1") != nil)
        }
    }

    @Test("an ingest stores sections and passages at once and the document turns ready", arguments: Driver.available)
    func ingest(driver: Driver) async throws {
        try await StoreFixture.make(driver).withStore { store in
            let document = try await Self.ingested(store, "d1")
            #expect(document.status == .ready && document.title == "Report" && document.pageCount == 3)
            #expect(document.sectionCount == 2 && document.passageCount == 3 && document.characterCount == Self.content.characterCount)
            let outline = try await store.documents.outline(documentID: "d1")
            #expect(outline.map(\.title) == ["Executive Summary", "Recommendations"])
            #expect(outline.allSatisfy { $0.text.isEmpty })
            #expect(outline[1].path == ["Report", "Recommendations"] && outline[1].firstPage == 2 && outline[1].lastPage == 3)
            #expect(outline[0].firstPage == nil && outline[1].characterCount == Self.content.sections[1].text.count)
            let section = try #require(try await store.documents.section(documentID: "d1", index: 1))
            #expect(section == Self.content.sections[1])
            #expect(try await store.documents.section(documentID: "d1", index: 2) == nil)
        }
    }

    @Test("search ranks the session's passages, stems words and highlights a snippet", arguments: Driver.available)
    func search(driver: Driver) async throws {
        try await StoreFixture.make(driver).withStore { store in
            _ = try await Self.ingested(store, "d1")
            _ = try await Self.ingested(store, "other", session: "s2")
            let hits = try await store.documents.search(DocumentSearch(text: "invoice migrations", sessionID: "s1"))
            #expect(hits.count == 1)
            let hit = try #require(hits.first)
            #expect(hit.documentID == "d1" && hit.sectionIndex == 1 && hit.sectionTitle == "Recommendations" && hit.filename == "d1.md")
            #expect(hit.documentTitle == "Report" && hit.heading == "Report › Recommendations")
            #expect(hit.text == "The migration of invoices should finish before spring.")
            #expect(hit.snippet.contains("**migration**") && hit.snippet.contains("**invoices**"), "\(hit.snippet)")
            // Every word must match for `all`; any word ranks for `any`.
            #expect(try await store.documents.search(DocumentSearch(text: "invoices latency", sessionID: "s1")).isEmpty)
            let any = try await store.documents.search(DocumentSearch(text: "what about invoices and latency?", sessionID: "s1", match: .any))
            #expect(Set(any.map(\.sectionIndex)) == [0, 1] && any.count == 2)
            // The heading is searched too (and weighs more than the text).
            let byHeading = try await store.documents.search(DocumentSearch(text: "recommendations", sessionID: "s1"))
            #expect(byHeading.count == 2 && byHeading.allSatisfy { $0.sectionIndex == 1 })
            // Phrases and exclusions, as a web search reads them.
            #expect(try await store.documents.search(DocumentSearch(text: #""second region""#, sessionID: "s1")).count == 1)
            #expect(try await store.documents.search(DocumentSearch(text: #""region second""#, sessionID: "s1")).isEmpty)
            #expect(try await store.documents.search(DocumentSearch(text: "recommendations -spring", sessionID: "s1")).count == 1)
            #expect(try await store.documents.search(DocumentSearch(text: "spring or dashboards", sessionID: "s1")).count == 2)
            // Restricted to documents, and limited.
            #expect(try await store.documents.search(DocumentSearch(text: "recommendations", sessionID: "s1", documentIDs: ["nope"])).isEmpty)
            #expect(try await store.documents.search(DocumentSearch(text: "recommendations", sessionID: "s1", documentIDs: ["d1"], limit: 1)).count == 1)
            // The other session's copy is found only by its own session.
            #expect(try await store.documents.search(DocumentSearch(text: "invoices", sessionID: "s2")).map(\.documentID) == ["other"])
            #expect(try await store.documents.search(DocumentSearch(text: "invoices", sessionID: "s3")).isEmpty)
        }
    }

    @Test("whatever a user types is a valid query: engine syntax is taken as words", arguments: Driver.available)
    func hostileQueries(driver: Driver) async throws {
        try await StoreFixture.make(driver).withStore { store in
            _ = try await Self.ingested(store, "d1")
            for text in ["\"", "invoices\"", "NEAR(invoices spring)", "invoices*", "body:invoices", "^invoices", "(invoices", "invoices AND",
                "-", "- -", "or", "OR invoices", "invoices OR", "'; DROP TABLE keel_documents; --", "ínvoíces", "\u{0}invoices", "&|!<->"]
            {
                let hits = try await store.documents.search(DocumentSearch(text: text, sessionID: "s1"))
                #expect(hits.allSatisfy { $0.documentID == "d1" }, "\(text)")
            }
            #expect(try await store.documents.search(DocumentSearch(text: "invoices*", sessionID: "s1")).count == 1)
            // (Diacritics are folded by SQLite's tokenizer only: PostgreSQL's
            // english configuration keeps them without the unaccent extension.)
            #expect(try await store.documents.search(DocumentSearch(text: "   ", sessionID: "s1")).isEmpty)
            #expect(try await store.documents.document(id: "d1", sessionID: "s1")?.status == .ready)
        }
    }

    @Test("only the job that owns a document writes it: a stale job's content or failure is refused", arguments: Driver.available)
    func fencing(driver: Driver) async throws {
        try await StoreFixture.make(driver).withStore { store in
            let documents = store.documents
            _ = try await documents.createDocument(Self.document("d1"))
            let first = try await documents.assignIngest(documentID: "d1", jobID: "old", replacing: nil, now: Self.t0)
            #expect(first?.jobID == "old" && first?.status == .processing)
            // A processing document is not handed to another job, and a
            // request that saw an outdated owner loses the race.
            #expect(try await documents.assignIngest(documentID: "d1", jobID: "new", replacing: "old", now: Self.t0) == nil)
            #expect(try await documents.assignIngest(documentID: "d1", jobID: "new", replacing: nil, now: Self.t0) == nil)
            #expect(try await documents.claimIngest(documentID: "d1", jobID: "other", attempt: 1, now: Self.t0) == false)
            #expect(try await documents.claimIngest(documentID: "d1", jobID: "old", attempt: 1, now: Self.t0))
            #expect(try await documents.failIngest(documentID: "d1", jobID: "old", attempt: 1, code: "x", message: "x", now: Self.t0))
            // Failed: a new ingest may take it, once.
            let second = try await documents.assignIngest(documentID: "d1", jobID: "new", replacing: "old", now: Self.t0)
            #expect(second?.jobID == "new" && second?.status == .processing && second?.errorCode == nil && second?.ingestAttempt == 0)
            #expect(try await documents.assignIngest(documentID: "d1", jobID: "newer", replacing: "old", now: Self.t0) == nil)
            #expect(try await documents.completeIngest(documentID: "d1", jobID: "old", attempt: 1, content: Self.content, now: Self.t0) == false)
            #expect(try await documents.failIngest(documentID: "d1", jobID: "old", attempt: 1, code: "x", message: "x", now: Self.t0) == false)

            // Attempt 2 of the new job fences off attempt 1, which was presumed dead but still runs.
            #expect(try await documents.claimIngest(documentID: "d1", jobID: "new", attempt: 1, now: Self.t0))
            #expect(try await documents.claimIngest(documentID: "d1", jobID: "new", attempt: 2, now: Self.t0))
            #expect(try await documents.claimIngest(documentID: "d1", jobID: "new", attempt: 1, now: Self.t0) == false)
            #expect(try await documents.completeIngest(documentID: "d1", jobID: "new", attempt: 1, content: Self.content, now: Self.t0) == false)
            #expect(try await documents.failIngest(documentID: "d1", jobID: "new", attempt: 1, code: "x", message: "x", now: Self.t0) == false)
            #expect(try await documents.outline(documentID: "d1").isEmpty)
            #expect(try await documents.search(DocumentSearch(text: "invoices", sessionID: "s1")).isEmpty)
            #expect(try await documents.completeIngest(documentID: "d1", jobID: "new", attempt: 2, content: Self.content, now: Self.t0))
            // A ready document is not failed by a late failure, nor handed to another job, nor claimed again.
            #expect(try await documents.failIngest(documentID: "d1", jobID: "new", attempt: nil, code: "x", message: "x", now: Self.t0) == false)
            #expect(try await documents.assignIngest(documentID: "d1", jobID: "newest", replacing: "new", now: Self.t0) == nil)
            #expect(try await documents.claimIngest(documentID: "d1", jobID: "new", attempt: 3, now: Self.t0) == false)
            #expect(try await documents.document(id: "d1", sessionID: "s1")?.status == .ready)
            #expect(try await documents.assignIngest(documentID: "gone", jobID: "j", replacing: nil, now: Self.t0) == nil)
            #expect(try await documents.completeIngest(documentID: "gone", jobID: "j", attempt: 1, content: Self.content, now: Self.t0) == false)
        }
    }

    @Test("two requests racing to start an ingest: exactly one assignment wins", arguments: Driver.available)
    func assignmentRace(driver: Driver) async throws {
        let fixture = try await StoreFixture.make(driver)
        try await fixture.withStore { first in
            let second = try fixture.openStore()
            try await second.withRunning {
                _ = try await first.documents.createDocument(Self.document("d1"))
                let winners = try await withThrowingTaskGroup(of: Bool.self) { group in
                    for index in 0..<20 {
                        let store = index % 2 == 0 ? first : second
                        group.addTask { try await store.documents.assignIngest(documentID: "d1", jobID: "j\(index)", replacing: nil, now: Self.t0) != nil }
                    }
                    return try await group.reduce(into: 0) { $0 += $1 ? 1 : 0 }
                }
                #expect(winners == 1)
            }
            try await second.close()
        }
    }

    @Test("writing the content again replaces it: nothing doubles", arguments: Driver.available)
    func reingest(driver: Driver) async throws {
        try await StoreFixture.make(driver).withStore { store in
            _ = try await store.documents.createDocument(Self.document("d1"))
            _ = try await store.documents.assignIngest(documentID: "d1", jobID: "j1", replacing: nil, now: Self.t0)
            #expect(try await store.documents.claimIngest(documentID: "d1", jobID: "j1", attempt: 1, now: Self.t0))
            // The same attempt writing twice (a retried statement) leaves one copy.
            var shorter = Self.content
            shorter.sections.removeLast()
            shorter.passages = [shorter.passages[0]]
            #expect(try await store.documents.claimIngest(documentID: "d1", jobID: "j1", attempt: 2, now: Self.t0))
            #expect(try await store.documents.completeIngest(documentID: "d1", jobID: "j1", attempt: 2, content: Self.content, now: Self.t0))
            #expect(try await store.documents.document(id: "d1", sessionID: "s1")?.passageCount == 3)
            #expect(try await store.documents.completeIngest(documentID: "d1", jobID: "j1", attempt: 2, content: shorter, now: Self.t0))
            let document = try #require(try await store.documents.document(id: "d1", sessionID: "s1"))
            #expect(document.sectionCount == 1 && document.passageCount == 1)
            #expect(try await store.documents.outline(documentID: "d1").count == 1)
            #expect(try await store.documents.search(DocumentSearch(text: "invoices", sessionID: "s1")).isEmpty)
            #expect(try await store.documents.search(DocumentSearch(text: "latency", sessionID: "s1")).count == 1)
        }
    }

    @Test("a failed ingest keeps only the reason; a new ingest clears it", arguments: Driver.available)
    func failure(driver: Driver) async throws {
        try await StoreFixture.make(driver).withStore { store in
            _ = try await store.documents.createDocument(Self.document("d1"))
            _ = try await store.documents.assignIngest(documentID: "d1", jobID: "j1", replacing: nil, now: Self.t0)
            #expect(try await store.documents.failIngest(documentID: "d1", jobID: "j1", attempt: nil, code: "no_text_layer", message: "No text.", now: Self.t0))
            let failed = try #require(try await store.documents.document(id: "d1", sessionID: "s1"))
            #expect(failed.status == .failed && failed.errorCode == "no_text_layer" && failed.errorMessage == "No text." && failed.sectionCount == 0)
            let retried = try await store.documents.assignIngest(documentID: "d1", jobID: "j2", replacing: "j1", now: Self.t0)
            #expect(retried?.status == .processing && retried?.errorCode == nil && retried?.errorMessage == nil)
        }
    }

    @Test("deleting a document removes it from search and listing", arguments: Driver.available)
    func delete(driver: Driver) async throws {
        try await StoreFixture.make(driver).withStore { store in
            _ = try await Self.ingested(store, "d1")
            _ = try await Self.ingested(store, "d2")
            #expect(try await store.documents.deleteDocument(id: "d1", sessionID: "s1"))
            #expect(try await store.documents.deleteDocument(id: "d1", sessionID: "s1") == false)
            #expect(try await store.documents.document(id: "d1", sessionID: "s1") == nil)
            #expect(try await store.documents.outline(documentID: "d1").isEmpty)
            #expect(try await store.documents.search(DocumentSearch(text: "invoices", sessionID: "s1")).map(\.documentID) == ["d2"])
        }
    }

    @Test("the session's documents are listed newest first, a page at a time", arguments: Driver.available)
    func listing(driver: Driver) async throws {
        try await StoreFixture.make(driver).withStore { store in
            for index in 0..<5 { _ = try await store.documents.createDocument(Self.document("d\(index)", at: Double(index))) }
            _ = try await store.documents.createDocument(Self.document("x", session: "s2", at: 10))
            let first = try await store.documents.documents(sessionID: "s1", after: nil, limit: 2)
            #expect(first.documents.map(\.id) == ["d4", "d3"])
            let firstNext = try #require(first.next)
            let second = try await store.documents.documents(sessionID: "s1", after: firstNext, limit: 2)
            #expect(second.documents.map(\.id) == ["d2", "d1"])
            let secondNext = try #require(second.next)
            let last = try await store.documents.documents(sessionID: "s1", after: secondNext, limit: 2)
            #expect(last.documents.map(\.id) == ["d0"] && last.next == nil)
            #expect(DocumentCursor(text: firstNext.text) == firstNext)
        }
    }

    @Test("documents whose session ended are removed with their passages", arguments: Driver.available)
    func orphans(driver: Driver) async throws {
        try await StoreFixture.make(driver).withStore { store in
            let live = Session(id: "s1", dataJSON: "{}", version: 1, createdAt: Self.t0, lastSeenAt: Self.t0, expiresAt: Self.t0.addingTimeInterval(3600))
            try await store.sessions.createSession(live)
            _ = try await Self.ingested(store, "kept")
            _ = try await Self.ingested(store, "orphan", session: "gone")
            #expect(try await store.documents.removeOrphaned(limit: 10) == 1)
            #expect(try await store.documents.removeOrphaned(limit: 10) == 0)
            #expect(try await store.documents.search(DocumentSearch(text: "invoices", sessionID: "gone")).isEmpty)
            #expect(try await store.documents.document(id: "kept", sessionID: "s1")?.status == .ready)
        }
    }
}
