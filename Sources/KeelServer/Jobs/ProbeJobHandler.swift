import KeelCore

/// `keel.probe {tokens, delay_ms}`: always offered, so `keel probe` can check
/// a deployment that runs no demo jobs. Its cost is bounded (at most six
/// token events, at most a minute apart, no retries worth making), so
/// offering it opens nothing to abuse that creating any job does not.
public struct ProbeJobHandler: JobHandler {
    public static let type = "keel.probe"
    public var type: String { Self.type }
    public static let tokenRange = 1...6
    public static let delayRange = 0...60_000

    public init() {}

    public func validate(_ input: JSONValue) throws -> JSONValue {
        let (tokens, delay) = try Self.parse(input)
        return .object(["tokens": .int(Int64(tokens)), "delay_ms": .int(Int64(delay))])
    }

    static func parse(_ input: JSONValue) throws -> (tokens: Int, delayMilliseconds: Int) {
        let members: [String: JSONValue]
        switch input {
        case .null: members = [:]
        case .object(let object): members = object
        default: throw KeelError(.invalidInput, "keel.probe input must be a JSON object.", hint: Self.usage)
        }
        if let unknown = members.keys.sorted().first(where: { $0 != "tokens" && $0 != "delay_ms" }) {
            throw KeelError(.invalidInput, "keel.probe has no input '\(unknown)'.", hint: Self.usage)
        }
        func integer(_ name: String, in range: ClosedRange<Int>, default fallback: Int) throws -> Int {
            switch members[name] {
            case nil, .null?: return fallback
            case .int(let value)? where range.contains(Int(clamping: value)): return Int(value)
            case .double(let value)? where value.rounded() == value && value >= Double(range.lowerBound) && value <= Double(range.upperBound):
                return Int(value)
            default: throw KeelError(.invalidInput, "keel.probe '\(name)' must be an integer from \(range.lowerBound) to \(range.upperBound).", hint: Self.usage)
            }
        }
        return (try integer("tokens", in: Self.tokenRange, default: 5), try integer("delay_ms", in: Self.delayRange, default: 40))
    }

    static let usage = #"Send {"tokens": 1…6, "delay_ms": 0…60000}; both optional (defaults 5 and 40)."#

    public func run(_ job: JobContext) async throws -> JSONValue {
        let (tokens, delay) = try Self.parse(job.input)
        try await job.progress(stage: "probing", percent: 0)
        for index in 0..<tokens {
            try await Task.sleep(for: .milliseconds(delay))
            try await job.token("p\(index) ")
        }
        return .object(["tokens": .int(Int64(tokens)), "attempt": .int(Int64(job.attempt))])
    }
}
