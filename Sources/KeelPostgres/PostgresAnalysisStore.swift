import Foundation
import KeelCore
import Logging
import PostgresNIO

/// Document analyses in PostgreSQL. A section result is stored in a
/// transaction that locks its analysis's row while it is `running`, so a
/// result and the analysis's end never cross: once ended, it takes no more.
struct PostgresAnalysisStore: AnalysisStore, PostgresRole {
    let client: PostgresClient
    let logger: Logger
    let started: StartSignal

    static let columns = """
        id, session_id, document_id, job_id, instructions, sections, chain, status, error_code, error_message, created_at, updated_at
        """

    func createAnalysis(_ analysis: Analysis) async throws {
        try await self.operation {
            try await self.client.query(
                """
                INSERT INTO keel_analyses (\(unescaped: Self.columns))
                VALUES (\(analysis.id), \(analysis.sessionID), \(analysis.documentID), \(analysis.jobID), \(analysis.instructions),
                    \(JSONValue.storageText(indexes: analysis.sections)), \(analysis.chain), 'running', NULL, NULL,
                    \(analysis.createdAt.millisecondsSince1970), \(analysis.updatedAt.millisecondsSince1970))
                """,
                logger: self.logger
            )
        }
    }

    func analysis(id: String, sessionID: String) async throws -> Analysis? {
        try await self.fetch(
            "SELECT \(unescaped: Self.columns) FROM keel_analyses WHERE id = \(id) AND session_id = \(sessionID)"
        ).first
    }

    func analysis(id: String) async throws -> Analysis? {
        try await self.fetch("SELECT \(unescaped: Self.columns) FROM keel_analyses WHERE id = \(id)").first
    }

    func recordSection(analysisID: String, _ result: AnalysisSectionResult) async throws -> Bool {
        let metadata = JSONValue.object(result.metadata).serialized()
        let completedAt = result.completedAt.millisecondsSince1970
        return try await self.transaction { connection in
            var running = false
            for try await _ in try await connection.query(
                "SELECT 1 FROM keel_analyses WHERE id = \(analysisID) AND status = 'running' FOR UPDATE", logger: self.logger)
            {
                running = true
            }
            guard running else { return false }
            var stored = false
            for try await _ in try await connection.query(
                """
                INSERT INTO keel_analysis_sections (analysis_id, section_index, title, content, metadata, completed_at)
                VALUES (\(analysisID), \(result.index), \(result.title), \(result.content), \(metadata), \(completedAt))
                ON CONFLICT (analysis_id, section_index) DO NOTHING
                RETURNING 1
                """,
                logger: self.logger
            ) {
                stored = true
            }
            guard stored else { return false }
            try await connection.query(
                "UPDATE keel_analyses SET updated_at = GREATEST(updated_at, \(completedAt)) WHERE id = \(analysisID)", logger: self.logger)
            return true
        }
    }

    func finishAnalysis(id: String, status: AnalysisStatus, errorCode: String?, errorMessage: String?, now: Date) async throws {
        // Running is where an analysis starts, not an end.
        guard status != .running else { return }
        try await self.operation {
            try await self.client.query(
                """
                UPDATE keel_analyses SET status = \(status.rawValue), error_code = \(errorCode), error_message = \(errorMessage),
                    updated_at = GREATEST(updated_at, \(now.millisecondsSince1970))
                WHERE id = \(id) AND status = 'running'
                """,
                logger: self.logger
            )
        }
    }

    func analyses(documentID: String, sessionID: String) async throws -> [Analysis] {
        try await self.fetch(
            """
            SELECT \(unescaped: Self.columns) FROM keel_analyses WHERE document_id = \(documentID) AND session_id = \(sessionID)
            ORDER BY created_at DESC, id DESC
            """
        )
    }

    func deleteAnalyses(documentID: String) async throws {
        try await self.transaction { connection in
            try await connection.query(
                """
                DELETE FROM keel_analysis_sections WHERE analysis_id IN (SELECT id FROM keel_analyses WHERE document_id = \(documentID))
                """,
                logger: self.logger
            )
            try await connection.query("DELETE FROM keel_analyses WHERE document_id = \(documentID)", logger: self.logger)
        }
    }

    func removeOrphaned(limit: Int) async throws -> Int {
        try await self.removeOrphans(table: "keel_analyses", children: "keel_analysis_sections", childColumn: "analysis_id", limit: limit)
    }

    /// The analyses `query` selects, each with its results (one more query
    /// for all of them), in the query's order.
    private func fetch(_ query: PostgresQuery) async throws -> [Analysis] {
        try await self.operation {
            var analyses: [Analysis] = []
            for try await row in try await self.client.query(query, logger: self.logger) {
                let columns = row.makeRandomAccess()
                analyses.append(
                    Analysis(
                        id: try columns["id"].decode(String.self), sessionID: try columns["session_id"].decode(String.self),
                        documentID: try columns["document_id"].decode(String.self), jobID: try columns["job_id"].decode(String.self),
                        instructions: try columns["instructions"].decode(String.self),
                        sections: try JSONValue.storedIndexes(try columns["sections"].decode(String.self)),
                        chain: try columns["chain"].decode(String?.self),
                        status: AnalysisStatus(rawValue: try columns["status"].decode(String.self)) ?? .failed,
                        errorCode: try columns["error_code"].decode(String?.self), errorMessage: try columns["error_message"].decode(String?.self),
                        createdAt: Date(millisecondsSince1970: try columns["created_at"].decode(Int64.self)),
                        updatedAt: Date(millisecondsSince1970: try columns["updated_at"].decode(Int64.self))
                    )
                )
            }
            guard !analyses.isEmpty else { return [] }
            var results: [String: [AnalysisSectionResult]] = [:]
            for try await row in try await self.client.query(
                """
                SELECT analysis_id, section_index, title, content, metadata, completed_at FROM keel_analysis_sections
                WHERE analysis_id = ANY(\(analyses.map(\.id))) ORDER BY analysis_id, section_index
                """,
                logger: self.logger
            ) {
                let columns = row.makeRandomAccess()
                results[try columns["analysis_id"].decode(String.self), default: []].append(
                    AnalysisSectionResult(
                        index: Int(try columns["section_index"].decode(Int64.self)), title: try columns["title"].decode(String.self),
                        content: try columns["content"].decode(String.self),
                        metadata: try JSONValue.storedObject(try columns["metadata"].decode(String.self)),
                        completedAt: Date(millisecondsSince1970: try columns["completed_at"].decode(Int64.self))
                    )
                )
            }
            return analyses.map { analysis in
                var analysis = analysis
                analysis.results = results[analysis.id] ?? []
                return analysis
            }
        }
    }
}
