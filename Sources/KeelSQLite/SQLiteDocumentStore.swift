import Foundation
import GRDB
import KeelCore

/// Documents in SQLite, searched with FTS5 (bm25). An ingest's content is
/// written in one `BEGIN IMMEDIATE` transaction that first checks the
/// document is still the job's, so no reader ever sees half a document.
struct SQLiteDocumentStore: DocumentStore {
    let pool: DatabasePool

    static let columns = """
        id, session_id, upload_id, filename, format, media_type, byte_size, status, title, job_id, ingest_attempt, error_code, error_message,
        section_count, character_count, passage_count, page_count, created_at, updated_at
        """

    func createDocument(_ document: Document) async throws -> (document: Document, created: Bool) {
        try await withStoreErrors {
            try await self.pool.write { db in
                if let existing = try Row.fetchOne(
                    cached: db, sql: "SELECT \(Self.columns) FROM keel_documents WHERE session_id = ? AND upload_id = ?",
                    arguments: [document.sessionID, document.uploadID]
                ).map(Self.decode) {
                    return (existing, false)
                }
                try db.executeCached(
                    sql: """
                        INSERT INTO keel_documents (id, session_id, upload_id, filename, format, media_type, byte_size, status, title, job_id,
                            error_code, error_message, section_count, character_count, passage_count, page_count, created_at, updated_at)
                        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                        """,
                    arguments: [
                        document.id, document.sessionID, document.uploadID, document.filename, document.format, document.mediaType,
                        document.byteSize, document.status.rawValue, document.title, document.jobID, document.errorCode, document.errorMessage,
                        document.sectionCount, document.characterCount, document.passageCount, document.pageCount,
                        document.createdAt.millisecondsSince1970, document.updatedAt.millisecondsSince1970,
                    ]
                )
                return (document, true)
            }
        }
    }

    func document(id: String, sessionID: String) async throws -> Document? {
        try await withStoreErrors {
            try await self.pool.read { db in
                try Row.fetchOne(
                    cached: db, sql: "SELECT \(Self.columns) FROM keel_documents WHERE id = ? AND session_id = ?", arguments: [id, sessionID]
                ).map(Self.decode)
            }
        }
    }

    func documents(sessionID: String, after: DocumentCursor?, limit: Int) async throws -> DocumentPage {
        try await withStoreErrors {
            try await self.pool.read { db in
                let rows: [Row]
                if let after {
                    rows = try Row.fetchAll(
                        cached: db,
                        sql: """
                            SELECT \(Self.columns) FROM keel_documents WHERE session_id = ? AND (created_at, id) < (?, ?)
                            ORDER BY created_at DESC, id DESC LIMIT ?
                            """,
                        arguments: [sessionID, after.createdAt, after.id, limit + 1]
                    )
                } else {
                    rows = try Row.fetchAll(
                        cached: db,
                        sql: "SELECT \(Self.columns) FROM keel_documents WHERE session_id = ? ORDER BY created_at DESC, id DESC LIMIT ?",
                        arguments: [sessionID, limit + 1]
                    )
                }
                let documents = rows.prefix(limit).map(Self.decode)
                let next = rows.count > limit ? documents.last.map { DocumentCursor(createdAt: $0.createdAt.millisecondsSince1970, id: $0.id) } : nil
                return DocumentPage(documents: Array(documents), next: next)
            }
        }
    }

    func assignIngest(documentID: String, jobID: String, replacing previousJobID: String?, now: Date) async throws -> Document? {
        try await withStoreErrors {
            try await self.pool.write { db in
                try db.executeCached(
                    sql: """
                        UPDATE keel_documents SET job_id = ?, ingest_attempt = 0, status = 'processing', error_code = NULL, error_message = NULL,
                            updated_at = ?
                        WHERE id = ? AND job_id IS ? AND (job_id IS NULL OR status = 'failed')
                        """,
                    arguments: [jobID, now.millisecondsSince1970, documentID, previousJobID]
                )
                guard db.changesCount == 1 else { return nil }
                return try Row.fetchOne(cached: db, sql: "SELECT \(Self.columns) FROM keel_documents WHERE id = ?", arguments: [documentID])
                    .map(Self.decode)
            }
        }
    }

    func claimIngest(documentID: String, jobID: String, attempt: Int, now: Date) async throws -> Bool {
        try await withStoreErrors {
            try await self.pool.write { db in
                try db.executeCached(
                    sql: """
                        UPDATE keel_documents SET ingest_attempt = ?, updated_at = ?
                        WHERE id = ? AND job_id = ? AND ingest_attempt <= ? AND status = 'processing'
                        """,
                    arguments: [attempt, now.millisecondsSince1970, documentID, jobID, attempt]
                )
                return db.changesCount == 1
            }
        }
    }

