import Foundation
import Subprocess
#if canImport(System)
import System
#else
import SystemPackage
#endif

/// Sections of a PDF through Poppler's command-line tools: `pdfinfo` for the
/// page count (checked against the limit before any text is extracted) and
/// title, then one `pdftohtml -xml -i` run for positioned text lines with
/// font sizes and the outline. That single pass costs about what
/// `pdftotext` does (DocumentBenchmarkTests measures it: about 1.2× on a
/// 300-page file, release build), unlike asking Poppler twice.
///
/// Headings come from the outline (bookmarks) when the PDF has one, each
/// item matched to its line on its page; otherwise lines set larger than
/// the body size (the size with the most characters) are headings, ranked
/// by size.
struct PDFReader {
    let limits: DocumentLimits
    let deadline: Deadline
    let tools: PopplerTools

    func read(_ bytes: [UInt8]) async throws -> ExtractedDocument {
        let file = try TemporaryFile(bytes)
        defer { file.remove() }

        let info = try await self.run(self.tools.pdfinfo, ["-enc", "UTF-8", file.path], limit: 1 << 20)
        let fields = Self.infoFields(String(decoding: info, as: UTF8.self))
        guard let pages = fields["Pages"].flatMap({ Int($0) }) else { throw DocumentExtractionError.malformed(.pdf) }
        if pages > self.limits.maxPages {
            throw DocumentExtractionError(.tooManyPages, "The PDF has \(pages) pages; at most \(self.limits.maxPages) are allowed.")
        }
        // Markup adds roughly 100 bytes a line to the text; bound the output generously.
        let outputLimit = max(64 << 20, min(Int.max / 8, self.limits.maxCharacters) * 4)
        let xml = try await self.run(self.tools.pdftohtml, ["-xml", "-i", "-stdout", "-q", "-nodrm", file.path], limit: outputLimit)
        try self.deadline.check()
        let layout = PopplerLayout.parse(xml)
        let infoTitle = fields["Title"].map(SectionAssembler.collapseWhitespace).flatMap { $0.isEmpty ? nil : $0 }
        guard layout.lines.contains(where: { !$0.text.allSatisfy(\.isWhitespace) }) else { throw DocumentExtractionError.noTextLayer }
        var assembler = SectionAssembler(maxCharacters: self.limits.maxCharacters)
        try layout.emit(into: &assembler, deadline: self.deadline)
        let title = infoTitle ?? layout.outline.first?.title ?? assembler.firstTopHeading
        let sections = try Self.sections(of: assembler, title: title)
        return ExtractedDocument(format: .pdf, title: title, sections: sections, pageCount: pages)
    }

    /// Runs a Poppler tool; cancellation (the extraction's time limit) kills it.
    private func run(_ tool: String, _ arguments: [String], limit: Int) async throws -> [UInt8] {
        let result: ExecutionResult<Void, BytesOutput, DiscardedOutput>
        do {
            result = try await Subprocess.run(.path(FilePath(tool)), arguments: Arguments(arguments), environment: .inherit, output: .bytes(limit: limit), error: .discarded)
        } catch let error as SubprocessError {
            try self.deadline.check()
            if error.code == .outputLimitExceeded { throw DocumentExtractionError.tooManyCharacters(self.limits.maxCharacters) }
            throw DocumentExtractionError.pdfSupportMissing
        }
        try self.deadline.check()
        guard case .exited(0) = result.terminationStatus else { throw DocumentExtractionError.malformed(.pdf) }
        return result.standardOutput
    }

    /// Headings without any body text: a scan with a bookmarked outline.
    private static func sections(of assembler: SectionAssembler, title: String?) throws(DocumentExtractionError) -> [ExtractedSection] {
        do {
            return try assembler.sections(documentTitle: title)
        } catch {
            throw error.code == .emptyDocument ? .noTextLayer : error
        }
    }

    static func infoFields(_ text: String) -> [String: String] {
        var fields: [String: String] = [:]
        for line in text.documentLines {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let key = String(line[..<colon])
            if fields[key] == nil { fields[key] = String(line[line.index(after: colon)...].trimmed) }
        }
        return fields
    }
}

/// Where Poppler's tools are, found once per extractor.
struct PopplerTools: Sendable {
    let pdfinfo: String
    let pdftohtml: String

    /// In `directory`, or on `PATH` when it is nil; nil when either tool is missing.
    static func locate(in directory: String?) -> PopplerTools? {
        let directories = directory.map { [$0] } ?? (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":").map(String.init)
        func find(_ name: String) -> String? {
            directories.lazy.map { $0 + "/" + name }.first { FileManager.default.isExecutableFile(atPath: $0) }
        }
        guard let pdfinfo = find("pdfinfo"), let pdftohtml = find("pdftohtml") else { return nil }
        return PopplerTools(pdfinfo: pdfinfo, pdftohtml: pdftohtml)
    }
}

/// The PDF as a file for Poppler, readable only by us, removed by `remove()`.
private struct TemporaryFile {
    let path: String

    init(_ bytes: [UInt8]) throws(DocumentExtractionError) {
        let path = NSTemporaryDirectory() + "/keel-document-" + UUID().uuidString + ".pdf"
        guard FileManager.default.createFile(atPath: path, contents: Data(bytes), attributes: [.posixPermissions: 0o600]) else {
            throw DocumentExtractionError(.malformedDocument, "The PDF could not be prepared for reading; try again later.")
        }
        self.path = path
    }

    func remove() {
        try? FileManager.default.removeItem(atPath: self.path)
    }
}
