import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import Synchronization

/// What every provider client shares around the HTTP exchange: building
/// the request, opening the response (a non-2xx one read into an
/// ``ErrorResponse`` for the provider's own classification) and reading its
/// body, turning a transport failure into a ``ProviderError``, and keeping
/// secrets out of every message.
enum ProviderTransport {
    /// A transport failure as the router sees it: cancelled, timed out, a
    /// broken stream (after the response head), or an unreachable upstream.
    static func error(
        _ error: any Error, afterHead: Bool, terminator: String, baseURL: String, redact: (String) -> String
    ) -> any Error {
        if error is CancellationError { return error }
        if let error = error as? HTTPClientError {
            if error == .cancelled { return CancellationError() }
            if error == .getConnectionFromPoolTimeout {
                return ProviderError(
                    .busy, "every connection this process may open to \(baseURL) stayed busy for the connect timeout (--model-max-connections)")
            }
            if error == .connectTimeout || error == .readTimeout || error == .deadlineExceeded || error == .writeTimeout {
                return ProviderError(.timeout, redact("transport timeout: \(error)"))
            }
        }
        let description = redact(String(describing: error))
        if afterHead { return ProviderError(.truncated, "the connection broke before \(terminator): \(description)") }
        return ProviderError(.connect, "could not reach \(baseURL): \(description)")
    }

    /// `url` without its trailing slashes (a base URL as configured).
    static func trimmingTrailingSlashes(_ url: String) -> String {
        var url = url
        while url.hasSuffix("/") { url.removeLast() }
        return url
    }

    /// `body` as a provider sends it: JSON with sorted keys and unescaped slashes.
    static func json(_ body: some Encodable) throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return Array(try encoder.encode(body))
    }

    /// A `POST` of `body` (see ``json(_:)``) to `url` that asks for a
    /// server-sent event stream: `Content-Type` and `Accept`, then `headers`
    /// in order.
    static func eventStreamPOST(url: String, headers: [(String, String)], body: some Encodable) throws
        -> HTTPClientRequest
    {
        try self.jsonPOST(url: url, accept: "text/event-stream", headers: headers, body: body)
    }

    /// A `POST` of `body` (see ``json(_:)``) to `url` that accepts `accept`:
    /// `Content-Type` and `Accept`, then `headers` in order.
    static func jsonPOST(url: String, accept: String, headers: [(String, String)], body: some Encodable) throws
        -> HTTPClientRequest
    {
        var http = HTTPClientRequest(url: url)
        http.method = .POST
        http.headers.add(name: "Content-Type", value: "application/json")
        http.headers.add(name: "Accept", value: accept)
        for (name, value) in headers { http.headers.add(name: name, value: value) }
        http.body = .bytes(ByteBuffer(bytes: try self.json(body)))
        return http
    }

    /// The request `make` builds; a failure to build it that is not already
    /// a ``ProviderError`` (an encoding error) is a
    /// ``ProviderError/Kind/badRequest(status:)`` with status 0.
    static func request(_ make: () throws -> HTTPClientRequest) throws -> HTTPClientRequest {
        do {
            return try make()
        } catch let error as ProviderError {
            throw error
        } catch {
            throw ProviderError(.badRequest(status: 0), "could not encode the request: \(error)")
        }
    }

    static func excerpt(_ text: String) -> String {
        text.count > 500 ? String(text.prefix(500)) + "…" : text
    }

    /// `text` without the API key and other secret header values.
    static func redact(_ text: String, apiKey: String?, headers: [(String, String)]) -> String {
        var secrets: [String] = []
        if let apiKey, !apiKey.isEmpty { secrets.append(apiKey) }
        for (name, value) in headers where !value.isEmpty {
            let lower = name.lowercased()
            if ["key", "token", "secret", "auth", "cookie"].contains(where: { lower.contains($0) }) { secrets.append(value) }
        }
        return self.redact(text, secrets: secrets)
    }

    /// `text` with every non-empty secret replaced, the longest first (so
    /// that a secret containing another goes whole).
    static func redact(_ text: String, secrets: [String]) -> String {
        var result = text
        for secret in secrets.filter({ !$0.isEmpty }).sorted(by: { $0.count > $1.count }) {
            result = result.replacingOccurrences(of: secret, with: "[redacted]")
        }
        return result
    }
}

extension ProviderTransport {
    /// A non-2xx response, its body read up to the client's limit.
    struct ErrorResponse {
        let status: Int
        let reasonPhrase: String
        let headers: HTTPHeaders
        let body: Data
        /// From `retry-after-ms` or `Retry-After` (see ``RetryAfter``).
        let retryAfter: Duration?

        /// The start of the body as text (see ``ProviderTransport/excerpt(_:)``).
        var bodyExcerpt: String { ProviderTransport.excerpt(String(decoding: self.body, as: UTF8.self)) }
        /// ``bodyExcerpt``, or the status's reason phrase when the body is empty.
        var bodyExcerptOrReason: String { self.body.isEmpty ? self.reasonPhrase : self.bodyExcerpt }
    }

