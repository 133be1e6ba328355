import ArgumentParser
import Hummingbird
import NIOCore
import NIOPosix

/// A bare Hummingbird server for `bench/streams-floor.sh`: no middleware, no
/// session, no store. `GET /events` answers the stream `keel-bench streams`
/// expects (`retry`, `--events` token events, then `done`), all at once or
/// `--interval-ms` apart; `GET /session` answers a fixed JSON body the size
/// of a session read's. Against it the benchmarks measure what the HTTP
/// framework Keel is built on costs on this machine, before any of Keel's
/// own work.
struct FloorServer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "floor-server",
        abstract: "A bare Hummingbird server sending the benchmark's event stream (the framework's own floor)."
    )

    @Option(help: "Address to listen on.") var host = "127.0.0.1"
    @Option(help: "Port to listen on.") var port = 8080
    @Option(help: "Token events per stream, before the done event.") var events = 50
    @Option(help: "Milliseconds between events (0: the whole stream in one write, like a static file).") var intervalMs = 0
    @Option(help: "Listen backlog (keel serve's default).") var listenBacklog = 4096
    @Option(help: "Event loop threads (0: NIO's default, one per core).") var threads = 0
    @Flag(help: "Run Swift concurrency's global executor on NIO's event loops (keel serve --executor event-loops).")
    var eventLoopExecutor = false

    func validate() throws {
        guard self.events >= 0, self.intervalMs >= 0, self.threads >= 0 else {
            throw ValidationError("--events, --interval-ms and --threads cannot be negative")
        }
        guard !(self.eventLoopExecutor && self.threads > 0) else {
            throw ValidationError("--event-loop-executor runs on NIO's shared event loops; leave out --threads")
        }
    }

    func run() async throws {
        if self.eventLoopExecutor, !NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor() {
            throw ValidationError("this Swift runtime does not let NIO's event loops become the global executor")
        }
        let events = self.events
        let interval = self.intervalMs
        let router = Router()
        router.get("events") { _, _ -> Response in
            var headers = HTTPFields()
            headers[.contentType] = "text/event-stream; charset=utf-8"
            headers[.cacheControl] = "no-cache"
            return Response(
                status: .ok,
                headers: headers,
                body: ResponseBody { writer in
                    var buffer = ByteBuffer(string: "retry: 1000\n\n")
                    for index in 1...(events + 1) {
                        Self.event(index, of: events, to: &buffer)
                        // With no interval, the whole stream goes in one write.
                        guard interval > 0 else { continue }
                        try await writer.write(buffer)
                        buffer.clear()
                        if index <= events { try await Task.sleep(for: .milliseconds(interval)) }
                    }
                    if buffer.readableBytes > 0 { try await writer.write(buffer) }
                    try await writer.finish(nil)
                }
            )
        }
        // A small JSON answer the size of a session read's, for wrk: what
        // the framework serves per request, per connection, with nothing behind it.
        let session = ByteBuffer(string: #"{"id":"Q1nTQ3tCqLh0vH2qvYkRzA","data":{"user_id":42,"name":"bench-user","roles":["reader","writer"],"preferences":{"theme":"dark","language":"en"}},"created_at":"2026-11-23T21:00:00.000Z","last_seen_at":"2026-11-23T21:00:00.000Z","expires_at":"2026-11-24T21:00:00.000Z"}"#)
        router.get("session") { _, _ -> Response in
            Response(status: .ok, headers: [.contentType: "application/json; charset=utf-8"], body: ResponseBody(byteBuffer: session))
        }
        let app = Application(
            router: router,
            configuration: .init(address: .hostname(self.host, port: self.port), serverName: nil, backlog: self.listenBacklog),
            eventLoopGroupProvider: self.threads > 0 ? .shared(MultiThreadedEventLoopGroup(numberOfThreads: self.threads)) : .singleton
        )
        try await app.runService()
    }

    /// The same bytes as the static file of `bench/streams-floor.sh`.
    static func event(_ index: Int, of events: Int, to buffer: inout ByteBuffer) {
        if index <= events {
            buffer.writeString("id: \(index)\nevent: token\ndata: {\"text\":\"t\(index)\"}\n\n")
        } else {
            buffer.writeString("id: \(index)\nevent: done\ndata: {}\n\n")
        }
    }
}
