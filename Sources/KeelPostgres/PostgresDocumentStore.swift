import Foundation
import KeelCore
import Logging
import PostgresNIO

/// Documents in PostgreSQL, searched with a generated `tsvector` column under
/// a GIN index (`websearch_to_tsquery`, ranked by `ts_rank_cd`). An ingest's
/// content is written in one transaction that locks the document's row and
/// checks it is still the job's, so no reader sees half a document.
struct PostgresDocumentStore: DocumentStore, PostgresRole {
    let client: PostgresClient
    let logger: Logger
    let started: StartSignal

    static let columns = """
        id, session_id, upload_id, filename, format, media_type, byte_size, status, title, job_id, ingest_attempt, error_code, error_message,
        section_count, character_count, passage_count, page_count, created_at, updated_at
        """

    /// Rows per multi-row insert (one round trip each).
    static let batchSize = 500

    func createDocument(_ document: Document) async throws -> (document: Document, created: Bool) {
        try await self.transaction { connection in
            let inserted = try await Self.fetch(
                connection.query(
                    """
                    INSERT INTO keel_documents (id, session_id, upload_id, filename, format, media_type, byte_size, status, title, job_id,
                        error_code, error_message, section_count, character_count, passage_count, page_count, created_at, updated_at)
                    VALUES (\(document.id), \(document.sessionID), \(document.uploadID), \(document.filename), \(document.format),
                        \(document.mediaType), \(document.byteSize), \(document.status.rawValue), \(document.title), \(document.jobID),
                        \(document.errorCode), \(document.errorMessage), \(document.sectionCount), \(document.characterCount),
                        \(document.passageCount), \(document.pageCount), \(document.createdAt.millisecondsSince1970),
                        \(document.updatedAt.millisecondsSince1970))
                    ON CONFLICT (session_id, upload_id) DO NOTHING
                    RETURNING \(unescaped: Self.columns)
                    """,
                    logger: self.logger
                )
            )
            if let created = inserted.first { return (created, true) }
            let existing = try await Self.fetch(
                connection.query(
                    """
                    SELECT \(unescaped: Self.columns) FROM keel_documents WHERE session_id = \(document.sessionID) AND upload_id = \(document.uploadID)
                    """,
                    logger: self.logger
                )
            )
            guard let document = existing.first else { throw KeelError(.internalError, "A document vanished while it was created.") }
            return (document, false)
        }
    }

    func document(id: String, sessionID: String) async throws -> Document? {
        try await self.operation {
            try await Self.fetch(
                self.client.query(
                    "SELECT \(unescaped: Self.columns) FROM keel_documents WHERE id = \(id) AND session_id = \(sessionID)", logger: self.logger)
            ).first
        }
    }

    func documents(sessionID: String, after: DocumentCursor?, limit: Int) async throws -> DocumentPage {
        try await self.operation {
            let rows: [Document]
            if let after {
                rows = try await Self.fetch(
                    self.client.query(
                        """
                        SELECT \(unescaped: Self.columns) FROM keel_documents
                        WHERE session_id = \(sessionID) AND (created_at, id) < (\(after.createdAt), \(after.id))
                        ORDER BY created_at DESC, id DESC LIMIT \(limit + 1)
                        """,
                        logger: self.logger
                    )
                )
            } else {
                rows = try await Self.fetch(
                    self.client.query(
                        """
                        SELECT \(unescaped: Self.columns) FROM keel_documents WHERE session_id = \(sessionID)
                        ORDER BY created_at DESC, id DESC LIMIT \(limit + 1)
                        """,
                        logger: self.logger
                    )
                )
            }
            let documents = Array(rows.prefix(limit))
            let next = rows.count > limit ? documents.last.map { DocumentCursor(createdAt: $0.createdAt.millisecondsSince1970, id: $0.id) } : nil
            return DocumentPage(documents: documents, next: next)
        }
    }

    func assignIngest(documentID: String, jobID: String, replacing previousJobID: String?, now: Date) async throws -> Document? {
        try await self.operation {
            try await Self.fetch(
                self.client.query(
                    """
                    UPDATE keel_documents SET job_id = \(jobID), ingest_attempt = 0, status = 'processing', error_code = NULL, error_message = NULL,
                        updated_at = \(now.millisecondsSince1970)
                    WHERE id = \(documentID) AND job_id IS NOT DISTINCT FROM \(previousJobID) AND (job_id IS NULL OR status = 'failed')
                    RETURNING \(unescaped: Self.columns)
                    """,
                    logger: self.logger
                )
            ).first
        }
    }

