import Foundation
import Testing
@testable import KeelDocuments

@Suite("Document extraction")
struct DocumentExtractorTests {
    static let report = "Quarterly Operations Report"
    /// (title, level, path, a sentence only that section has)
    static let expected: [(String, Int, [String], String)] = [
        (report, 1, [report], "compares the numbers with the previous review"),
        ("Executive Summary", 2, [report, "Executive Summary"], "incident count fell to its lowest level this year"),
        ("Methodology", 2, [report, "Methodology"], "cross-checked against the billing ledger and the synthetic probes"),
        ("Findings", 2, [report, "Findings"], "grouped by the two concerns that customers raised most often"),
        ("Latency", 3, [report, "Findings", "Latency"], "cold caches in the Frankfurt region"),
        ("Cost", 3, [report, "Findings", "Cost"], "snapshots were retained indefinitely"),
        ("Recommendations", 2, [report, "Recommendations"], "prewarm caches before regional failovers"),
        ("Conclusion", 2, [report, "Conclusion"], "Operations are healthier than a quarter ago"),
    ]

    static let extractor = DocumentExtractor()

    @Test("every format of the report gives the same sections", arguments: [
        ("report.md", DocumentFormat.markdown), ("report.html", .html), ("report.txt", .text), ("report.docx", .docx),
        ("report.pdf", .pdf), ("report-no-outline.pdf", .pdf),
    ])
    func sameSections(name: String, format: DocumentFormat) async throws {
        let document = try await Self.extractor.extract(try DocumentFixtures.bytes(name), format: format)
        #expect(document.format == format)
        #expect(document.title == Self.report)
        #expect(document.sections.map(\.title) == Self.expected.map(\.0))
        #expect(document.sections.map(\.level) == Self.expected.map(\.1))
        #expect(document.sections.map(\.path) == Self.expected.map(\.2))
        for (section, expected) in zip(document.sections, Self.expected) {
            #expect(DocumentFixtures.flat(section.text).contains(expected.3), "\(name): \(section.title)")
            #expect(!section.text.contains(section.title + "\n"), "\(name): heading line is not body text")
        }
        #expect(document.characterCount == document.sections.reduce(0) { $0 + $1.text.count })
        if format == .pdf {
            #expect(document.pageCount == 4)
            #expect(document.sections.map(\.firstPage) == [1, 1, 1, 3, 3, 3, 3, 4])
            #expect(document.sections.map(\.lastPage) == [1, 1, 2, 3, 3, 3, 3, 4])
        } else {
            #expect(document.pageCount == nil)
            #expect(document.sections.allSatisfy { $0.firstPage == nil && $0.lastPage == nil })
        }
        // The five names, in order.
        let names = ["Executive Summary", "Methodology", "Findings", "Recommendations", "Conclusion"]
        #expect(document.sections.map(\.title).filter(names.contains) == names)
    }

