import Foundation

/// The kinds of document Keel can turn into searchable sections.
public enum DocumentFormat: String, Sendable, CaseIterable {
    case text
    case markdown
    case html
    case docx
    case pdf

    /// The media type Keel reports for extracted documents of this format.
    public var mediaType: String {
        switch self {
        case .text: "text/plain"
        case .markdown: "text/markdown"
        case .html: "text/html"
        case .docx: "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
        case .pdf: "application/pdf"
        }
    }

    /// Works out a document's format from what a client said about it and from
    /// its first bytes (a few KiB is plenty).
    ///
    /// Clients mislabel files, so the bytes decide when they can: a `%PDF-`
    /// header is a PDF and a zip holding `word/document.xml` is a DOCX whatever
    /// the name says. Otherwise the extension, then the media type, picks among
    /// the text formats, but only for bytes that look like text: binary bytes
    /// that match no format give `nil`, as does a name and type we don't know.
    public static func detect(filename: String?, mediaType: String?, prefix: [UInt8]) -> DocumentFormat? {
        if prefix.starts(with: Array("%PDF-".utf8)) { return .pdf }
        if prefix.starts(with: [0x50, 0x4B, 0x03, 0x04]) {
            // The first entry's name sits in the local header; Word writes
            // [Content_Types].xml first, so also look for the path anywhere
            // in the prefix (names are stored uncompressed).
            if Self.contains(prefix, Array("word/document.xml".utf8)) || Self.contains(prefix, Array("word/".utf8)) { return .docx }
        }
        let claimed = Self.format(filename: filename) ?? Self.format(mediaType: mediaType)
        if claimed == .docx || claimed == .pdf {
            // A zip whose first KiB don't name word/ may still be a DOCX;
            // anything else that claims to be one is not.
            if claimed == .docx && prefix.starts(with: [0x50, 0x4B, 0x03, 0x04]) { return .docx }
            return TextDecoding.looksLikeText(prefix) ? Self.textFormat(sniffing: prefix) : nil
        }
        guard TextDecoding.looksLikeText(prefix) else { return nil }
        return claimed
    }

    static func format(filename: String?) -> DocumentFormat? {
        guard let filename, let dot = filename.lastIndex(of: ".") else { return nil }
        switch filename[filename.index(after: dot)...].lowercased() {
        case "txt", "text": return .text
        case "md", "markdown": return .markdown
        case "html", "htm": return .html
        case "docx": return .docx
        case "pdf": return .pdf
        default: return nil
        }
    }

    static func format(mediaType: String?) -> DocumentFormat? {
        guard let mediaType else { return nil }
        // Parameters (`; charset=utf-8`) don't change the format.
        let essence = mediaType.split(separator: ";", maxSplits: 1).first.map { $0.trimmingCharacters(in: .whitespaces).lowercased() } ?? ""
        return DocumentFormat.allCases.first { $0.mediaType == essence }
            ?? (essence == "text/x-markdown" ? .markdown : essence == "application/xhtml+xml" ? .html : nil)
    }

    /// For text mislabelled as a binary format: HTML if it starts like HTML,
    /// else plain text.
    private static func textFormat(sniffing prefix: [UInt8]) -> DocumentFormat {
        let head = String(decoding: prefix.prefix(512), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines).lowercased()
        return head.hasPrefix("<!doctype html") || head.hasPrefix("<html") ? .html : .text
    }

    private static func contains(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
        guard !needle.isEmpty, haystack.count >= needle.count else { return false }
        for start in 0...(haystack.count - needle.count) where haystack[start] == needle[0] {
            if haystack[start..<(start + needle.count)].elementsEqual(needle) { return true }
        }
        return false
    }
}