    func claimIngest(documentID: String, jobID: String, attempt: Int, now: Date) async throws -> Bool {
        try await self.operation {
            var claimed = false
            for try await _ in try await self.client.query(
                """
                UPDATE keel_documents SET ingest_attempt = \(attempt), updated_at = \(now.millisecondsSince1970)
                WHERE id = \(documentID) AND job_id = \(jobID) AND ingest_attempt <= \(attempt) AND status = 'processing'
                RETURNING 1
                """,
                logger: self.logger
            ) {
                claimed = true
            }
            return claimed
        }
    }

    func completeIngest(documentID: String, jobID: String, attempt: Int, content: DocumentContent, now: Date) async throws -> Bool {
        try await self.transaction { connection in
            var sessionID: String?
            for try await value in try await connection.query(
                """
                SELECT session_id FROM keel_documents WHERE id = \(documentID) AND job_id = \(jobID) AND ingest_attempt = \(attempt) FOR UPDATE
                """,
                logger: self.logger
            ).decode(String.self) {
                sessionID = value
            }
            guard let sessionID else { return false }
            try await Self.removeContent(connection, documentID: documentID, logger: self.logger)
            for start in stride(from: 0, to: content.sections.count, by: Self.batchSize) {
                let batch = content.sections[start..<min(start + Self.batchSize, content.sections.count)]
                // Arrays cannot hold NULL here: -1 stands for "no page".
                try await connection.query(
                    """
                    INSERT INTO keel_document_sections (document_id, idx, title, level, path, body, character_count, first_page, last_page)
                    SELECT \(documentID), s.idx, s.title, s.level, s.path, s.body, s.chars, NULLIF(s.first_page, -1), NULLIF(s.last_page, -1)
                    FROM UNNEST(\(batch.map(\.index))::bigint[], \(batch.map(\.title))::text[], \(batch.map(\.level))::bigint[],
                        \(batch.map { DocumentSection.encodePath($0.path) })::text[], \(batch.map(\.text))::text[],
                        \(batch.map(\.characterCount))::bigint[], \(batch.map { $0.firstPage ?? -1 })::bigint[], \(batch.map { $0.lastPage ?? -1 })::bigint[])
                        AS s(idx, title, level, path, body, chars, first_page, last_page)
                    """,
                    logger: self.logger
                )
            }
            for start in stride(from: 0, to: content.passages.count, by: Self.batchSize) {
                let batch = content.passages[start..<min(start + Self.batchSize, content.passages.count)]
                try await connection.query(
                    """
                    INSERT INTO keel_document_passages (document_id, session_id, section_index, ordinal, heading, body)
                    SELECT \(documentID), \(sessionID), p.section_index, p.ordinal, p.heading, p.body
                    FROM UNNEST(\(batch.map(\.sectionIndex))::bigint[], \(batch.map(\.ordinal))::bigint[], \(batch.map(\.heading))::text[],
                        \(batch.map(\.text))::text[]) WITH ORDINALITY AS p(section_index, ordinal, heading, body, n)
                    ORDER BY p.n
                    """,
                    logger: self.logger
                )
            }
            try await connection.query(
                """
                UPDATE keel_documents SET status = 'ready', title = \(content.title), page_count = \(content.pageCount),
                    section_count = \(content.sections.count), character_count = \(content.characterCount),
                    passage_count = \(content.passages.count), error_code = NULL, error_message = NULL, updated_at = \(now.millisecondsSince1970)
                WHERE id = \(documentID)
                """,
                logger: self.logger
            )
            return true
        }
    }

    func failIngest(documentID: String, jobID: String, attempt: Int?, code: String, message: String, now: Date) async throws -> Bool {
        try await self.transaction { connection in
            var owned = false
            for try await _ in try await connection.query(
                """
                SELECT 1 FROM keel_documents WHERE id = \(documentID) AND job_id = \(jobID) AND status != 'ready'
                    AND (\(attempt)::bigint IS NULL OR ingest_attempt = \(attempt)) FOR UPDATE
                """,
                logger: self.logger
            ) {
                owned = true
            }
            guard owned else { return false }
            try await Self.removeContent(connection, documentID: documentID, logger: self.logger)
            try await connection.query(
                """
                UPDATE keel_documents SET status = 'failed', error_code = \(code), error_message = \(message), section_count = 0,
                    character_count = 0, passage_count = 0, updated_at = \(now.millisecondsSince1970)
                WHERE id = \(documentID)
                """,
                logger: self.logger
            )
            return true
        }
    }