    @Test func docxBombIsRefused() async throws {
        await #expect(throws: DocumentExtractionError.archiveTooLarge) {
            try await Self.extractor.extract(try DocumentFixtures.bytes("bomb.docx"), format: .docx)
        }
    }

    @Test func malformedInputs() async throws {
        for (name, format) in [("malformed.docx", DocumentFormat.docx), ("truncated.pdf", .pdf), ("report.md", .docx)] {
            let error = await #expect(throws: DocumentExtractionError.self) {
                try await Self.extractor.extract(try DocumentFixtures.bytes(name), format: format)
            }
            #expect(error?.code == .malformedDocument, "\(name)")
            #expect(error?.message.contains("/") == false)
        }
    }

    @Test func scanHasNoTextLayer() async throws {
        let error = await #expect(throws: DocumentExtractionError.self) {
            try await Self.extractor.extract(try DocumentFixtures.bytes("scanned.pdf"), format: .pdf)
        }
        #expect(error?.code == .noTextLayer)
    }

    @Test func limits() async throws {
        let pdf = try DocumentFixtures.bytes("report.pdf")
        let cases: [(DocumentLimits, DocumentExtractionError.Code)] = [
            (DocumentLimits(maxBytes: 1000), .documentTooLarge),
            (DocumentLimits(maxPages: 3), .tooManyPages),
            (DocumentLimits(maxCharacters: 500), .tooManyCharacters),
            (DocumentLimits(timeLimit: .milliseconds(1)), .extractionTimeout),
        ]
        for (limits, code) in cases {
            let error = await #expect(throws: DocumentExtractionError.self) {
                try await DocumentExtractor(limits: limits).extract(pdf, format: .pdf)
            }
            #expect(error?.code == code)
        }
        let error = await #expect(throws: DocumentExtractionError.self) {
            try await DocumentExtractor(limits: DocumentLimits(maxCharacters: 500)).extract(try DocumentFixtures.bytes("report.docx"), format: .docx)
        }
        #expect(error?.code == .tooManyCharacters)
        let small = await #expect(throws: DocumentExtractionError.self) {
            try await DocumentExtractor(limits: DocumentLimits(maxUncompressedBytes: 10_000)).extract(try DocumentFixtures.bytes("report.docx"), format: .docx)
        }
        #expect(small?.code == .archiveTooLarge)
    }

    @Test func missingPoppler() async throws {
        let empty = FileManager.default.temporaryDirectory.appendingPathComponent("keel-no-poppler-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: empty, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: empty) }
        let extractor = DocumentExtractor(popplerDirectory: empty.path)
        #expect(!extractor.pdfSupportAvailable)
        #expect(Self.extractor.pdfSupportAvailable)
        let error = await #expect(throws: DocumentExtractionError.self) {
            try await extractor.extract(try DocumentFixtures.bytes("report.pdf"), format: .pdf)
        }
        #expect(error?.code == .pdfSupportMissing)
        #expect(error?.message.contains("poppler-utils") == true)
    }

    @Test func binaryAndEmptyInputs() async throws {
        let binary = try DocumentFixtures.bytes("scanned.pdf").map { $0 == 0x0A ? 0 : $0 } + [0, 1, 2, 3]
        for format in [DocumentFormat.text, .markdown] {
            let error = await #expect(throws: DocumentExtractionError.self) { try await Self.extractor.extract(binary, format: format) }
            #expect(error?.code == .unsupportedDocumentType)
        }
        let html = await #expect(throws: DocumentExtractionError.self) { try await Self.extractor.extract(binary, format: .html) }
        #expect(html?.code == .malformedDocument)
        let notHTML = await #expect(throws: DocumentExtractionError.self) { try await Self.extractor.extract(Array("just words".utf8), format: .html) }
        #expect(notHTML?.code == .malformedDocument)
        for (text, format) in [("  \n\n ", DocumentFormat.text), ("# Only a heading\n", .markdown), ("<html><body> </body></html>", .html)] {
            let error = await #expect(throws: DocumentExtractionError.self) { try await Self.extractor.extract(Array(text.utf8), format: format) }
            #expect(error?.code == .emptyDocument, "\(text)")
        }
    }

    @Test func encodings() async throws {
        // Windows-1252: "café – naïve" with an en dash at 0x96.
        let cp1252: [UInt8] = [0x63, 0x61, 0x66, 0xE9, 0x20, 0x96, 0x20, 0x6E, 0x61, 0xEF, 0x76, 0x65, 0x2E]
        let latin = try await Self.extractor.extract(cp1252, format: .text)
        #expect(latin.sections.map(\.text) == ["café – naïve."])
        var utf16: [UInt8] = [0xFF, 0xFE]
        for unit in "Grüße aus Köln.".utf16 { utf16 += [UInt8(unit & 0xFF), UInt8(unit >> 8)] }
        let decoded = try await Self.extractor.extract(utf16, format: .text)
        #expect(decoded.sections.map(\.text) == ["Grüße aus Köln."])
        #expect(decoded.sections.map(\.title) == ["Document"])
    }

    @Test func detection() {
        let pdf = Array("%PDF-1.7\n".utf8)
        let zip: [UInt8] = [0x50, 0x4B, 0x03, 0x04] + Array("....word/document.xml".utf8)
        #expect(DocumentFormat.detect(filename: "a.txt", mediaType: nil, prefix: pdf) == .pdf)
        #expect(DocumentFormat.detect(filename: "a.pdf", mediaType: nil, prefix: zip) == .docx)
        #expect(DocumentFormat.detect(filename: "notes.MD", mediaType: nil, prefix: Array("# Hi".utf8)) == .markdown)
        #expect(DocumentFormat.detect(filename: "page.htm", mediaType: nil, prefix: Array("<p>".utf8)) == .html)
        #expect(DocumentFormat.detect(filename: nil, mediaType: "text/plain; charset=utf-8", prefix: Array("hello".utf8)) == .text)
        #expect(DocumentFormat.detect(filename: nil, mediaType: "application/pdf", prefix: pdf) == .pdf)
        #expect(DocumentFormat.detect(filename: "x.bin", mediaType: "application/octet-stream", prefix: [0, 1, 2]) == nil)
        #expect(DocumentFormat.detect(filename: "a.txt", mediaType: nil, prefix: [0x7F, 0x45, 0x4C, 0x46, 2, 1, 1, 0, 0, 0]) == nil)
        #expect(DocumentFormat.detect(filename: "a.docx", mediaType: nil, prefix: Array("plain words".utf8)) == .text)
        #expect(DocumentFormat.detect(filename: nil, mediaType: nil, prefix: Array("words".utf8)) == nil)
        #expect(DocumentFormat.allCases.map(\.mediaType).contains("application/vnd.openxmlformats-officedocument.wordprocessingml.document"))
    }
}

