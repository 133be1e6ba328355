extension String {
    /// Lines split at `\n`, `\r\n` or `\r`, without the terminators.
    var documentLines: [Substring] {
        // Swift treats "\r\n" as one Character, so splitting on newline characters handles all three.
        self.split(omittingEmptySubsequences: false, whereSeparator: { $0.isNewline })
    }
}

extension Substring {
    var trimmed: Substring {
        var slice = self
        while let first = slice.first, first.isWhitespace { slice.removeFirst() }
        while let last = slice.last, last.isWhitespace { slice.removeLast() }
        return slice
    }

    var isBlank: Bool { self.allSatisfy(\.isWhitespace) }

    /// Leading spaces (tabs count as four, as in Markdown).
    var indentation: Int {
        var width = 0
        for character in self {
            if character == " " { width += 1 } else if character == "\t" { width += 4 } else { break }
        }
        return width
    }
}
