import KeelModels
import Synchronization

/// An in-process `ChatProvider` that plays a script per call, for the
/// router's unit tests (its wire behaviour is the provider tests' business,
/// against the fake upstreams). It records every request it was sent and
/// whether a stream was cancelled.
final class ScriptedProvider: ChatProvider {
    enum Step: Sendable {
        case text(String)
        case reasoning(String)
        case usage(Int, Int)
        case finish(String)
        case fail(ProviderError)
        case pause(Duration)
    }

    private let script: @Sendable (_ call: Int) -> [Step]
    private let log = Mutex<(requests: [ChatRequest], cancelled: Int)>(([], 0))
    /// Says it answers whole (the steps run the same either way).
    let answersWhole: Bool

    init(answersWhole: Bool = false, _ script: @escaping @Sendable (_ call: Int) -> [Step]) {
        self.answersWhole = answersWhole
        self.script = script
    }

    /// The same steps on every call.
    convenience init(answersWhole: Bool = false, always steps: [Step]) {
        self.init(answersWhole: answersWhole) { _ in steps }
    }

    /// `count` tokens `"<prefix>0 "`, `"<prefix>1 "`, … then usage and `stop`.
    static func tokens(_ count: Int, prefix: String = "t") -> [Step] {
        (0..<count).map { .text("\(prefix)\($0) ") } + [.usage(10, count), .finish("stop")]
    }

    var requests: [ChatRequest] { self.log.withLock { $0.requests } }
    var calls: Int { self.log.withLock { $0.requests.count } }
    var cancelled: Int { self.log.withLock { $0.cancelled } }

    func stream(_ request: ChatRequest) -> AsyncThrowingStream<ChatStreamEvent, any Error> {
        let call = self.log.withLock { log in
            log.requests.append(request)
            return log.requests.count - 1
        }
        let steps = self.script(call)
        let (stream, continuation) = AsyncThrowingStream<ChatStreamEvent, any Error>.makeStream()
        let task = Task {
            do {
                for step in steps {
                    try Task.checkCancellation()
                    switch step {
                    case .text(let text): continuation.yield(.text(text))
                    case .reasoning(let text): continuation.yield(.reasoning(text))
                    case .usage(let input, let output): continuation.yield(.usage(ChatUsage(inputTokens: input, outputTokens: output)))
                    case .finish(let reason): continuation.yield(.finished(reason: reason))
                    case .fail(let error): throw error
                    case .pause(let duration): try await Task.sleep(for: duration)
                    }
                }
                continuation.finish()
            } catch {
                continuation.finish(throwing: error)
            }
        }
        continuation.onTermination = { [self] termination in
            task.cancel()
            if case .cancelled = termination { self.log.withLock { $0.cancelled += 1 } }
        }
        return stream
    }
}
