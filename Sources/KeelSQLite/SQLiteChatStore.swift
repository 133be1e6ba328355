import Foundation
import GRDB
import KeelCore

/// Chats in SQLite. Every write runs in one `BEGIN IMMEDIATE` transaction
/// that first finds the chat: a message is never written to a chat deleted
/// meanwhile, and the chat's count moves with the insert that causes it.
struct SQLiteChatStore: ChatStore {
    let pool: DatabasePool

    static let chatColumns = "id, session_id, title, message_count, created_at, updated_at"
    static let messageColumns = "id, chat_id, seq, role, content, status, job_id, attempt, metadata, created_at"

    func createChat(_ chat: Chat) async throws {
        try await withStoreErrors {
            try await self.pool.write { db in
                try db.executeCached(
                    sql: "INSERT INTO keel_chats (\(Self.chatColumns)) VALUES (?, ?, ?, ?, ?, ?)",
                    arguments: [
                        chat.id, chat.sessionID, chat.title, chat.messageCount, chat.createdAt.millisecondsSince1970,
                        chat.updatedAt.millisecondsSince1970,
                    ]
                )
            }
        }
    }

    func chats(sessionID: String, limit: Int, before: (Date, String)?) async throws -> [Chat] {
        try await withStoreErrors {
            try await self.pool.read { db in
                if let (updatedAt, id) = before {
                    return try Row.fetchAll(
                        cached: db,
                        sql: """
                            SELECT \(Self.chatColumns) FROM keel_chats WHERE session_id = ? AND (updated_at, id) < (?, ?)
                            ORDER BY updated_at DESC, id DESC LIMIT ?
                            """,
                        arguments: [sessionID, updatedAt.millisecondsSince1970, id, limit]
                    ).map(Self.decodeChat)
                }
                return try Row.fetchAll(
                    cached: db,
                    sql: "SELECT \(Self.chatColumns) FROM keel_chats WHERE session_id = ? ORDER BY updated_at DESC, id DESC LIMIT ?",
                    arguments: [sessionID, limit]
                ).map(Self.decodeChat)
            }
        }
    }

    func chat(id: String, sessionID: String) async throws -> Chat? {
        try await withStoreErrors {
            try await self.pool.read { db in
                try Row.fetchOne(
                    cached: db, sql: "SELECT \(Self.chatColumns) FROM keel_chats WHERE id = ? AND session_id = ?", arguments: [id, sessionID]
                ).map(Self.decodeChat)
            }
        }
    }

    func messages(chatID: String, sessionID: String) async throws -> [ChatMessageRecord] {
        try await withStoreErrors {
            try await self.pool.read { db in
                try Row.fetchAll(
                    cached: db,
                    sql: """
                        SELECT m.id, m.chat_id, m.role, m.content, m.status, m.job_id, m.attempt, m.metadata, m.created_at
                        FROM keel_chat_messages m JOIN keel_chats c ON c.id = m.chat_id
                        WHERE m.chat_id = ? AND c.session_id = ?
                        ORDER BY m.created_at, m.seq
                        """,
                    arguments: [chatID, sessionID]
                ).map(Self.decodeMessage)
            }
        }
    }

    func deleteChat(id: String, sessionID: String) async throws -> Bool {
        try await withStoreErrors {
            try await self.pool.write { db in
                try db.executeCached(sql: "DELETE FROM keel_chats WHERE id = ? AND session_id = ?", arguments: [id, sessionID])
                guard db.changesCount == 1 else { return false }
                try db.executeCached(sql: "DELETE FROM keel_chat_messages WHERE chat_id = ?", arguments: [id])
                return true
            }
        }
    }

    func removeOrphaned(limit: Int) async throws -> Int {
        try await withStoreErrors {
            try await self.pool.write { db in
                try removeOrphans(db, table: "keel_chats", children: "keel_chat_messages", childColumn: "chat_id", limit: limit)
            }
        }
    }

