/// What the drivers of ``ChatStore`` and ``AnalysisStore`` share: their
/// errors, and the JSON text they keep metadata and section lists in.
extension KeelError {
    /// A chat the session does not have (or that was deleted).
    public static func chatNotFound(_ id: String) -> KeelError {
        KeelError(.notFound, "No chat '\(id)' for this session.")
    }

    /// A message id already used in another chat: ids are unique across
    /// chats (random, or derived from the session, chat and key), so this is
    /// a programming error.
    public static func messageOfAnotherChat(_ id: String) -> KeelError {
        KeelError(.internalError, "The message '\(id)' could not be stored.", detail: "message id already used in another chat")
    }

    /// A reply written without the job that owns it: a programming error.
    public static func replyWithoutJob(_ messageID: String) -> KeelError {
        KeelError(.internalError, "The reply message '\(messageID)' names no job.", detail: "recordReply needs ChatMessageRecord.jobID")
    }
}

extension JSONValue {
    /// The object stored as JSON text by a store (metadata); a value that is
    /// not an object is a store fault.
    public static func storedObject(_ text: String) throws -> [String: JSONValue] {
        guard let object = try? JSONValue.parse(Array(text.utf8)).objectValue else {
            throw KeelError(.internalError, "A stored JSON object is damaged.", detail: "stored text: \(text.prefix(200))")
        }
        return object
    }

    /// Section indexes stored as a JSON array of integers.
    public static func storedIndexes(_ text: String) throws -> [Int] {
        guard case .array(let items)? = try? JSONValue.parse(Array(text.utf8)) else {
            throw KeelError(.internalError, "A stored list of sections is damaged.", detail: "stored text: \(text.prefix(200))")
        }
        return try items.map { item in
            guard case .int(let value) = item else {
                throw KeelError(.internalError, "A stored list of sections is damaged.", detail: "stored text: \(text.prefix(200))")
            }
            return Int(value)
        }
    }

    /// The JSON text of section indexes, for ``storedIndexes(_:)``.
    public static func storageText(indexes: [Int]) -> String {
        JSONValue.array(indexes.map { .int(Int64($0)) }).serialized()
    }
}
