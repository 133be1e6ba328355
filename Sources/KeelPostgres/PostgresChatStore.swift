import Foundation
import KeelCore
import Logging
import PostgresNIO

/// Chats in PostgreSQL. Every message write first updates or locks its
/// chat's row, so writes to one chat take turns: a message's place (`seq`)
/// and the chat's count move together, and a chat being deleted waits for
/// them or turns them away.
struct PostgresChatStore: ChatStore, PostgresRole {
    let client: PostgresClient
    let logger: Logger
    let started: StartSignal

    static let chatColumns = "id, session_id, title, message_count, created_at, updated_at"

    func createChat(_ chat: Chat) async throws {
        try await self.operation {
            try await self.client.query(
                """
                INSERT INTO keel_chats (id, session_id, title, message_count, created_at, updated_at)
                VALUES (\(chat.id), \(chat.sessionID), \(chat.title), \(chat.messageCount), \(chat.createdAt.millisecondsSince1970),
                    \(chat.updatedAt.millisecondsSince1970))
                """,
                logger: self.logger
            )
        }
    }

    func chats(sessionID: String, limit: Int, before: (Date, String)?) async throws -> [Chat] {
        try await self.operation {
            if let (updatedAt, id) = before {
                return try await Self.fetchChats(
                    self.client.query(
                        """
                        SELECT \(unescaped: Self.chatColumns) FROM keel_chats
                        WHERE session_id = \(sessionID) AND (updated_at, id) < (\(updatedAt.millisecondsSince1970), \(id))
                        ORDER BY updated_at DESC, id DESC LIMIT \(limit)
                        """,
                        logger: self.logger
                    )
                )
            }
            return try await Self.fetchChats(
                self.client.query(
                    """
                    SELECT \(unescaped: Self.chatColumns) FROM keel_chats WHERE session_id = \(sessionID)
                    ORDER BY updated_at DESC, id DESC LIMIT \(limit)
                    """,
                    logger: self.logger
                )
            )
        }
    }

    func chat(id: String, sessionID: String) async throws -> Chat? {
        try await self.operation {
            try await Self.fetchChats(
                self.client.query(
                    "SELECT \(unescaped: Self.chatColumns) FROM keel_chats WHERE id = \(id) AND session_id = \(sessionID)", logger: self.logger)
            ).first
        }
    }

    func messages(chatID: String, sessionID: String) async throws -> [ChatMessageRecord] {
        try await self.operation {
            try await Self.fetchMessages(
                self.client.query(
                    """
                    SELECT m.id, m.chat_id, m.role, m.content, m.status, m.job_id, m.attempt, m.metadata, m.created_at
                    FROM keel_chat_messages m JOIN keel_chats c ON c.id = m.chat_id
                    WHERE m.chat_id = \(chatID) AND c.session_id = \(sessionID)
                    ORDER BY m.created_at, m.seq
                    """,
                    logger: self.logger
                )
            )
        }
    }

    func deleteChat(id: String, sessionID: String) async throws -> Bool {
        // Two statements: the first waits for a message write holding the
        // chat's row, so the second (a new snapshot) sees that message too.
        try await self.transaction { connection in
            var deleted = false
            for try await _ in try await connection.query(
                "DELETE FROM keel_chats WHERE id = \(id) AND session_id = \(sessionID) RETURNING 1", logger: self.logger)
            {
                deleted = true
            }
            guard deleted else { return false }
            try await connection.query("DELETE FROM keel_chat_messages WHERE chat_id = \(id)", logger: self.logger)
            return true
        }
    }

    func removeOrphaned(limit: Int) async throws -> Int {
        try await self.removeOrphans(table: "keel_chats", children: "keel_chat_messages", childColumn: "chat_id", limit: limit)
    }

    func appendMessage(_ message: ChatMessageRecord, sessionID: String) async throws -> ChatMessageRecord {
        let metadata = JSONValue.object(message.metadata).serialized()
        let createdAt = message.createdAt.millisecondsSince1970
        let stored = try await self.transaction { connection -> ChatMessageRecord? in
            // The chat's row lock: messages to one chat take turns (the new
            // count is the message's place), and a request racing this one
            // with the same message id sees its row once it has the lock.
            var count: Int64?
            for try await value in try await connection.query(
                "SELECT message_count FROM keel_chats WHERE id = \(message.chatID) AND session_id = \(sessionID) FOR UPDATE",
                logger: self.logger
            ).decode(Int64.self) {
                count = value
            }
            guard let count else { throw KeelError.chatNotFound(message.chatID) }
            var inserted = false
            for try await _ in try await connection.query(
                """
                INSERT INTO keel_chat_messages (id, chat_id, seq, role, content, status, job_id, attempt, metadata, created_at)
                VALUES (\(message.id), \(message.chatID), \(count + 1), \(message.role), \(message.content), \(message.status.rawValue),
                    \(message.jobID), \(message.attempt), \(metadata), \(createdAt))
                ON CONFLICT (id) DO NOTHING
                RETURNING 1
                """,
                logger: self.logger
            ) {
                inserted = true
            }
            guard inserted else {
                let existing = try await Self.fetchMessages(
                    connection.query(
                        "SELECT id, chat_id, role, content, status, job_id, attempt, metadata, created_at FROM keel_chat_messages WHERE id = \(message.id)",
                        logger: self.logger))
                guard let first = existing.first, first.chatID == message.chatID else { throw KeelError.messageOfAnotherChat(message.id) }
                return first
            }
            try await connection.query(
                "UPDATE keel_chats SET message_count = message_count + 1, updated_at = GREATEST(updated_at, \(createdAt)) WHERE id = \(message.chatID)",
                logger: self.logger
            )
            return nil
        }
        return stored ?? message
    }

