import Foundation

/// A piece of a section small enough to embed or show as a search hit.
public struct Passage: Sendable, Equatable {
    public var sectionIndex: Int
    /// Position within its section, from 0.
    public var ordinal: Int
    /// The section's path joined with " › ", for display and for context in embeddings.
    public var heading: String
    public var text: String

    public init(sectionIndex: Int, ordinal: Int, heading: String, text: String) {
        self.sectionIndex = sectionIndex
        self.ordinal = ordinal
        self.heading = heading
        self.text = text
    }
}

/// Cuts sections into passages of about `target` characters. A passage never
/// spans two sections, so a hit always has one heading. Cuts fall at the
/// last paragraph break before the target, else the last sentence end,
/// else the last space, else (one long word) at the target itself; cuts
/// are never inside a grapheme. Every character of a section's text lands
/// in exactly one passage, except whitespace at the cuts, which is dropped.
/// Linear in the text: each cut looks at most `target` characters ahead.
public enum Chunker {
    /// When the calling task is cancelled this stops early and returns the
    /// passages so far (incomplete): check `Task.checkCancellation()` after.
    public static func passages(of sections: [ExtractedSection], target: Int = 1000) -> [Passage] {
        let target = max(1, target)
        var passages: [Passage] = []
        for (sectionIndex, section) in sections.enumerated() {
            if Task.isCancelled { break }
            let heading = section.path.joined(separator: " › ")
            var rest = Substring(section.text).trimmed
            var ordinal = 0
            while !rest.isEmpty {
                if ordinal % 1024 == 1023, Task.isCancelled { break }
                let cut = Self.cut(rest, target: target)
                let piece = rest[..<cut].trimmed
                if !piece.isEmpty {
                    passages.append(Passage(sectionIndex: sectionIndex, ordinal: ordinal, heading: heading, text: String(piece)))
                    ordinal += 1
                }
                rest = rest[cut...].trimmed
            }
        }
        return passages
    }

    /// Where to end the next passage of `text`.
    private static func cut(_ text: Substring, target: Int) -> Substring.Index {
        // Allow a little overshoot rather than leave a tiny remainder.
        // (Asking for the distance to the end instead would walk the whole rest: quadratic.)
        guard let limit = text.index(text.startIndex, offsetBy: target, limitedBy: text.endIndex),
              text.index(limit, offsetBy: target / 10 + 1, limitedBy: text.endIndex) != nil else { return text.endIndex }
        // Don't cut so early that passages become much smaller than the target.
        let floor = text.index(text.startIndex, offsetBy: target / 2)
        let window = text[floor..<limit]
        if let end = Self.lastParagraphBreak(in: window) { return end }
        if let end = Self.lastSentenceEnd(in: window) { return end }
        if let space = window.lastIndex(where: { $0.isWhitespace }) { return text.index(after: space) }
        return limit
    }

    /// Just after the last blank line ("\n\n"), found on UTF-8 bytes
    /// (Foundation's backwards `range(of:)` showed in profiles).
    private static func lastParagraphBreak(in window: Substring) -> Substring.Index? {
        let utf8 = window.utf8
        var index = utf8.endIndex
        var following: UInt8?
        while index > utf8.startIndex {
            let previous = utf8.index(before: index)
            let byte = utf8[previous]
            if byte == 0x0A, following == 0x0A { return utf8.index(after: index) }
            following = byte
            index = previous
        }
        return nil
    }

    /// Just after the last `.`, `!` or `?` that is followed by whitespace.
    private static func lastSentenceEnd(in window: Substring) -> Substring.Index? {
        var index = window.endIndex
        while index > window.startIndex {
            let previous = window.index(before: index)
            if index < window.endIndex, window[index].isWhitespace, ".!?".contains(window[previous]) { return index }
            index = previous
        }
        return nil
    }
}
