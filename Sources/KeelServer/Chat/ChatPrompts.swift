import KeelCore
import KeelModels

/// Every prompt Keel sends a model for chat and analysis, in one place: the
/// words are here, the code around them only fills them in. Only the user's
/// own messages and their documents' text go in: never a key, a header or
/// another session's data.
enum ChatPrompts {
    static let system = """
        You are a careful assistant answering questions about the user's documents.
        Answer from the numbered sources when they are relevant, and cite them inline as [1], [2].
        If the sources do not hold the answer, say so plainly and answer from general knowledge only when the question asks for it.
        Be concise.
        """

    static let systemWithoutSources = """
        You are a careful, concise assistant.
        """

    /// The sources block: each passage numbered, with where it comes from.
    static func sources(_ sources: [ChatSource]) -> String {
        var text = "Sources:\n"
        for source in sources {
            text += "\n[\(source.number)] \(source.documentName) — \(source.heading)\n\(source.text)\n"
        }
        return text
    }

    /// The conversation sent for a reply: the system prompt with the
    /// sources, the history that fits the budget (oldest first), then the
    /// question.
    static func reply(question: String, history: [ChatMessage], sources: [ChatSource]) -> [ChatMessage] {
        let system = sources.isEmpty ? Self.systemWithoutSources : Self.system + "\n\n" + Self.sources(sources)
        return [.system(system)] + history + [.user(question)]
    }

    /// The earlier messages that fit `tokens` (four characters a token),
    /// newest first, returned oldest first. Stopped and failed replies go in
    /// as they are: the model sees what the user saw.
    static func history(_ messages: [ChatMessageRecord], tokens: Int) -> [ChatMessage] {
        var budget = tokens * 4
        var kept: [ChatMessage] = []
        for message in messages.reversed() {
            guard !message.content.isEmpty else { continue }
            let cost = message.content.count + 16
            guard cost <= budget else { break }
            budget -= cost
            kept.append(message.role == "assistant" ? .assistant(message.content) : .user(message.content))
        }
        return kept.reversed()
    }

    /// The reply without a model: the passages themselves, labelled.
    static func retrievalOnly(question: String, sources: [ChatSource]) -> String {
        guard !sources.isEmpty else {
            return """
                No models are configured on this server, so this is not a model's answer; and none of your documents \
                matched the question. Upload a document, or ask the operator to configure models (keel serve --models FILE).
                """
        }
        var text = """
            No models are configured on this server, so this is not a model's answer: these are the passages of your \
            documents that best match the question.

            """
        for source in sources {
            text += "\n[\(source.number)] \(source.documentName) — \(source.heading)\n\(source.text)\n"
        }
        return text
    }

    static let analysisSystem = """
        You analyse one section of a document at a time, following the user's instructions.
        Work only from the section's text. Be concise and concrete.
        """

    static let defaultAnalysisInstructions = "Summarise the section's key points, then list any risks, open questions or recommendations it raises."

    static func analysis(instructions: String, documentName: String, section: DocumentSection) -> [ChatMessage] {
        [
            .system(Self.analysisSystem),
            .user(
                """
                Instructions: \(instructions)

                Document: \(documentName)
                Section: \(section.path.joined(separator: " › "))

                \(section.text)
                """),
        ]
    }
}

/// One passage put into a reply's prompt, as the `sources` event and the
/// stored message name it.
struct ChatSource: Sendable, Equatable {
    var number: Int
    var documentID: String
    var documentName: String
    var sectionIndex: Int
    var sectionTitle: String
    var heading: String
    var snippet: String
    var text: String

    var json: JSONValue {
        .object([
            "number": .int(Int64(self.number)), "document_id": .string(self.documentID), "document": .string(self.documentName),
            "section_index": .int(Int64(self.sectionIndex)), "section_title": .string(self.sectionTitle), "heading": .string(self.heading),
            "snippet": .string(self.snippet), "text": .string(self.text),
        ])
    }

    init(number: Int, documentID: String, documentName: String, sectionIndex: Int, sectionTitle: String, heading: String, snippet: String, text: String) {
        self.number = number
        self.documentID = documentID
        self.documentName = documentName
        self.sectionIndex = sectionIndex
        self.sectionTitle = sectionTitle
        self.heading = heading
        self.snippet = snippet
        self.text = text
    }

    init?(json: JSONValue) {
        guard case .object(let o) = json, case .int(let number)? = o["number"], case .string(let documentID)? = o["document_id"],
            case .int(let section)? = o["section_index"]
        else { return nil }
        self.number = Int(number)
        self.documentID = documentID
        self.documentName = o["document"]?.stringValue ?? ""
        self.sectionIndex = Int(section)
        self.sectionTitle = o["section_title"]?.stringValue ?? ""
        self.heading = o["heading"]?.stringValue ?? ""
        self.snippet = o["snippet"]?.stringValue ?? ""
        self.text = o["text"]?.stringValue ?? ""
    }
}