    func completeIngest(documentID: String, jobID: String, attempt: Int, content: DocumentContent, now: Date) async throws -> Bool {
        try await withStoreErrors {
            try await self.pool.write { db in
                guard
                    let sessionID = try String.fetchOne(
                        cached: db, sql: "SELECT session_id FROM keel_documents WHERE id = ? AND job_id = ? AND ingest_attempt = ?",
                        arguments: [documentID, jobID, attempt])
                else { return false }
                try Self.removeContent(db, documentID: documentID)
                for section in content.sections {
                    try db.executeCached(
                        sql: """
                            INSERT INTO keel_document_sections (document_id, idx, title, level, path, body, character_count, first_page, last_page)
                            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                            """,
                        arguments: [
                            documentID, section.index, section.title, section.level, DocumentSection.encodePath(section.path), section.text,
                            section.characterCount, section.firstPage, section.lastPage,
                        ]
                    )
                }
                for passage in content.passages {
                    try db.executeCached(
                        sql: """
                            INSERT INTO keel_document_passages (document_id, session_id, section_index, ordinal, heading, body)
                            VALUES (?, ?, ?, ?, ?, ?)
                            """,
                        arguments: [documentID, sessionID, passage.sectionIndex, passage.ordinal, passage.heading, passage.text]
                    )
                    try db.executeCached(
                        sql: "INSERT INTO keel_passages_fts (rowid, heading, body) VALUES (?, ?, ?)",
                        arguments: [db.lastInsertedRowID, passage.heading, passage.text]
                    )
                }
                try db.executeCached(
                    sql: """
                        UPDATE keel_documents SET status = 'ready', title = ?, page_count = ?, section_count = ?, character_count = ?,
                            passage_count = ?, error_code = NULL, error_message = NULL, updated_at = ?
                        WHERE id = ?
                        """,
                    arguments: [
                        content.title, content.pageCount, content.sections.count, content.characterCount, content.passages.count,
                        now.millisecondsSince1970, documentID,
                    ]
                )
                return true
            }
        }
    }

    func failIngest(documentID: String, jobID: String, attempt: Int?, code: String, message: String, now: Date) async throws -> Bool {
        try await withStoreErrors {
            try await self.pool.write { db in
                guard
                    try Int.fetchOne(
                        cached: db,
                        sql: "SELECT 1 FROM keel_documents WHERE id = ? AND job_id = ? AND status != 'ready' AND (? IS NULL OR ingest_attempt = ?)",
                        arguments: [documentID, jobID, attempt, attempt]) != nil
                else { return false }
                try Self.removeContent(db, documentID: documentID)
                try db.executeCached(
                    sql: """
                        UPDATE keel_documents SET status = 'failed', error_code = ?, error_message = ?, section_count = 0, character_count = 0,
                            passage_count = 0, updated_at = ?
                        WHERE id = ?
                        """,
                    arguments: [code, message, now.millisecondsSince1970, documentID]
                )
                return true
            }
        }
    }

    func outline(documentID: String) async throws -> [DocumentSection] {
        try await withStoreErrors {
            try await self.pool.read { db in
                try Row.fetchAll(
                    cached: db,
                    sql: """
                        SELECT idx, title, level, path, character_count, first_page, last_page FROM keel_document_sections
                        WHERE document_id = ? ORDER BY idx
                        """,
                    arguments: [documentID]
                ).map { row in
                    DocumentSection(
                        index: row["idx"], title: row["title"], level: row["level"], path: DocumentSection.decodePath(row["path"]), text: "",
                        characterCount: row["character_count"], firstPage: row["first_page"], lastPage: row["last_page"]
                    )
                }
            }
        }
    }

    func section(documentID: String, index: Int) async throws -> DocumentSection? {
        try await withStoreErrors {
            try await self.pool.read { db in
                try Row.fetchOne(
                    cached: db,
                    sql: """
                        SELECT idx, title, level, path, body, character_count, first_page, last_page FROM keel_document_sections
                        WHERE document_id = ? AND idx = ?
                        """,
                    arguments: [documentID, index]
                ).map { row in
                    DocumentSection(
                        index: row["idx"], title: row["title"], level: row["level"], path: DocumentSection.decodePath(row["path"]), text: row["body"],
                        characterCount: row["character_count"], firstPage: row["first_page"], lastPage: row["last_page"]
                    )
                }
            }
        }
    }

