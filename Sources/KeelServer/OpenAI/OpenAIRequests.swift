import Foundation
import KeelCore
import KeelModels

/// Reading the request fields `/v1/chat/completions` and `/v1/responses`
/// share. A field Keel cannot honour (tools, images, several choices) is
/// refused with a 400 naming it; fields that only tune or label a request
/// (`user`, `metadata`, `top_p`, `seed`, …) are accepted and ignored.
enum OpenAIRequests {
    static func object(_ body: JSONValue?) throws -> [String: JSONValue] {
        guard case .object(let members)? = body else { throw OpenAIError.invalid("The request body must be a JSON object.") }
        return members
    }

    /// `model`: a chain or model name of the models file.
    static func model(_ members: [String: JSONValue], router: ModelRouter?) throws -> (name: String, router: ModelRouter) {
        guard case .string(let name)? = members["model"], !name.isEmpty else {
            throw OpenAIError.invalid("you must provide a model parameter", param: "model")
        }
        guard let router else {
            throw OpenAIError(
                .serviceUnavailable, "No models are configured on this server (start Keel with --models FILE).", code: "no_models_configured")
        }
        guard router.catalog.route(name) != nil else {
            throw OpenAIError(
                .notFound, "The model '\(name)' does not exist. Known: \((router.catalog.chainOrder + router.catalog.modelOrder).joined(separator: ", ")).",
                code: "model_not_found", param: "model")
        }
        return (name, router)
    }

    /// A message's text: a string, or text parts (`text`, `input_text`, `output_text`).
    static func text(_ content: JSONValue?, param: String) throws -> String {
        switch content {
        case .string(let text)?:
            return text
        case .array(let parts)?:
            var text = ""
            for (index, part) in parts.enumerated() {
                guard case .object(let o) = part, let type = o["type"]?.stringValue else {
                    throw OpenAIError.invalid("\(param)[\(index)] must be a content part object with a type.", param: "\(param)[\(index)]")
                }
                guard ["text", "input_text", "output_text"].contains(type), let piece = o["text"]?.stringValue else {
                    throw OpenAIError.invalid(
                        "\(param)[\(index)] is a '\(type)' part; Keel's models take text only.", param: "\(param)[\(index)]", code: "unsupported_content")
                }
                text += piece
            }
            return text
        default:
            throw OpenAIError.invalid("\(param) must be a string or a list of text parts.", param: param)
        }
    }

    /// One message `{role, content}`; `developer` reads as `system`.
    static func message(_ value: JSONValue, param: String) throws -> ChatMessage {
        guard case .object(let o) = value, case .string(let role)? = o["role"] else {
            throw OpenAIError.invalid("\(param) must be an object with a role and content.", param: param)
        }
        let content = try Self.text(o["content"], param: "\(param).content")
        switch role {
        case "system", "developer": return .system(content)
        case "user": return .user(content)
        case "assistant": return .assistant(content)
        default:
            throw OpenAIError.invalid(
                "\(param).role '\(role)' is not supported: Keel answers system, developer, user and assistant messages (no tools).",
                param: "\(param).role", code: "unsupported_role")
        }
    }

    static func positiveInt(_ members: [String: JSONValue], _ names: [String]) throws -> Int? {
        for name in names {
            guard let value = members[name], value != .null else { continue }
            guard case .int(let number) = value, number > 0, number <= 1_000_000 else {
                throw OpenAIError.invalid("\(name) must be a positive integer.", param: name)
            }
            return Int(number)
        }
        return nil
    }

    static func temperature(_ members: [String: JSONValue]) throws -> Double? {
        guard let value = members["temperature"], value != .null else { return nil }
        let number: Double
        switch value {
        case .int(let n): number = Double(n)
        case .double(let d): number = d
        default: throw OpenAIError.invalid("temperature must be a number from 0 to 2.", param: "temperature")
        }
        guard (0...2).contains(number) else { throw OpenAIError.invalid("temperature must be a number from 0 to 2.", param: "temperature") }
        return number
    }

    static func stop(_ members: [String: JSONValue]) throws -> [String] {
        switch members["stop"] {
        case nil, .null?: return []
        case .string(let one)?: return one.isEmpty ? [] : [one]
        case .array(let items)? where items.count <= 4 && items.allSatisfy({ $0.stringValue?.isEmpty == false }):
            return items.compactMap(\.stringValue)
        default: throw OpenAIError.invalid("stop must be a string or a list of up to 4 non-empty strings.", param: "stop")
        }
    }

    static func bool(_ members: [String: JSONValue], _ name: String) throws -> Bool {
        switch members[name] {
        case nil, .null?: return false
        case .bool(let flag)?: return flag
        default: throw OpenAIError.invalid("\(name) must be true or false.", param: name)
        }
    }

    /// Fields whose meaning Keel cannot give: refused rather than silently dropped.
    static func refuseUnsupported(_ members: [String: JSONValue]) throws {
        for name in ["tools", "functions"] {
            if case .array(let items)? = members[name], !items.isEmpty {
                throw OpenAIError.invalid("\(name) are not supported by Keel's OpenAI-compatible API.", param: name, code: "unsupported_parameter")
            }
        }
        if let n = members["n"], n != .null, n != .int(1) {
            throw OpenAIError.invalid("n must be 1: Keel returns one choice.", param: "n", code: "unsupported_parameter")
        }
        if members["logprobs"] == .bool(true) {
            throw OpenAIError.invalid("logprobs are not supported.", param: "logprobs", code: "unsupported_parameter")
        }
        if case .object(let format)? = members["response_format"], let type = format["type"]?.stringValue, type != "text" {
            throw OpenAIError.invalid("response_format '\(type)' is not supported; only text.", param: "response_format", code: "unsupported_parameter")
        }
        if let previous = members["previous_response_id"], previous != .null {
            throw OpenAIError.invalid(
                "previous_response_id is not supported: send the conversation as input.", param: "previous_response_id", code: "unsupported_parameter")
        }
    }

    /// OpenAI's finish reasons from the providers' own.
    static func finishReason(_ reason: String) -> String {
        switch reason {
        case "length", "max_tokens", "max_output_tokens": "length"
        case "content_filter", "guardrail_intervened", "refusal": "content_filter"
        default: "stop"
        }
    }
}

/// A routed answer read one event at a time by whoever holds it (a route,
/// then its response body). Dropping it cancels the answer.
actor RoutedEvents {
    private var iterator: AsyncThrowingStream<RouterEvent, any Error>.Iterator

    init(_ stream: AsyncThrowingStream<RouterEvent, any Error>) {
        self.iterator = stream.makeAsyncIterator()
    }

    func next() async throws -> RouterEvent? {
        // The iterator is a reference to the stream's state: a copy reads
        // the same stream (an actor cannot lend its property to an await).
        var iterator = self.iterator
        defer { self.iterator = iterator }
        return try await iterator.next(isolation: self)
    }
}