@Suite("Poppler under a time limit")
struct PopplerTimeLimitTests {
    @Test("an extraction past its time limit kills the Poppler process and fails promptly with extraction_timeout")
    func killsPoppler() async throws {
        try DocumentTools.requirePoppler()
        // A pdftohtml that records its pid and then hangs (exec: the pid is the hanging process's).
        let directory = try TestEnvironment.directory("hanging-poppler")
        let pidFile = directory.appendingPathComponent("pid")
        let script = "#!/bin/sh\necho $$ > '\(pidFile.path)'\nexec sleep 60\n"
        try script.write(to: directory.appendingPathComponent("pdftohtml"), atomically: true, encoding: .utf8)
        try "#!/bin/sh\nexec pdfinfo \"$@\"\n".write(to: directory.appendingPathComponent("pdfinfo"), atomically: true, encoding: .utf8)
        for tool in ["pdftohtml", "pdfinfo"] {
            try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: directory.appendingPathComponent(tool).path)
        }
        // Long enough for pdfinfo to finish and the hanging pdftohtml to start, even on a loaded machine.
        let extractor = DocumentExtractor(limits: DocumentLimits(timeLimit: .seconds(10)), popplerDirectory: directory.path)
        let started = ContinuousClock.now
        do {
            _ = try await extractor.extract(try DocumentFixtures.bytes("report.pdf"), format: .pdf)
            Issue.record("a hanging Poppler must not produce a document")
        } catch let error as DocumentExtractionError {
            #expect(error.code == .extractionTimeout)
        }
        let elapsed = ContinuousClock.now - started
        #expect(elapsed < .seconds(60), "the time limit is 10 s; it took \(elapsed)")
        // Whatever ran from the hanging stand-in's directory is gone: the
        // stand-in itself (its pid, when it got to start: on a loaded CI
        // machine the limit can pass before it does) and anything it exec'd.
        let pid = (try? String(contentsOf: pidFile, encoding: .utf8)).flatMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        func running() -> Bool {
            if let pid, kill(pid, 0) == 0 { return true }
            let pgrep = Process()
            pgrep.executableURL = URL(fileURLWithPath: "/usr/bin/pgrep")
            pgrep.arguments = ["-f", directory.path]
            pgrep.standardOutput = FileHandle.nullDevice
            guard (try? pgrep.run()) != nil else { return false }
            pgrep.waitUntilExit()
            return pgrep.terminationStatus == 0
        }
        var alive = running()
        for _ in 0..<50 where alive {
            try await Task.sleep(for: .milliseconds(100))
            alive = running()
        }
        #expect(!alive, "pdftohtml (pid \(pid.map(String.init) ?? "not started")) still runs after the time limit")
    }
}