    func outline(documentID: String) async throws -> [DocumentSection] {
        try await self.operation {
            try await Self.sections(
                self.client.query(
                    """
                    SELECT idx, title, level, path, '' AS body, character_count, first_page, last_page FROM keel_document_sections
                    WHERE document_id = \(documentID) ORDER BY idx
                    """,
                    logger: self.logger
                )
            )
        }
    }

    func section(documentID: String, index: Int) async throws -> DocumentSection? {
        try await self.operation {
            try await Self.sections(
                self.client.query(
                    """
                    SELECT idx, title, level, path, body, character_count, first_page, last_page FROM keel_document_sections
                    WHERE document_id = \(documentID) AND idx = \(index)
                    """,
                    logger: self.logger
                )
            ).first
        }
    }

    func deleteDocument(id: String, sessionID: String) async throws -> Bool {
        try await self.transaction { connection in
            var found = false
            for try await _ in try await connection.query(
                "DELETE FROM keel_documents WHERE id = \(id) AND session_id = \(sessionID) RETURNING 1", logger: self.logger
            ) {
                found = true
            }
            if found { try await Self.removeContent(connection, documentID: id, logger: self.logger) }
            return found
        }
    }

    func search(_ query: DocumentSearch) async throws -> [DocumentSearchHit] {
        let parsed = FullTextQuery(query.text)
        guard !parsed.isEmpty, query.limit > 0 else { return [] }
        // `all`: PostgreSQL's own web-search parser. `any`: the query's words
        // (letters and digits only, so safe as to_tsquery operands) OR-ed.
        let tsquery: String
        let argument: String
        switch query.match {
        case .all:
            tsquery = "websearch_to_tsquery('english'::regconfig, $1)"
            // PostgreSQL text cannot hold NUL; no control character means anything here.
            argument = String(String.UnicodeScalarView(query.text.unicodeScalars.map { $0.properties.generalCategory == .control ? " " : $0 }))
        case .any:
            tsquery = "to_tsquery('english'::regconfig, $1)"
            argument = parsed.anyWords.joined(separator: " | ")
        }
        let options = "StartSel=\"\(DocumentSearch.highlightStart)\", StopSel=\"\(DocumentSearch.highlightEnd)\", MaxWords=30, MinWords=12, MaxFragments=1"
        var bindings = PostgresBindings()
        bindings.append(argument)
        bindings.append(query.sessionID)
        bindings.append(query.limit)
        bindings.append(options)
        var restrict = ""
        if !query.documentIDs.isEmpty {
            bindings.append(query.documentIDs)
            restrict = "AND p.document_id = ANY($5)"
        }
        // The session filter is inside the query (with an index of its own,
        // the planner starts from the session's passages and rechecks the
        // match); another session's passages are never returned. Headlines
        // (costly) are made only for the passages returned.
        let sql = """
            WITH q AS (SELECT \(tsquery) AS query),
            hits AS (
                SELECT p.id, ts_rank_cd(p.search, q.query) AS rank FROM keel_document_passages p
                JOIN keel_documents d ON d.id = p.document_id AND d.status = 'ready', q
                WHERE p.session_id = $2 AND p.search @@ q.query \(restrict)
                ORDER BY rank DESC, p.id LIMIT $3
            )
            SELECT p.document_id, p.section_index, p.heading, p.body, d.title AS document_title, d.filename, s.title AS section_title,
                ts_headline('english'::regconfig, p.body, q.query, $4) AS snippet, hits.rank::float8 AS rank
            FROM hits
            JOIN keel_document_passages p ON p.id = hits.id
            JOIN keel_documents d ON d.id = p.document_id
            JOIN keel_document_sections s ON s.document_id = p.document_id AND s.idx = p.section_index,
            q
            ORDER BY hits.rank DESC, p.id
            """
        // Keel's connections start with enable_bitmapscan = off (for the job
        // queue's sake), but a GIN index is read only by a bitmap scan: without
        // it a rare word scanned every passage (323 ms p99 against 6 ms in
        // psql over 100,000 passages). The search turns it back on for itself.
        return try await self.transaction { connection in
            try await connection.query("SET LOCAL enable_bitmapscan = on", logger: self.logger)
            var hits: [DocumentSearchHit] = []
            for try await row in try await connection.query(PostgresQuery(unsafeSQL: sql, binds: bindings), logger: self.logger) {
                let columns = row.makeRandomAccess()
                hits.append(
                    DocumentSearchHit(
                        documentID: try columns["document_id"].decode(String.self),
                        documentTitle: try columns["document_title"].decode(String?.self),
                        filename: try columns["filename"].decode(String.self),
                        sectionIndex: Int(try columns["section_index"].decode(Int64.self)),
                        sectionTitle: try columns["section_title"].decode(String.self),
                        heading: try columns["heading"].decode(String.self),
                        snippet: try columns["snippet"].decode(String.self),
                        text: try columns["body"].decode(String.self),
                        score: try columns["rank"].decode(Double.self)
                    )
                )
            }
            return hits
        }
    }

