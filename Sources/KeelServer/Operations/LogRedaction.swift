/// Takes credentials out of text bound for a log: URL query strings and
/// user-info (`?key=…`, `//user:password@`), and bearer tokens. Errors from
/// providers and drivers quote the URLs and headers they used.
enum LogRedaction {
    static func redact(_ text: String) -> String {
        var result = ""
        result.reserveCapacity(text.count)
        var index = text.startIndex
        while index < text.endIndex {
            let rest = text[index...]
            if rest.hasPrefix("://"), let end = rest.dropFirst(3).firstIndex(where: { $0 == "/" || $0 == " " || $0 == "\"" || $0 == "'" }) ?? Optional(rest.endIndex),
                let at = rest[rest.index(rest.startIndex, offsetBy: 3)..<end].lastIndex(of: "@")
            {
                result += "://<redacted>"
                index = at
                continue
            }
            if rest.first == "?", result.contains("://") {
                result += "?<redacted>"
                index = rest.firstIndex(where: { $0 == " " || $0 == "\"" || $0 == "'" || $0 == ")" || $0 == "\n" }) ?? rest.endIndex
                continue
            }
            if rest.lowercased().hasPrefix("bearer ") {
                result += "Bearer <redacted>"
                let token = rest.dropFirst(7)
                index = token.firstIndex(where: { $0 == " " || $0 == "\"" || $0 == "'" || $0 == "\n" }) ?? rest.endIndex
                continue
            }
            result.append(rest.first!)
            index = text.index(after: index)
        }
        return result
    }
}
