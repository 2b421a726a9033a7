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

/// Runs a program to completion and captures its output.
///
/// Spawned with `posix_spawn` and awaited with `waitpid`, not with Foundation's `Process`: tests call this from the
/// cooperative thread pool (two threads on a two-core machine), and `Process.waitUntilExit` needs other threads to
/// learn that the child exited — with every pool thread blocked (one here, the others on the lock around the dev
/// broker's address) it never does, and the test run hangs. The output goes to files, not pipes, because a program
/// that starts daemons (scripts/dev-broker) hands its descriptors on to them and a pipe would never reach its end.
/// The child gets default SIGTERM/SIGINT handling and an empty signal mask, whatever this process set for itself,
/// so `dev-broker stop` and the like can end what it starts.
package func runProcess(_ path: String, arguments: [String], environment: [String: String]? = nil) throws -> ProcessOutput {
    let directory = FileManager.default.temporaryDirectory
    let outPath = directory.appendingPathComponent("run-\(UUID().uuidString).out").path
    let errPath = directory.appendingPathComponent("run-\(UUID().uuidString).err").path
    defer {
        unlink(outPath)
        unlink(errPath)
    }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, outPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    posix_spawn_file_actions_addopen(&actions, 2, errPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    var defaults = sigset_t()
    sigemptyset(&defaults)
    sigaddset(&defaults, SIGTERM)
    sigaddset(&defaults, SIGINT)
    posix_spawnattr_setsigdefault(&attributes, &defaults)
    var mask = sigset_t()
    sigemptyset(&mask)
    posix_spawnattr_setsigmask(&attributes, &mask)
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))

    let environmentLines = (environment ?? ProcessInfo.processInfo.environment).map { "\($0.key)=\($0.value)" }
    let argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
    let envp: [UnsafeMutablePointer<CChar>?] = environmentLines.map { strdup($0) } + [nil]
    defer { (argv + envp).forEach { free($0) } }
    var pid: pid_t = 0
    let spawned = posix_spawn(&pid, path, &actions, &attributes, argv, envp)
    guard spawned == 0 else {
        throw POSIXError(POSIXErrorCode(rawValue: spawned) ?? .EIO)
    }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) == -1 {
        guard errno == EINTR else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .ECHILD) }
    }
    // WIFEXITED / WEXITSTATUS, which Swift does not import: a signal death is reported as 128 + the signal.
    let exitStatus = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    let stdout = FileManager.default.contents(atPath: outPath) ?? Data()
    let stderr = FileManager.default.contents(atPath: errPath) ?? Data()
    return ProcessOutput(
        status: exitStatus,
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
