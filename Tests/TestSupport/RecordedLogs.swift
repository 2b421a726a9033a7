import Foundation
import Logging
import Synchronization

/// Keeps every log line at trace level, so a test can search what a service logged.
package final class RecordedLogs: Sendable {
    private let lines = Mutex<[String]>([])

    package init() {}

    package func append(_ line: String) { lines.withLock { $0.append(line) } }
    package var text: String { lines.withLock { $0.joined(separator: "\n") } }

    package func handler(label: String) -> LogHandler { Handler(label: label, sink: self) }

    package struct Handler: LogHandler {
        let label: String
        let sink: RecordedLogs
        package var metadata: Logger.Metadata = [:]
        package var logLevel: Logger.Level = .trace

        package subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        package func log(event: LogEvent) {
            let all = metadata.merging(event.metadata ?? [:]) { $1 }
            sink.append("\(event.level) \(label): \(event.message) \(all) \(event.source) at \(Date().timeIntervalSince1970)")
        }
    }
}