    func deleteDocument(id: String, sessionID: String) async throws -> Bool {
        try await withStoreErrors {
            try await self.pool.write { db in
                guard
                    try Int.fetchOne(cached: db, sql: "SELECT 1 FROM keel_documents WHERE id = ? AND session_id = ?", arguments: [id, sessionID])
                        != nil
                else { return false }
                try Self.removeContent(db, documentID: id)
                try db.executeCached(sql: "DELETE FROM keel_documents WHERE id = ?", arguments: [id])
                return true
            }
        }
    }

    func search(_ query: DocumentSearch) async throws -> [DocumentSearchHit] {
        guard let match = FullTextQuery(query.text).fts5(match: query.match), query.limit > 0 else { return [] }
        let restrict = query.documentIDs.isEmpty ? "" : "AND p.document_id IN (\(Array(repeating: "?", count: query.documentIDs.count).joined(separator: ", ")))"
        let arguments: StatementArguments =
            [DocumentSearch.highlightStart, DocumentSearch.highlightEnd, match, query.sessionID] + StatementArguments(query.documentIDs)
            + [query.limit]
        return try await withStoreErrors {
            try await self.pool.read { db in
                // The session filter is part of the query: another session's
                // passages are never returned (FTS5 finds the matches of
                // every session, then the filter keeps this one's).
                try Row.fetchAll(
                    cached: db,
                    sql: """
                        SELECT p.document_id, p.section_index, p.heading, p.body, d.title AS document_title, d.filename, s.title AS section_title,
                            snippet(keel_passages_fts, 1, ?, ?, '…', 24) AS snippet, bm25(keel_passages_fts, 2.0, 1.0) AS rank
                        FROM keel_passages_fts
                        JOIN keel_document_passages p ON p.id = keel_passages_fts.rowid
                        JOIN keel_documents d ON d.id = p.document_id
                        JOIN keel_document_sections s ON s.document_id = p.document_id AND s.idx = p.section_index
                        WHERE keel_passages_fts MATCH ? AND p.session_id = ? AND d.status = 'ready' \(restrict)
                        ORDER BY rank, p.id LIMIT ?
                        """,
                    arguments: arguments
                ).map { row in
                    DocumentSearchHit(
                        documentID: row["document_id"], documentTitle: row["document_title"], filename: row["filename"],
                        sectionIndex: row["section_index"], sectionTitle: row["section_title"], heading: row["heading"], snippet: row["snippet"],
                        text: row["body"], score: -(row["rank"] as Double)
                    )
                }
            }
        }
    }

    func removeOrphaned(limit: Int) async throws -> Int {
        try await withStoreErrors {
            try await self.pool.write { db in
                let ids = try String.fetchAll(
                    cached: db,
                    sql: """
                        SELECT id FROM keel_documents d WHERE NOT EXISTS (SELECT 1 FROM keel_sessions s WHERE s.id = d.session_id) LIMIT ?
                        """,
                    arguments: [limit]
                )
                for id in ids {
                    try Self.removeContent(db, documentID: id)
                    try db.executeCached(sql: "DELETE FROM keel_documents WHERE id = ?", arguments: [id])
                }
                return ids.count
            }
        }
    }

    /// Removes a document's sections and passages, and the passages from the
    /// full-text index (an external-content index is told what it held).
    private static func removeContent(_ db: Database, documentID: String) throws {
        try db.executeCached(
            sql: """
                INSERT INTO keel_passages_fts (keel_passages_fts, rowid, heading, body)
                SELECT 'delete', id, heading, body FROM keel_document_passages WHERE document_id = ?
                """,
            arguments: [documentID]
        )
        try db.executeCached(sql: "DELETE FROM keel_document_passages WHERE document_id = ?", arguments: [documentID])
        try db.executeCached(sql: "DELETE FROM keel_document_sections WHERE document_id = ?", arguments: [documentID])
    }

    static func decode(_ row: Row) -> Document {
        Document(
            id: row["id"], sessionID: row["session_id"], uploadID: row["upload_id"], filename: row["filename"], format: row["format"],
            mediaType: row["media_type"], byteSize: row["byte_size"],
            status: DocumentStatus(rawValue: row["status"]) ?? .failed, title: row["title"], jobID: row["job_id"], ingestAttempt: row["ingest_attempt"],
            errorCode: row["error_code"], errorMessage: row["error_message"], sectionCount: row["section_count"],
            characterCount: row["character_count"], passageCount: row["passage_count"], pageCount: row["page_count"],
            createdAt: Date(millisecondsSince1970: row["created_at"]), updatedAt: Date(millisecondsSince1970: row["updated_at"])
        )
    }
}
