import Foundation

/// A directory of its own for one test's files (SQLite files, logs), removed when the value goes away.
package final class TemporaryDirectory: Sendable {
    package let url: URL

    /// - Parameter prefix: names the directory after its test, to find it while the test runs.
    package init(_ prefix: String = "lethe-test") throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent(uniqueName(prefix))
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    /// The path of `name` inside the directory.
    package func file(_ name: String) -> String { url.appendingPathComponent(name).path }

    deinit { try? FileManager.default.removeItem(at: url) }
}