    func appendMessage(_ message: ChatMessageRecord, sessionID: String) async throws -> ChatMessageRecord {
        try await withStoreErrors {
            try await self.pool.write { db in
                guard
                    let count = try Int.fetchOne(
                        cached: db, sql: "SELECT message_count FROM keel_chats WHERE id = ? AND session_id = ?",
                        arguments: [message.chatID, sessionID])
                else { throw KeelError.chatNotFound(message.chatID) }
                // Writes are serialised: a message already here was stored by an earlier request.
                if let row = try Row.fetchOne(
                    cached: db,
                    sql: "SELECT id, chat_id, role, content, status, job_id, attempt, metadata, created_at FROM keel_chat_messages WHERE id = ?",
                    arguments: [message.id])
                {
                    let stored = try Self.decodeMessage(row)
                    guard stored.chatID == message.chatID else { throw KeelError.messageOfAnotherChat(message.id) }
                    return stored
                }
                try Self.insert(db, message, seq: count + 1)
                try Self.bump(db, chatID: message.chatID, at: message.createdAt)
                return message
            }
        }
    }

    func recordReply(_ message: ChatMessageRecord) async throws -> Bool {
        guard let jobID = message.jobID else { throw KeelError.replyWithoutJob(message.id) }
        return try await withStoreErrors {
            try await self.pool.write { db in
                guard
                    let count = try Int.fetchOne(
                        cached: db, sql: "SELECT message_count FROM keel_chats WHERE id = ?", arguments: [message.chatID])
                else { return false }
                // The row keeps its first seq when replaced: the seq returned
                // says whether this write inserted it.
                let seq = count + 1
                guard
                    let written = try Int.fetchOne(
                        cached: db,
                        sql: """
                            INSERT INTO keel_chat_messages (\(Self.messageColumns)) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                            ON CONFLICT (chat_id, job_id) DO UPDATE SET
                                content = excluded.content, status = excluded.status, metadata = excluded.metadata, attempt = excluded.attempt
                            WHERE excluded.attempt >= keel_chat_messages.attempt
                            RETURNING seq
                            """,
                        arguments: Self.arguments(message, jobID: jobID, seq: seq)
                    )
                else { return false }
                if written == seq { try Self.bump(db, chatID: message.chatID, at: message.createdAt) }
                return true
            }
        }
    }

    func renameChat(id: String, sessionID: String, title: String, now: Date) async throws -> Bool {
        try await withStoreErrors {
            try await self.pool.write { db in
                try db.executeCached(
                    sql: "UPDATE keel_chats SET title = ?, updated_at = MAX(updated_at, ?) WHERE id = ? AND session_id = ?",
                    arguments: [title, now.millisecondsSince1970, id, sessionID]
                )
                return db.changesCount == 1
            }
        }
    }

    /// One more message: the count grows and `updated_at` moves to the
    /// message's time (never backwards).
    private static func bump(_ db: Database, chatID: String, at date: Date) throws {
        try db.executeCached(
            sql: "UPDATE keel_chats SET message_count = message_count + 1, updated_at = MAX(updated_at, ?) WHERE id = ?",
            arguments: [date.millisecondsSince1970, chatID]
        )
    }

    private static func insert(_ db: Database, _ message: ChatMessageRecord, seq: Int) throws {
        try db.executeCached(
            sql: "INSERT INTO keel_chat_messages (\(Self.messageColumns)) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            arguments: Self.arguments(message, jobID: message.jobID, seq: seq)
        )
    }

    private static func arguments(_ message: ChatMessageRecord, jobID: String?, seq: Int) -> StatementArguments {
        [
            message.id, message.chatID, seq, message.role, message.content, message.status.rawValue, jobID, message.attempt,
            JSONValue.object(message.metadata).serialized(), message.createdAt.millisecondsSince1970,
        ]
    }

    static func decodeChat(_ row: Row) -> Chat {
        Chat(
            id: row["id"], sessionID: row["session_id"], title: row["title"], messageCount: row["message_count"],
            createdAt: Date(millisecondsSince1970: row["created_at"]), updatedAt: Date(millisecondsSince1970: row["updated_at"])
        )
    }

    static func decodeMessage(_ row: Row) throws -> ChatMessageRecord {
        ChatMessageRecord(
            id: row["id"], chatID: row["chat_id"], role: row["role"], content: row["content"],
            status: ChatMessageStatus(rawValue: row["status"]) ?? .failed, jobID: row["job_id"], attempt: row["attempt"],
            metadata: try JSONValue.storedObject(row["metadata"]), createdAt: Date(millisecondsSince1970: row["created_at"])
        )
    }
}
