import Foundation
import KeelCore
import Logging

/// Human-readable log lines on standard error:
/// `2026-11-22T21:04:13.407Z info keel: message key=value …`.
///
/// Unlike swift-log's `StreamLogHandler` it renders metadata only when a line
/// is written, so attaching metadata to a logger per request costs nothing.
public struct TextLogHandler: LogHandler {
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
        var line = "\(JSONWriter.timestamp(Date())) \(event.level) \(self.label): \(event.message)"
        for (key, value) in merged.sorted(by: { $0.key < $1.key }) {
            line += " \(key)=\(value)"
        }
        line += "\n"
        FileHandle.standardError.write(Data(line.utf8))
    }
}
