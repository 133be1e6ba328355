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
        let infoTitle = fields["Title"].map(SectionAssembler.collapseWhitespace).flatMap { $0.isEmpty ? nil : $0 }
        // Parsing blocks: off the cooperative pool, and abandoned at the deadline.
        let (limits, deadline) = (self.limits, self.deadline)
        return try await BlockingWork.run(deadline: deadline) {
            try Self.document(xml: xml, infoTitle: infoTitle, pages: pages, limits: limits, deadline: deadline)
        }
    }

    private static func document(xml: [UInt8], infoTitle: String?, pages: Int, limits: DocumentLimits, deadline: Deadline) throws(DocumentExtractionError) -> ExtractedDocument {
        let layout = try PopplerLayout.parse(xml, deadline: deadline)
        guard layout.lines.contains(where: { !$0.text.allSatisfy(\.isWhitespace) }) else { throw DocumentExtractionError.noTextLayer }
        var assembler = SectionAssembler(maxCharacters: limits.maxCharacters, maxSections: limits.maxSections)
        try layout.emit(into: &assembler, deadline: deadline)
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
            throw Self.failure(error)
        }
        try self.deadline.check()
        guard case .exited(0) = result.terminationStatus else { throw DocumentExtractionError.malformed(.pdf) }
        return result.standardOutput
    }

    /// Only a tool that is missing or cannot be executed means no PDF
    /// support; anything else (out of descriptors, memory or processes) is
    /// the machine's state at the moment, and worth retrying.
    static func failure(_ error: SubprocessError) -> DocumentExtractionError {
        if error.code == .executableNotFound { return .pdfSupportMissing }
        if let errno = error.underlyingError, [Errno.noSuchFileOrDirectory, .permissionDenied, .execFormatError, .notDirectory].contains(errno) {
            return .pdfSupportMissing
        }
        return .unavailable
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
/// Files live in `keel-documents/` under the temporary directory, named
/// `keel-pdf-<uuid>.pdf`, so `sweep` can find what a killed process left.
struct TemporaryFile {
    static let prefix = "keel-pdf-"
    static var directory: String { (NSTemporaryDirectory() as NSString).appendingPathComponent("keel-documents") }

    let path: String

    init(_ bytes: [UInt8]) throws(DocumentExtractionError) {
        let directory = Self.directory
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let path = (directory as NSString).appendingPathComponent(Self.prefix + UUID().uuidString + ".pdf")
        guard FileManager.default.createFile(atPath: path, contents: Data(bytes), attributes: [.posixPermissions: 0o600]) else {
            throw DocumentExtractionError.unavailable
        }
        self.path = path
    }

    /// Removes this module's temporary files last modified more than `age` ago.
    static func sweep(olderThan age: Duration) {
        let directory = Self.directory
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return }
        let seconds = Double(age.components.seconds) + Double(age.components.attoseconds) / 1e18
        let cutoff = Date().addingTimeInterval(-max(0, seconds))
        for name in names where name.hasPrefix(Self.prefix) && name.hasSuffix(".pdf") {
            let path = (directory as NSString).appendingPathComponent(name)
            guard let modified = (try? FileManager.default.attributesOfItem(atPath: path))?[.modificationDate] as? Date, modified < cutoff else { continue }
            try? FileManager.default.removeItem(atPath: path)
        }
    }

    func remove() {
        try? FileManager.default.removeItem(atPath: self.path)
    }
}
