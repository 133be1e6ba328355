import KeelCore

/// `demo.generate {tokens, delay_ms, fail_attempts}`: streams `tokens`
/// token events `delay_ms` apart, like a model answering, and fails its
/// first `fail_attempts` attempts halfway through. Tests, benchmarks and
/// the deployment probe drive it.
public struct DemoGenerateHandler: JobHandler {
    public static let typeName = "demo.generate"
    public var type: String { Self.typeName }

    public static let tokenRange = 0...100_000
    public static let delayRange = 0...60_000
    public static let failRange = 0...100

    public init() {}

    struct Input {
        var tokens: Int
        var delayMilliseconds: Int
        var failAttempts: Int
    }

    public func validate(_ input: JSONValue) throws -> JSONValue {
        let parsed = try Self.parse(input)
        return .object([
            "tokens": .int(Int64(parsed.tokens)),
            "delay_ms": .int(Int64(parsed.delayMilliseconds)),
            "fail_attempts": .int(Int64(parsed.failAttempts)),
        ])
    }

    static func parse(_ input: JSONValue) throws -> Input {
        let members: [String: JSONValue]
        switch input {
        case .null: members = [:]
        case .object(let object): members = object
        default:
            throw KeelError(.invalidInput, "demo.generate input must be a JSON object, not \(input.kindName).", hint: Self.usage)
        }
        let known: Set<String> = ["tokens", "delay_ms", "fail_attempts"]
        if let unknown = members.keys.sorted().first(where: { !known.contains($0) }) {
            throw KeelError(.invalidInput, "demo.generate has no input '\(unknown)'.", hint: Self.usage)
        }
        return Input(
            tokens: try Self.integer(members["tokens"], "tokens", in: Self.tokenRange, default: 10),
            delayMilliseconds: try Self.integer(members["delay_ms"], "delay_ms", in: Self.delayRange, default: 50),
            failAttempts: try Self.integer(members["fail_attempts"], "fail_attempts", in: Self.failRange, default: 0)
        )
    }

    static let usage = #"Send {"tokens": 0…100000, "delay_ms": 0…60000, "fail_attempts": 0…100}; every field is optional (defaults 10, 50, 0)."#

    private static func integer(_ value: JSONValue?, _ name: String, in range: ClosedRange<Int>, default fallback: Int) throws -> Int {
        let number: Int
        switch value {
        case nil, .null?: return fallback
        case .int(let integer)?: number = Int(clamping: integer)
        case .double(let double)? where double.rounded() == double && abs(double) < 1e15: number = Int(double)
        case let other?:
            throw KeelError(.invalidInput, "demo.generate '\(name)' must be an integer, not \(other.kindName).", hint: Self.usage)
        }
        guard range.contains(number) else {
            throw KeelError(.invalidInput, "demo.generate '\(name)' must be from \(range.lowerBound) to \(range.upperBound), not \(number).", hint: Self.usage)
        }
        return number
    }

    public func run(_ job: JobContext) async throws -> JSONValue {
        let input = try Self.parse(job.input)
        let failing = job.attempt <= input.failAttempts
        // A failing attempt streams half its output first, so clients see a reset.
        let count = failing ? input.tokens / 2 : input.tokens
        let progressEvery = max(1, input.tokens / 10)
        // With no tokens it is a no-op job: no writes beyond claim and completion.
        let reportsProgress = input.tokens > 0
        if reportsProgress { try await job.progress(stage: "generating", percent: 0) }
        for index in 0..<count {
            if input.delayMilliseconds > 0 { try await Task.sleep(for: .milliseconds(input.delayMilliseconds)) }
            try Task.checkCancellation()
            try await job.token("t\(index) ")
            if (index + 1) % progressEvery == 0, index + 1 < input.tokens {
                try await job.progress(stage: "generating", percent: Double(index + 1) * 100 / Double(max(1, input.tokens)))
            }
        }
        if failing {
            throw JobHandlerFailure(
                code: "demo_failure",
                message: "Deliberate failure of attempt \(job.attempt) (fail_attempts is \(input.failAttempts))."
            )
        }
        if reportsProgress { try await job.progress(stage: "done", percent: 100) }
        return .object(["tokens": .int(Int64(input.tokens)), "attempt": .int(Int64(job.attempt))])
    }
}
