import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A program started by a test — a service under test, the sandbox, a helper script — spawned with `posix_spawn`
/// and reaped with `waitpid`, never with Foundation's `Process`.
///
/// Two reasons. `Process.waitUntilExit`/`isRunning` learn about the exit on another thread, which can starve when
/// every cooperative-pool thread is blocked (two on this machine), and the test run hangs. And the test process
/// itself ignores SIGTERM (a service group installs its handler), which `Process` passes on: children then ignore
/// SIGTERM too and a graceful stop is never seen. Here the child always gets default SIGTERM/SIGINT handling and an
/// empty signal mask, stdin from /dev/null, and its output in files (a program that starts daemons hands its
/// descriptors on to them, so a pipe would never reach its end).
package final class ChildProcess: @unchecked Sendable {
    package let pid: pid_t
    private let lock = NSLock()
    private var status: Int32?

    private init(pid: pid_t) { self.pid = pid }

    /// Starts `path`; stdout goes to `stdoutPath`, stderr to `stderrPath` (the same file when not given), both
    /// appended to (created with mode 0600 when missing), so a restarted child's log follows the first one's.
    package static func spawn(
        _ path: String, arguments: [String] = [], environment: [String: String]? = nil,
        stdoutPath: String, stderrPath: String? = nil
    ) throws -> ChildProcess {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, stdoutPath, O_WRONLY | O_CREAT | O_APPEND, 0o600)
        if let stderrPath, stderrPath != stdoutPath {
            posix_spawn_file_actions_addopen(&actions, 2, stderrPath, O_WRONLY | O_CREAT | O_APPEND, 0o600)
        } else {
            posix_spawn_file_actions_adddup2(&actions, 1, 2)
        }
        // Nothing else of the test process: its sockets (NIO's are not close-on-exec) would live on in the child, and
        // a gateway's listening socket inherited by a sandbox or a dev broker kept the port bound after the gateway
        // stopped, so a restart on that port failed ("Address already in use") for as long as the child lived.
        guard let closeFrom = Self.addCloseFrom, closeFrom(&actions, 3) == 0 else {
            throw POSIXError(.ENOSYS)
        }
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
        guard spawned == 0 else { throw POSIXError(POSIXErrorCode(rawValue: spawned) ?? .EIO) }
        return ChildProcess(pid: pid)
    }

    /// glibc's `posix_spawn_file_actions_addclosefrom_np` (2.34+), looked up at run time: Swift's Glibc module does not
    /// import it.
    private typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
    private static let addCloseFrom: AddCloseFrom? =
        dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np").map {
            unsafeBitCast($0, to: AddCloseFrom.self)
        }

    /// The exit status once the child has ended (a death by signal is 128 + the signal), else nil. Reaps it.
    package var terminationStatus: Int32? {
        lock.withLock {
            if status == nil {
                var raw: Int32 = 0
                if waitpid(pid, &raw, WNOHANG) == pid { status = Self.exitStatus(raw) }
            }
            return status
        }
    }

    package var isRunning: Bool { terminationStatus == nil }

    /// Sends `signal` unless the child has already been reaped (its pid could belong to someone else by then).
    package func send(_ signal: Int32) {
        lock.withLock {
            if status == nil { _ = kill(pid, signal) }
        }
    }

    /// Blocks until the child exits; returns its status. For a program expected to end on its own soon.
    package func waitUntilExit() throws -> Int32 {
        try lock.withLock {
            if let status { return status }
            var raw: Int32 = 0
            while waitpid(pid, &raw, 0) == -1 {
                guard errno == EINTR else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .ECHILD) }
            }
            status = Self.exitStatus(raw)
            return status!
        }
    }

    /// Waits without blocking a thread until the child has exited or `timeout` passed; returns whether it exited.
    package func exited(within timeout: Duration) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while isRunning {
            guard ContinuousClock.now < deadline else { return false }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return true
    }

    /// SIGKILL and reap — a crash for crash tests, or the end of a child at the end of a test. Returns the status
    /// (128 + SIGKILL unless it had already exited).
    @discardableResult
    package func killAndReap() -> Int32 {
        send(SIGKILL)
        return (try? waitUntilExit()) ?? 128 + SIGKILL
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`; always reaps it.
    package func stop(grace: Duration = .seconds(10)) async {
        send(SIGTERM)
        if await exited(within: grace) { return }
        send(SIGKILL)
        _ = await exited(within: .seconds(10))
    }

    /// WIFEXITED / WEXITSTATUS, which Swift does not import.
    private static func exitStatus(_ raw: Int32) -> Int32 {
        (raw & 0x7f) == 0 ? (raw >> 8) & 0xff : 128 + (raw & 0x7f)
    }
}