    func removeOrphaned(limit: Int) async throws -> Int {
        try await self.transaction { connection in
            var ids: [String] = []
            for try await id in try await connection.query(
                """
                DELETE FROM keel_documents WHERE id IN (
                    SELECT id FROM keel_documents d WHERE NOT EXISTS (SELECT 1 FROM keel_sessions s WHERE s.id = d.session_id)
                    LIMIT \(limit) FOR UPDATE SKIP LOCKED
                ) RETURNING id
                """,
                logger: self.logger
            ).decode(String.self) {
                ids.append(id)
            }
            for id in ids { try await Self.removeContent(connection, documentID: id, logger: self.logger) }
            return ids.count
        }
    }

    private static func removeContent(_ connection: PostgresConnection, documentID: String, logger: Logger) async throws {
        try await connection.query("DELETE FROM keel_document_passages WHERE document_id = \(documentID)", logger: logger)
        try await connection.query("DELETE FROM keel_document_sections WHERE document_id = \(documentID)", logger: logger)
    }

    private static func sections(_ rows: PostgresRowSequence) async throws -> [DocumentSection] {
        var sections: [DocumentSection] = []
        for try await row in rows {
            let columns = row.makeRandomAccess()
            sections.append(
                DocumentSection(
                    index: Int(try columns["idx"].decode(Int64.self)),
                    title: try columns["title"].decode(String.self),
                    level: Int(try columns["level"].decode(Int64.self)),
                    path: DocumentSection.decodePath(try columns["path"].decode(String.self)),
                    text: try columns["body"].decode(String.self),
                    characterCount: Int(try columns["character_count"].decode(Int64.self)),
                    firstPage: try columns["first_page"].decode(Int64?.self).map(Int.init),
                    lastPage: try columns["last_page"].decode(Int64?.self).map(Int.init)
                )
            )
        }
        return sections
    }

    private static func fetch(_ rows: PostgresRowSequence) async throws -> [Document] {
        var documents: [Document] = []
        for try await row in rows {
            let columns = row.makeRandomAccess()
            documents.append(
                Document(
                    id: try columns["id"].decode(String.self),
                    sessionID: try columns["session_id"].decode(String.self),
                    uploadID: try columns["upload_id"].decode(String.self),
                    filename: try columns["filename"].decode(String.self),
                    format: try columns["format"].decode(String.self),
                    mediaType: try columns["media_type"].decode(String.self),
                    byteSize: try columns["byte_size"].decode(Int64.self),
                    status: DocumentStatus(rawValue: try columns["status"].decode(String.self)) ?? .failed,
                    title: try columns["title"].decode(String?.self),
                    jobID: try columns["job_id"].decode(String?.self),
                    ingestAttempt: Int(try columns["ingest_attempt"].decode(Int64.self)),
                    errorCode: try columns["error_code"].decode(String?.self),
                    errorMessage: try columns["error_message"].decode(String?.self),
                    sectionCount: Int(try columns["section_count"].decode(Int64.self)),
                    characterCount: Int(try columns["character_count"].decode(Int64.self)),
                    passageCount: Int(try columns["passage_count"].decode(Int64.self)),
                    pageCount: try columns["page_count"].decode(Int64?.self).map(Int.init),
                    createdAt: Date(millisecondsSince1970: try columns["created_at"].decode(Int64.self)),
                    updatedAt: Date(millisecondsSince1970: try columns["updated_at"].decode(Int64.self))
                )
            )
        }
        return documents
    }
}
