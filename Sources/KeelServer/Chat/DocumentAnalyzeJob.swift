import Foundation
import KeelCore
import KeelModels
import Logging

/// `document.analyze`: a document analysed section by section. Each
/// finished section is stored at once (``AnalysisStore/recordSection(analysisID:_:)``),
/// so a retried attempt resumes at the first section not stored. Events:
/// `progress` per section (stage `analyzing`, the section's title), then
/// `section` with the section's result.
struct DocumentAnalyzeJob: JobHandler {
    static let type = "document.analyze"
    var lane: JobLane { .model }
    var type: String { Self.type }

    let analyses: any AnalysisStore
    let documents: any DocumentStore
    let router: ModelRouter?
    let clock: any KeelClock
    let logger: Logger

    func validate(_ input: JSONValue) throws -> JSONValue {
        guard case .object(let o) = input, case .string(let id)? = o["analysis_id"], !id.isEmpty else {
            throw KeelError(.invalidInput, "document.analyze needs analysis_id.", hint: "Start an analysis with POST /api/documents/{id}/analyses.")
        }
        return .object(["analysis_id": .string(id)])
    }

    func run(_ job: JobContext) async throws -> JSONValue {
        guard case .string(let id)? = job.input.objectValue?["analysis_id"],
            let analysis = try await self.analyses.analysis(id: id, sessionID: job.sessionID)
        else {
            throw JobHandlerFailure(code: "not_found", message: "The analysis is gone.", retryable: false)
        }
        guard analysis.status == .running else { return AnalysesController.json(analysis) }
        guard let router = self.router else {
            try await self.analyses.finishAnalysis(
                id: id, status: .failed, errorCode: "no_models_configured", errorMessage: "No models are configured.", now: self.clock.now())
            throw JobHandlerFailure(code: "no_models_configured", message: "No models are configured on the instance that ran the analysis.", retryable: false)
        }
        guard let document = try await self.documents.document(id: analysis.documentID, sessionID: job.sessionID), document.status == .ready else {
            try await self.analyses.finishAnalysis(
                id: id, status: .failed, errorCode: "document_gone", errorMessage: "The document was deleted or is not ready.", now: self.clock.now())
            throw JobHandlerFailure(code: "document_gone", message: "The document was deleted or is not ready.", retryable: false)
        }
        let name = document.title ?? document.filename
        let instructions = analysis.instructions.isEmpty ? ChatPrompts.defaultAnalysisInstructions : analysis.instructions
        let done = Set(analysis.results.map(\.index))
        let total = analysis.sections.count
        do {
            for (position, index) in analysis.sections.enumerated() where !done.contains(index) {
                guard let section = try await self.documents.section(documentID: document.id, index: index) else { continue }
                try await job.progress(
                    stage: "analyzing", percent: Double(position) / Double(max(total, 1)) * 100, message: "\(position + 1)/\(total): \(section.title)")
                let answer = try await router.complete(
                    RoutedRequest(route: analysis.chain, messages: ChatPrompts.analysis(instructions: instructions, documentName: name, section: section)))
                let usage = answer.summary.usage.keys.sorted().map { model -> JSONValue in
                    let tokens = answer.summary.usage[model]!
                    return .object([
                        "model": .string(model), "input_tokens": .int(Int64(tokens.inputTokens)), "output_tokens": .int(Int64(tokens.outputTokens)),
                    ])
                }
                let metadata = ChatReplyJob.metadata(models: answer.summary.models, fallbacks: answer.summary.fallbacks.map(ChatReplyJob.json), usage: [:])
                    .merging(["usage": .array(usage)]) { $1 }
                let result = AnalysisSectionResult(index: index, title: section.title, content: answer.text, metadata: metadata, completedAt: self.clock.now())
                try await self.analyses.recordSection(analysisID: id, result)
                try await job.emit("section", AnalysesController.json(result))
            }
        } catch let error as RouterError {
            let retryable = (error.code == .modelsUnavailable || error.code == .timeout) && job.attempt < job.maxAttempts
            if !retryable {
                try await self.analyses.finishAnalysis(id: id, status: .failed, errorCode: error.code.rawValue, errorMessage: error.message, now: self.clock.now())
            }
            throw JobHandlerFailure(code: error.code.rawValue, message: error.message, retryable: retryable)
        } catch {
            // Cancelled by the user: the analysis ends cancelled (asked from a
            // task of its own: this one is cancelled). A lost lease or a
            // drain leaves it running for the retry.
            guard Task.isCancelled || error is CancellationError else { throw error }
            let analyses = self.analyses
            let now = self.clock.now()
            await Task {
                if await job.cancelRequested() {
                    try? await analyses.finishAnalysis(id: id, status: .cancelled, errorCode: "cancelled", errorMessage: "Cancelled.", now: now)
                }
            }.value
            throw error
        }
        try await self.analyses.finishAnalysis(id: id, status: .complete, errorCode: nil, errorMessage: nil, now: self.clock.now())
        try await job.progress(stage: "complete", percent: 100)
        guard let finished = try await self.analyses.analysis(id: id, sessionID: job.sessionID) else { return .null }
        return AnalysesController.json(finished)
    }
}