    func recordReply(_ message: ChatMessageRecord) async throws -> Bool {
        guard let jobID = message.jobID else { throw KeelError.replyWithoutJob(message.id) }
        let metadata = JSONValue.object(message.metadata).serialized()
        let createdAt = message.createdAt.millisecondsSince1970
        return try await self.transaction { connection in
            // The chat's row lock: replies to one chat take turns, and a
            // chat deleted meanwhile is not found.
            var count: Int64?
            for try await value in try await connection.query(
                "SELECT message_count FROM keel_chats WHERE id = \(message.chatID) FOR UPDATE", logger: self.logger
            ).decode(Int64.self) {
                count = value
            }
            guard let count else { return false }
            // A replaced row keeps its first seq: the seq returned says whether this write inserted it.
            let seq = count + 1
            var written: Int64?
            for try await value in try await connection.query(
                """
                INSERT INTO keel_chat_messages (id, chat_id, seq, role, content, status, job_id, attempt, metadata, created_at)
                VALUES (\(message.id), \(message.chatID), \(seq), \(message.role), \(message.content), \(message.status.rawValue), \(jobID),
                    \(message.attempt), \(metadata), \(createdAt))
                ON CONFLICT (chat_id, job_id) DO UPDATE SET
                    content = excluded.content, status = excluded.status, metadata = excluded.metadata, attempt = excluded.attempt
                WHERE excluded.attempt >= keel_chat_messages.attempt
                RETURNING seq
                """,
                logger: self.logger
            ).decode(Int64.self) {
                written = value
            }
            guard let written else { return false }
            if written == seq {
                try await connection.query(
                    """
                    UPDATE keel_chats SET message_count = message_count + 1, updated_at = GREATEST(updated_at, \(createdAt))
                    WHERE id = \(message.chatID)
                    """,
                    logger: self.logger
                )
            }
            return true
        }
    }

    func renameChat(id: String, sessionID: String, title: String, now: Date) async throws -> Bool {
        try await self.operation {
            var renamed = false
            for try await _ in try await self.client.query(
                """
                UPDATE keel_chats SET title = \(title), updated_at = GREATEST(updated_at, \(now.millisecondsSince1970))
                WHERE id = \(id) AND session_id = \(sessionID)
                RETURNING 1
                """,
                logger: self.logger
            ) {
                renamed = true
            }
            return renamed
        }
    }

    private static func fetchChats(_ rows: PostgresRowSequence) async throws -> [Chat] {
        var chats: [Chat] = []
        for try await row in rows {
            let columns = row.makeRandomAccess()
            chats.append(
                Chat(
                    id: try columns["id"].decode(String.self), sessionID: try columns["session_id"].decode(String.self),
                    title: try columns["title"].decode(String.self), messageCount: Int(try columns["message_count"].decode(Int64.self)),
                    createdAt: Date(millisecondsSince1970: try columns["created_at"].decode(Int64.self)),
                    updatedAt: Date(millisecondsSince1970: try columns["updated_at"].decode(Int64.self))
                )
            )
        }
        return chats
    }

    private static func fetchMessages(_ rows: PostgresRowSequence) async throws -> [ChatMessageRecord] {
        var messages: [ChatMessageRecord] = []
        for try await row in rows {
            let columns = row.makeRandomAccess()
            messages.append(
                ChatMessageRecord(
                    id: try columns["id"].decode(String.self), chatID: try columns["chat_id"].decode(String.self),
                    role: try columns["role"].decode(String.self), content: try columns["content"].decode(String.self),
                    status: ChatMessageStatus(rawValue: try columns["status"].decode(String.self)) ?? .failed,
                    jobID: try columns["job_id"].decode(String?.self), attempt: Int(try columns["attempt"].decode(Int64.self)),
                    metadata: try JSONValue.storedObject(try columns["metadata"].decode(String.self)),
                    createdAt: Date(millisecondsSince1970: try columns["created_at"].decode(Int64.self))
                )
            )
        }
        return messages
    }
}
