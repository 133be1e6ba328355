import Foundation
import GRDB
import KeelCore

/// Document analyses in SQLite. A section result is stored only while its
/// analysis is `running`, checked in the same `BEGIN IMMEDIATE` transaction
/// that stores it; the first result of a section is kept.
struct SQLiteAnalysisStore: AnalysisStore {
    let pool: DatabasePool

    static let columns = """
        id, session_id, document_id, job_id, instructions, sections, chain, status, error_code, error_message, created_at, updated_at
        """

    func createAnalysis(_ analysis: Analysis) async throws {
        try await withStoreErrors {
            try await self.pool.write { db in
                try db.executeCached(
                    sql: "INSERT INTO keel_analyses (\(Self.columns)) VALUES (?, ?, ?, ?, ?, ?, ?, 'running', NULL, NULL, ?, ?)",
                    arguments: [
                        analysis.id, analysis.sessionID, analysis.documentID, analysis.jobID, analysis.instructions,
                        JSONValue.storageText(indexes: analysis.sections), analysis.chain, analysis.createdAt.millisecondsSince1970,
                        analysis.updatedAt.millisecondsSince1970,
                    ]
                )
            }
        }
    }

    func analysis(id: String, sessionID: String) async throws -> Analysis? {
        try await withStoreErrors {
            try await self.pool.read { db in
                guard
                    let row = try Row.fetchOne(
                        cached: db, sql: "SELECT \(Self.columns) FROM keel_analyses WHERE id = ? AND session_id = ?", arguments: [id, sessionID])
                else { return nil }
                return try Self.decode(row, results: Self.results(db, analysisID: id))
            }
        }
    }

    func analysis(id: String) async throws -> Analysis? {
        try await withStoreErrors {
            try await self.pool.read { db in
                guard let row = try Row.fetchOne(cached: db, sql: "SELECT \(Self.columns) FROM keel_analyses WHERE id = ?", arguments: [id])
                else { return nil }
                return try Self.decode(row, results: Self.results(db, analysisID: id))
            }
        }
    }

    func recordSection(analysisID: String, _ result: AnalysisSectionResult) async throws -> Bool {
        try await withStoreErrors {
            try await self.pool.write { db in
                guard
                    try Int.fetchOne(
                        cached: db, sql: "SELECT 1 FROM keel_analyses WHERE id = ? AND status = 'running'", arguments: [analysisID]) != nil
                else { return false }
                try db.executeCached(
                    sql: """
                        INSERT INTO keel_analysis_sections (analysis_id, section_index, title, content, metadata, completed_at)
                        VALUES (?, ?, ?, ?, ?, ?)
                        ON CONFLICT (analysis_id, section_index) DO NOTHING
                        """,
                    arguments: [
                        analysisID, result.index, result.title, result.content, JSONValue.object(result.metadata).serialized(),
                        result.completedAt.millisecondsSince1970,
                    ]
                )
                guard db.changesCount == 1 else { return false }
                try db.executeCached(
                    sql: "UPDATE keel_analyses SET updated_at = MAX(updated_at, ?) WHERE id = ?",
                    arguments: [result.completedAt.millisecondsSince1970, analysisID]
                )
                return true
            }
        }
    }

    func finishAnalysis(id: String, status: AnalysisStatus, errorCode: String?, errorMessage: String?, now: Date) async throws {
        // Running is where an analysis starts, not an end.
        guard status != .running else { return }
        try await withStoreErrors {
            try await self.pool.write { db in
                try db.executeCached(
                    sql: """
                        UPDATE keel_analyses SET status = ?, error_code = ?, error_message = ?, updated_at = MAX(updated_at, ?)
                        WHERE id = ? AND status = 'running'
                        """,
                    arguments: [status.rawValue, errorCode, errorMessage, now.millisecondsSince1970, id]
                )
            }
        }
    }

    func analyses(documentID: String, sessionID: String) async throws -> [Analysis] {
        try await withStoreErrors {
            try await self.pool.read { db in
                let rows = try Row.fetchAll(
                    cached: db,
                    sql: """
                        SELECT \(Self.columns) FROM keel_analyses WHERE document_id = ? AND session_id = ?
                        ORDER BY created_at DESC, id DESC
                        """,
                    arguments: [documentID, sessionID]
                )
                return try rows.map { row in try Self.decode(row, results: Self.results(db, analysisID: row["id"])) }
            }
        }
    }

    func deleteAnalyses(documentID: String) async throws {
        try await withStoreErrors {
            try await self.pool.write { db in
                try db.executeCached(
                    sql: "DELETE FROM keel_analysis_sections WHERE analysis_id IN (SELECT id FROM keel_analyses WHERE document_id = ?)",
                    arguments: [documentID]
                )
                try db.executeCached(sql: "DELETE FROM keel_analyses WHERE document_id = ?", arguments: [documentID])
            }
        }
    }

    func removeOrphaned(limit: Int) async throws -> Int {
        try await withStoreErrors {
            try await self.pool.write { db in
                try removeOrphans(db, table: "keel_analyses", children: "keel_analysis_sections", childColumn: "analysis_id", limit: limit)
            }
        }
    }

    private static func results(_ db: Database, analysisID: String) throws -> [AnalysisSectionResult] {
        try Row.fetchAll(
            cached: db,
            sql: """
                SELECT section_index, title, content, metadata, completed_at FROM keel_analysis_sections
                WHERE analysis_id = ? ORDER BY section_index
                """,
            arguments: [analysisID]
        ).map { row in
            AnalysisSectionResult(
                index: row["section_index"], title: row["title"], content: row["content"], metadata: try JSONValue.storedObject(row["metadata"]),
                completedAt: Date(millisecondsSince1970: row["completed_at"])
            )
        }
    }

    static func decode(_ row: Row, results: [AnalysisSectionResult]) throws -> Analysis {
        Analysis(
            id: row["id"], sessionID: row["session_id"], documentID: row["document_id"], jobID: row["job_id"], instructions: row["instructions"],
            sections: try JSONValue.storedIndexes(row["sections"]), chain: row["chain"],
            status: AnalysisStatus(rawValue: row["status"]) ?? .failed, errorCode: row["error_code"], errorMessage: row["error_message"],
            results: results, createdAt: Date(millisecondsSince1970: row["created_at"]), updatedAt: Date(millisecondsSince1970: row["updated_at"])
        )
    }
}