    /// Sends `http` and returns its body once the status is 2xx, `activity`
    /// touched by the head. A request that fails throws
    /// `transportError(error, false)`; a non-2xx status throws
    /// `statusError` of the response, its body read up to
    /// `maximumErrorBodySize` bytes (each chunk touches `activity`; a body
    /// that breaks only loses its message).
    static func open(
        _ http: HTTPClientRequest, client: HTTPClient, activity: Activity, maximumErrorBodySize: Int,
        transportError: @escaping (any Error, _ afterHead: Bool) -> any Error,
        statusError: (ErrorResponse) -> ProviderError
    ) async throws -> ResponseBody {
        let response: HTTPClientResponse
        do {
            response = try await client.execute(http, deadline: .distantFuture)
        } catch {
            throw transportError(error, false)
        }
        activity.touch()
        guard (200..<300).contains(Int(response.status.code)) else {
            var body = ByteBuffer()
            do {
                for try await chunk in response.body {
                    activity.touch()
                    var chunk = chunk
                    let room = maximumErrorBodySize - body.readableBytes
                    if room <= 0 { break }
                    body.writeImmutableBuffer(chunk.readSlice(length: min(room, chunk.readableBytes)) ?? chunk)
                }
            } catch {
                // The status says enough; a broken error body only loses its message.
            }
            throw statusError(
                ErrorResponse(
                    status: Int(response.status.code), reasonPhrase: response.status.reasonPhrase,
                    headers: response.headers, body: Data(body.readableBytesView),
                    retryAfter: RetryAfter.parse(response.headers.map { (name: $0.name, value: $0.value) })))
        }
        return ResponseBody(
            iterator: response.body.makeAsyncIterator(), activity: activity,
            transportError: { transportError($0, true) })
    }

    /// A 2xx response's body, read chunk by chunk: each chunk touches the
    /// activity, and a connection that breaks throws what the provider's
    /// transport error makes of it.
    struct ResponseBody {
        fileprivate var iterator: HTTPClientResponse.Body.AsyncIterator
        fileprivate let activity: Activity
        fileprivate let transportError: (any Error) -> any Error

        /// The next chunk, or `nil` at the end of the body.
        mutating func next() async throws -> ByteBuffer? {
            let buffer: ByteBuffer?
            do {
                buffer = try await self.iterator.next()
            } catch {
                throw self.transportError(error)
            }
            if buffer != nil { self.activity.touch() }
            return buffer
        }

        /// Reads the rest (once the answer is complete) so that the
        /// connection can be reused; a failure here is ignored.
        mutating func drain() async {
            do { while try await self.iterator.next() != nil { self.activity.touch() } } catch {}
        }
    }
}

/// Where a provider client puts the events it reads: a stream's
/// continuation (``ChatProvider/stream(_:)``), or the caller's closure
/// (``ChatProvider/run(_:onEvent:)``, the router's path: one hop fewer per
/// event).
struct EventSink: Sendable {
    let yield: @Sendable (ChatStreamEvent) -> Void
    /// The answer is complete (a stream ends here, before its connection closes).
    let finish: @Sendable () -> Void
}

/// A provider client written once as `drive(_:_:)`, which reads the
/// upstream's answer into a sink; the stream and the closure forms, with
/// their error mapping, come from here.
protocol SinkDrivenProvider: ChatProvider {
    func drive(_ request: ChatRequest, _ sink: EventSink) async throws
    /// The text with the client's secrets replaced.
    func redact(_ text: String) -> String
}

extension SinkDrivenProvider {
    public func stream(_ request: ChatRequest) -> AsyncThrowingStream<ChatStreamEvent, any Error> {
        let (stream, continuation) = AsyncThrowingStream<ChatStreamEvent, any Error>.makeStream()
        let task = Task {
            do {
                try await self.run(request) { continuation.yield($0) } finish: { continuation.finish() }
                continuation.finish()
            } catch {
                continuation.finish(throwing: error)
            }
        }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }

    public func run(_ request: ChatRequest, onEvent: @escaping @Sendable (ChatStreamEvent) -> Void) async throws {
        try await self.run(request, onEvent) {}
    }

    /// Every failure as a ``ProviderError`` (or the cancellation it was).
    private func run(
        _ request: ChatRequest, _ onEvent: @escaping @Sendable (ChatStreamEvent) -> Void, finish: @escaping @Sendable () -> Void
    ) async throws {
        do {
            try await self.drive(request, EventSink(yield: onEvent, finish: finish))
        } catch let error as ProviderError {
            throw error
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            throw ProviderError(.connect, self.redact(String(describing: error)))
        }
    }
}

/// When the last bytes arrived, shared by a provider's reader and its watchdog.
final class Activity: Sendable {
    private let instant = Mutex(ContinuousClock.now)

    var last: ContinuousClock.Instant { self.instant.withLock { $0 } }

    func touch() { self.instant.withLock { $0 = .now } }
}

/// Runs `read` (a provider's reading of one response, which touches the
/// ``Activity`` it is given whenever bytes arrive) beside a watchdog that
/// throws ``ProviderError/Kind/timeout`` once no bytes came for
/// `idleTimeout`: `read` is then cancelled, and with it its HTTP request.
/// Returns when `read` does (the watchdog is cancelled then).
func withIdleWatchdog(
    idleTimeout: Duration, _ read: @escaping @Sendable (Activity) async throws -> Void
) async throws {
    let activity = Activity()
    try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try await read(activity) }
        group.addTask {
            // The watchdog: throws when no bytes came for idleTimeout;
            // returns when cancelled, i.e. when the reader is done.
            while true {
                let deadline = activity.last + idleTimeout
                if ContinuousClock.now >= deadline {
                    throw ProviderError(.timeout, "no bytes from the upstream for \(idleTimeout)")
                }
                do { try await Task.sleep(until: deadline, clock: .continuous) } catch { return }
            }
        }
        try await group.next()
        group.cancelAll()
    }
}
