import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Logging
import Messaging

/// The Kafka-protocol broker integration tests run against.
///
/// `KAFKA_BOOTSTRAP_SERVERS` wins when set (`make test` starts the dev broker and exports it). Otherwise the tests
/// start the dev broker themselves through `scripts/dev-broker start`, which reuses one that is already running.
/// When neither works the test fails with the reason — it never skips.
package enum DevBroker {
    package struct Unavailable: Error, CustomStringConvertible {
        package var description: String
    }

    private static let cached = LockedValue<Result<String, Unavailable>?>(nil)

    /// The bootstrap address, starting the dev broker if needed (once per test process).
    package static func bootstrapServers() throws -> String {
        try cached.withValue { value in
            if let value { return value }
            let result = locate()
            value = result
            return result
        }.get()
    }

    private static func locate() -> Result<String, Unavailable> {
        if let servers = ProcessInfo.processInfo.environment["KAFKA_BOOTSTRAP_SERVERS"], !servers.isEmpty {
            return .success(servers)
        }
        let script = RepositoryPaths.root.appendingPathComponent("scripts/dev-broker")
        let output: ProcessOutput
        do {
            output = try runProcess(script.path, arguments: ["start"])
        } catch {
            return .failure(Unavailable(description: "could not run \(script.path): \(error)"))
        }
        guard output.status == 0, let address = output.stdout.split(separator: "\n").last.map(String.init),
              !address.isEmpty
        else {
            return .failure(
                Unavailable(description: "scripts/dev-broker start failed (exit \(output.status)): \(output.stderr)"))
        }
        return .success(address)
    }
}

/// Names that no other test (or earlier run against the same broker) uses.
package func uniqueName(_ prefix: String) -> String {
    "\(prefix)-\(UUID().uuidString.prefix(8).lowercased())"
}

/// A logger for tests: warnings and worse, so a test's output stays readable.
package func makeTestLogger(_ label: String = "test") -> Logger {
    var logger = Logger(label: label)
    logger.logLevel = ProcessInfo.processInfo.environment["TEST_LOG_LEVEL"].flatMap { Logger.Level(rawValue: $0) }
        ?? .warning
    return logger
}

/// Paths inside this repository and the build.
package enum RepositoryPaths {
    /// The package root, found from this file's location.
    package static let root: URL = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }  // Tests/TestSupport/DevBroker.swift
        return url
    }()

    /// Where the built executables are: beside the test bundle.
    package static var binaries: URL {
        let bundle = Bundle.main.bundleURL
        let candidates = [bundle.deletingLastPathComponent(), bundle]
        for candidate in candidates
        where FileManager.default.fileExists(atPath: candidate.appendingPathComponent("kafka-test-consumer").path) {
            return candidate
        }
        return bundle.deletingLastPathComponent()
    }

    /// A built executable of this package.
    package static func executable(_ name: String) -> URL { binaries.appendingPathComponent(name) }
}

/// A value behind a lock, for test-process-wide caches.
package final class LockedValue<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Value

    package init(_ value: Value) { self.value = value }

    package func withValue<R>(_ body: (inout Value) throws -> R) rethrows -> R {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }
}

package struct ProcessOutput: Sendable {
    package var status: Int32
    package var stdout: String
    package var stderr: String
}

/// Runs a program to completion and captures its output, as a `ChildProcess` (see there why not Foundation's
/// `Process`): the output goes to files, so a program that starts daemons (scripts/dev-broker) does not keep a pipe
/// open, and the child gets default SIGTERM/SIGINT handling so `dev-broker stop` and the like can end what it starts.
package func runProcess(_ path: String, arguments: [String], environment: [String: String]? = nil) throws -> ProcessOutput {
    let directory = FileManager.default.temporaryDirectory
    let outPath = directory.appendingPathComponent("run-\(UUID().uuidString).out").path
    let errPath = directory.appendingPathComponent("run-\(UUID().uuidString).err").path
    defer {
        unlink(outPath)
        unlink(errPath)
    }
    let child = try ChildProcess.spawn(
        path, arguments: arguments, environment: environment, stdoutPath: outPath, stderrPath: errPath)
    let status = try child.waitUntilExit()
    let stdout = FileManager.default.contents(atPath: outPath) ?? Data()
    let stderr = FileManager.default.contents(atPath: errPath) ?? Data()
    return ProcessOutput(
        status: status,
        stdout: String(decoding: stdout, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines),
        stderr: String(decoding: stderr, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
}

/// Polls `condition` until it holds or `timeout` passes; returns whether it held.
package func eventually(
    timeout: Duration = .seconds(30), every interval: Duration = .milliseconds(50),
    _ condition: () async throws -> Bool
) async rethrows -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try? await Task.sleep(for: interval)
    }
    return try await condition()
}
