/// A user's search text read the way PostgreSQL's `websearch_to_tsquery`
/// reads it (words AND-ed, `"quoted phrases"`, `or` between alternatives,
/// `-excluded` words), for engines without that parser (SQLite FTS5).
/// Whatever the user types becomes a valid query: there is no syntax error
/// to report, only words.
public struct FullTextQuery: Sendable, Equatable {
    /// A word or a phrase (several words in order).
    public struct Term: Sendable, Equatable, Hashable {
        public var words: [String]
    }

    /// Terms that must all match, each a set of alternatives (`a or b`).
    public var required: [[Term]]
    /// Terms that must not match.
    public var excluded: [Term]

    public init(_ text: String, dropStopWords: Bool = true) {
        var required: [[Term]] = []
        var excluded: [Term] = []
        var pendingOr = false
        for token in Self.tokens(text) {
            switch token {
            case .or:
                pendingOr = !required.isEmpty
            case .term(let term, let negated):
                if negated {
                    excluded.append(term)
                } else if pendingOr, !required.isEmpty {
                    required[required.count - 1].append(term)
                } else {
                    required.append([term])
                }
                pendingOr = false
            }
        }
        if dropStopWords {
            // Single common words carry no meaning ("what is the …") and
            // PostgreSQL's english configuration drops them too; keep them
            // only if nothing else is left.
            let meaningful = required.filter { group in !group.allSatisfy { $0.words.count == 1 && Self.stopWords.contains($0.words[0]) } }
            if !meaningful.isEmpty { required = meaningful }
        }
        self.required = required
        self.excluded = excluded
    }

    /// Nothing to look for.
    public var isEmpty: Bool { self.required.isEmpty }

    /// Every distinct word to look for, for ranking by any of them.
    public var anyWords: [String] {
        var seen = Set<String>()
        var words: [String] = []
        for group in self.required {
            for term in group {
                for word in term.words where seen.insert(word).inserted { words.append(word) }
            }
        }
        let meaningful = words.filter { !Self.stopWords.contains($0) }
        return meaningful.isEmpty ? words : meaningful
    }

    /// The query in SQLite FTS5's syntax; `nil` when there is nothing to match.
    public func fts5(match: DocumentSearch.Match) -> String? {
        func quoted(_ term: Term) -> String { "\"" + term.words.joined(separator: " ") + "\"" }
        switch match {
        case .any:
            let words = self.anyWords
            return words.isEmpty ? nil : words.map { "\"\($0)\"" }.joined(separator: " OR ")
        case .all:
            guard !self.required.isEmpty else { return nil }
            var query = self.required.map { group in "(" + group.map(quoted).joined(separator: " OR ") + ")" }.joined(separator: " AND ")
            for term in self.excluded { query = "(\(query)) NOT \(quoted(term))" }
            return query
        }
    }

    private enum Token {
        case term(Term, negated: Bool)
        case or
    }

    /// Words are runs of letters and digits, lowercased; a run of words
    /// joined by punctuation ("e-mail", "don't") is a phrase.
    private static func tokens(_ text: String) -> [Token] {
        var tokens: [Token] = []
        var index = text.startIndex
        while index < text.endIndex {
            let character = text[index]
            if character.isWhitespace {
                index = text.index(after: index)
                continue
            }
            var negated = false
            if character == "-" {
                negated = true
                index = text.index(after: index)
                guard index < text.endIndex, !text[index].isWhitespace else { continue }
            }
            if index < text.endIndex, text[index] == "\"" {
                let start = text.index(after: index)
                let end = text[start...].firstIndex(of: "\"") ?? text.endIndex
                let words = Self.words(text[start..<end])
                if !words.isEmpty { tokens.append(.term(Term(words: words), negated: negated)) }
                index = end < text.endIndex ? text.index(after: end) : end
                continue
            }
            let end = text[index...].firstIndex(where: { $0.isWhitespace || $0 == "\"" }) ?? text.endIndex
            let chunk = text[index..<end]
            index = end
            let words = Self.words(chunk)
            if words.isEmpty { continue }
            if !negated, words == ["or"], chunk.lowercased() == "or" {
                tokens.append(.or)
            } else {
                tokens.append(.term(Term(words: words), negated: negated))
            }
        }
        return tokens
    }

    private static func words(_ text: Substring) -> [String] {
        var words: [String] = []
        var current = ""
        for character in text {
            if character.isLetter || character.isNumber {
                current.append(character)
            } else if !current.isEmpty {
                words.append(current.lowercased())
                current = ""
            }
            // A word is bounded so one pasted blob cannot make a huge query.
            if words.count >= 32 { break }
        }
        if !current.isEmpty, words.count < 32 { words.append(current.lowercased()) }
        return words.map { String($0.prefix(64)) }
    }

    /// English function words (the core of PostgreSQL's `english` stop list).
    static let stopWords: Set<String> = [
        "a", "about", "above", "after", "again", "against", "all", "am", "an", "and", "any", "are", "as", "at", "be", "because", "been",
        "before", "being", "below", "between", "both", "but", "by", "can", "could", "did", "do", "does", "doing", "down", "during", "each",
        "few", "for", "from", "further", "had", "has", "have", "having", "he", "her", "here", "hers", "herself", "him", "himself", "his",
        "how", "i", "if", "in", "into", "is", "it", "its", "itself", "just", "me", "more", "most", "my", "myself", "no", "nor", "not", "now",
        "of", "off", "on", "once", "only", "or", "other", "our", "ours", "ourselves", "out", "over", "own", "same", "she", "should", "so",
        "some", "such", "than", "that", "the", "their", "theirs", "them", "themselves", "then", "there", "these", "they", "this", "those",
        "through", "to", "too", "under", "until", "up", "very", "was", "we", "were", "what", "when", "where", "which", "while", "who", "whom",
        "why", "will", "with", "would", "you", "your", "yours", "yourself", "yourselves",
    ]
}
