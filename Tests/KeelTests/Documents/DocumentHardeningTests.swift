import Foundation
import Testing
@testable import KeelDocuments

/// Hostile inputs: each of these once crashed the process, used memory or
/// time out of proportion to the input, or blocked the caller past its limit.
@Suite("Document extraction under attack")
struct DocumentHardeningTests {
    static let extractor = DocumentExtractor()

    @Test("a ZIP64 local-header offset of 2^63 is refused, not a crash")
    func zip64OffsetIsRefused() async throws {
        let error = await #expect(throws: DocumentExtractionError.self) {
            try await Self.extractor.extract(try DocumentFixtures.bytes("zip64-offset.docx"), format: .docx)
        }
        #expect(error?.code == .malformedDocument)
    }

    @Test("archive structures pointing outside the bytes are refused")
    func preflightBounds() throws {
        let report = try DocumentFixtures.bytes("report.docx")
        let deadline = Deadline(after: .seconds(10))
        try ZipPreflight.check(report, deadline: deadline)
        // The end record's central-directory offset, pushed past the end.
        var bytes = report
        let eocd = try #require((0...(bytes.count - 22)).last { bytes[$0..<($0 + 4)].elementsEqual([0x50, 0x4B, 0x05, 0x06]) })
        bytes[eocd + 16..<eocd + 20] = [0xFF, 0xFF, 0xFF, 0x7F]
        #expect(throws: DocumentExtractionError.self) { try ZipPreflight.check(bytes, deadline: deadline) }
        #expect(throws: DocumentExtractionError.self) { try ZipPreflight.check(Array(report.prefix(report.count / 2)), deadline: deadline) }
        #expect(throws: DocumentExtractionError.self) { try ZipPreflight.check([0x50, 0x4B, 0x05, 0x06], deadline: deadline) }
    }

    @Test("a 10 MB heading is cut to 300 characters, and its copies stay small")
    func longHeadingIsTruncated() async throws {
        var markdown = "# " + String(repeating: "x", count: 10_000_000) + "\n\nIntro.\n\n"
        for index in 0..<2000 { markdown += "## Part \(index)\n\nText \(index).\n\n" }
        let document = try await Self.extractor.extract(Array(markdown.utf8), format: .markdown)
        #expect(document.sections.count == 2001)
        #expect(document.sections.allSatisfy { $0.path.allSatisfy { $0.count <= SectionAssembler.maxTitleCharacters } })
        #expect(document.sections[0].title.count == SectionAssembler.maxTitleCharacters)
        #expect(document.title?.count == SectionAssembler.maxTitleCharacters)
    }

    @Test("more sections than maxSections fail with too_many_sections")
    func sectionCap() async throws {
        let markdown = "Preamble.\n\n" + (0..<10).map { "## S\($0)\n\nBody.\n" }.joined(separator: "\n")
        let extractor = DocumentExtractor(limits: DocumentLimits(maxSections: 10))
        let error = await #expect(throws: DocumentExtractionError.self) { try await extractor.extract(Array(markdown.utf8), format: .markdown) }
        #expect(error?.code == .tooManySections)
        let fits = try await DocumentExtractor(limits: DocumentLimits(maxSections: 11)).extract(Array(markdown.utf8), format: .markdown)
        #expect(fits.sections.count == 11)
    }

    @Test("20,000 chained styles resolve quickly")
    func styleChain() async throws {
        // report.docx plus C0…C19999, each based on the one before, C0 on Heading2.
        let docx = try DocumentFixtures.bytes("styles-chain.docx")
        let started = ContinuousClock.now
        let document = try await Self.extractor.extract(docx, format: .docx)
        #expect(ContinuousClock.now - started < .seconds(10))
        #expect(document.sections.map(\.title) == DocumentExtractorTests.expected.map(\.0))
        var styles = "<w:styles xmlns:w=\"http://schemas.openxmlformats.org/wordprocessingml/2006/main\">"
            + "<w:style w:type=\"paragraph\" w:styleId=\"Heading2\"><w:name w:val=\"heading 2\"/></w:style>"
        for index in 0..<20_000 {
            styles += "<w:style w:type=\"paragraph\" w:styleId=\"C\(index)\"><w:basedOn w:val=\"\(index > 0 ? "C\(index - 1)" : "Heading2")\"/></w:style>"
        }
        let table = try StyleTable(Data((styles + "</w:styles>").utf8), deadline: Deadline(after: .seconds(10)))
        #expect(table.level(of: "C0") == 2)
        #expect(table.level(of: "C30") == 2)
        #expect(table.level(of: "C19999") == nil)  // beyond the 32-step chain
    }

    @Test("a 5 MB section chunks in linear time")
    func chunkerIsLinear() {
        let text = String(repeating: "Lorem ipsum dolor sit amet, consectetur adipiscing elit. ", count: 90_000)
        let started = ContinuousClock.now
        let passages = Chunker.passages(of: [ExtractedSection(title: "T", level: 1, path: ["T"], text: text)], target: 1000)
        #expect(ContinuousClock.now - started < .seconds(10))
        #expect(passages.count > 4000)
    }

    @Test("pieces of one visual line merge in linear time")
    func popplerAppendIsLinear() throws {
        var xml = "<pdf2xml><page number=\"1\"><fontspec id=\"0\" size=\"11\"/>"
        for index in 0..<60_000 { xml += "<text top=\"10\" left=\"\(index)\" height=\"10\" font=\"0\">w\(index)</text>" }
        xml += "</page></pdf2xml>"
        let started = ContinuousClock.now
        let layout = try PopplerLayout.parse(Array(xml.utf8), deadline: Deadline(after: .seconds(60)))
        #expect(ContinuousClock.now - started < .seconds(10))
        #expect(layout.lines.count == 1)
        #expect(layout.lines[0].characters == layout.lines[0].text.count)
    }

    @Test("an extraction past its time limit returns extraction_timeout promptly, whatever the parser is doing")
    func timeLimitIsPrompt() async throws {
        // One 40 MB text token: the tokenizer has no deadline check inside it.
        let html = Array(("<html><body><p>" + String(repeating: "word ", count: 8_000_000) + "</p></body></html>").utf8)
        let extractor = DocumentExtractor(limits: DocumentLimits(maxCharacters: 100_000_000, timeLimit: .milliseconds(200)))
        let started = ContinuousClock.now
        let error = await #expect(throws: DocumentExtractionError.self) { try await extractor.extract(html, format: .html) }
        #expect(error?.code == .extractionTimeout)
        // Well before the parser's own end (tens of seconds in a debug build), even on a loaded machine.
        #expect(ContinuousClock.now - started < .seconds(15))
    }

    @Test("cancelling the caller ends the extraction promptly with CancellationError")
    func cancellationIsPrompt() async throws {
        let html = Array(("<html><body><p>" + String(repeating: "word ", count: 8_000_000) + "</p></body></html>").utf8)
        let extractor = DocumentExtractor(limits: DocumentLimits(maxCharacters: 100_000_000))
        let task = Task { try await extractor.extract(html, format: .html) }
        try await Task.sleep(for: .milliseconds(100))
        let started = ContinuousClock.now
        task.cancel()
        await #expect(throws: CancellationError.self) { try await task.value }
        #expect(ContinuousClock.now - started < .seconds(6))
    }

    @Test func retryableCodes() {
        #expect(DocumentExtractionError.unavailable.retryable)
        #expect(DocumentExtractionError.unavailable.code.rawValue == "extraction_unavailable")
        #expect(!DocumentExtractionError.pdfSupportMissing.retryable)
        #expect(!DocumentExtractionError.timeout.retryable)
    }

    @Test("old temporary PDFs are swept, young ones kept")
    func sweep() throws {
        try FileManager.default.createDirectory(atPath: TemporaryFile.directory, withIntermediateDirectories: true)
        let old = TemporaryFile.directory + "/" + TemporaryFile.prefix + UUID().uuidString + ".pdf"
        let young = TemporaryFile.directory + "/" + TemporaryFile.prefix + UUID().uuidString + ".pdf"
        let other = TemporaryFile.directory + "/unrelated-" + UUID().uuidString + ".pdf"
        for path in [old, young, other] { #expect(FileManager.default.createFile(atPath: path, contents: Data("x".utf8))) }
        defer { for path in [young, other] { try? FileManager.default.removeItem(atPath: path) } }
        try FileManager.default.setAttributes([.modificationDate: Date().addingTimeInterval(-7200)], ofItemAtPath: old)
        try FileManager.default.setAttributes([.modificationDate: Date().addingTimeInterval(-7200)], ofItemAtPath: other)
        DocumentExtractor.sweepTemporaryFiles(olderThan: .seconds(3600))
        #expect(!FileManager.default.fileExists(atPath: old))
        #expect(FileManager.default.fileExists(atPath: young))
        #expect(FileManager.default.fileExists(atPath: other))
    }

    @Test("U+0000 never reaches titles or text")
    func nulIsStripped() throws {
        var assembler = SectionAssembler(maxCharacters: 1000)
        try assembler.heading("Head\u{0}ing", level: 1)
        try assembler.paragraph("Bo\u{0}dy \u{0}")
        let sections = try assembler.sections(documentTitle: nil)
        #expect(sections.map(\.title) == ["Heading"])
        #expect(sections.map(\.text) == ["Body"])
        #expect(ExtractedDocument(format: .pdf, title: "T\u{0}itle", sections: sections).title == "Title")
        #expect(SectionAssembler.collapseWhitespace("a\u{0}b") == "ab")
    }
}
