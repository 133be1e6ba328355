import Foundation
import KeelCore
import Logging

/// A log handler writing one JSON object per line to standard error, for log
/// pipelines: `ts`, `level`, `label`, `message`, then the metadata.
public struct JSONLogHandler: LogHandler {
    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    private let label: String

    public init(label: String) {
        self.label = label
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { self.metadata[key] }
        set { self.metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var merged = self.metadata
        if let provided = self.metadataProvider?.get() { merged.merge(provided) { $1 } }
        if let metadata = event.metadata { merged.merge(metadata) { $1 } }
        var json = JSONWriter()
        json.object { json in
            json.field("ts", Date())
            json.field("level", event.level.rawValue)
            json.field("label", self.label)
            json.field("message", "\(event.message)")
            for (key, value) in merged.sorted(by: { $0.key < $1.key }) {
                json.field(key, "\(value)")
            }
        }
        let line = Data((json.text + "\n").utf8)
        // One write(2) per line: lines from concurrent tasks do not interleave.
        FileHandle.standardError.write(line)
    }
}
