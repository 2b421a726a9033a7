import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A real `atlassian-sandbox` process on a free loopback port, for tests that must talk to it as production talks
/// to Atlassian: over HTTP only, in another process.
///
/// Start with `SandboxProcess.start()` (or `withSandboxProcess`), always `stop()`. Startup failures throw with the
/// reason and the process's stderr — a test never silently runs without its sandbox.
package final class SandboxProcess: @unchecked Sendable {
    package struct StartError: Error, CustomStringConvertible {
        package var description: String
    }

    /// `http://127.0.0.1:<port>`: both Atlassian hosts (auth and API) and the control API.
    package let baseURL: URL
    package let port: Int
    private let process: ChildProcess
    private let stderrFile: URL
    private let reservation: ReservedPort

    private init(process: ChildProcess, reservation: ReservedPort, stderrFile: URL) {
        self.process = process
        self.port = reservation.port
        self.reservation = reservation
        self.stderrFile = stderrFile
        self.baseURL = URL(string: "http://127.0.0.1:\(port)")!
    }

    /// Starts the built executable with `HTTP_PORT` set to a free port and waits until `/health/live` answers 200.
    ///
    /// The port stays reserved (``ReservedPort``) in this process until ``stop()``, so no parallel test picks it
    /// while the sandbox starts; the sandbox binds and listens beside the reservation.
    package static func start(environment extra: [String: String] = [:], timeout: Duration = .seconds(20))
        async throws -> SandboxProcess {
        let binary = RepositoryPaths.executable("atlassian-sandbox")
        guard FileManager.default.isExecutableFile(atPath: binary.path) else {
            throw StartError(description: "atlassian-sandbox is not built at \(binary.path); run swift build --build-tests")
        }
        let reservation = try ReservedPort()
        let port = reservation.port
        var environment = ProcessInfo.processInfo.environment
        environment["HTTP_HOST"] = "127.0.0.1"
        environment["HTTP_PORT"] = String(port)
        environment["LOG_LEVEL"] = environment["SANDBOX_LOG_LEVEL"] ?? "warning"
        environment.merge(extra) { $1 }
        let stderrFile = FileManager.default.temporaryDirectory
            .appendingPathComponent("atlassian-sandbox-\(port)-\(UUID().uuidString.prefix(8)).log")
        let process = try reservation.spawn(binary.path, environment: environment, stdoutPath: stderrFile.path)
        let sandbox = SandboxProcess(process: process, reservation: reservation, stderrFile: stderrFile)

        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let status = process.terminationStatus {
                throw StartError(description: "atlassian-sandbox exited with status \(status): "
                                 + sandbox.output())
            }
            if httpStatus(port: port, path: "/health/live") == 200 { return sandbox }
            try await Task.sleep(for: .milliseconds(50))
        }
        await sandbox.stop()
        throw StartError(description: "atlassian-sandbox did not answer /health/live on port \(port) within "
                         + "\(timeout): " + sandbox.output())
    }

    /// SIGTERM, then waits for the exit (SIGKILL after 10 s so a hung sandbox cannot hang the test run).
    package func stop() async {
        await process.stop()
        reservation.release()
        try? FileManager.default.removeItem(at: stderrFile)
    }

    /// What the process wrote so far (for failure messages).
    package func output() -> String {
        (try? String(contentsOf: stderrFile, encoding: .utf8)).map { String($0.suffix(4000)) } ?? ""
    }

    /// A free TCP port on 127.0.0.1, chosen at random *below* the kernel's ephemeral range and checked by binding it.
    ///
    /// Not port 0: that hands out a port from the ephemeral range, which any outbound connection of the test process
    /// (Kafka clients, HTTP clients) can take as its local port while nothing listens on it — between a server
    /// stopping and its restart on the same port, say. Only ``ReservedPort`` uses it: a port picked and let go could
    /// be picked again by a parallel test before its server binds it.
    private static func freeLoopbackPort() throws -> Int {
        let ephemeralStart = (try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8))
            .flatMap { $0.split(whereSeparator: \.isWhitespace).first.flatMap { Int($0) } } ?? 32768
        let range = 10_000..<max(ephemeralStart, 10_001)
        for _ in 0..<500 {
            let candidate = Int.random(in: range)
            if canBind(port: UInt16(candidate)) { return candidate }
        }
        throw StartError(description: "no free loopback port in \(range) after 500 tries")
    }

    /// A free loopback port held for a server — in this process or a child process — until ``release()``: a socket
    /// bound to it with `SO_REUSEADDR`, never listening, so the server (NIO sets `SO_REUSEADDR` too) can bind and
    /// listen on it, while every other pick — ``freeLoopbackPort()``'s check, the kernel's port 0 — sees it taken.
    /// Without the hold, a port picked for a gateway could be picked again by a parallel test before the gateway
    /// bound it, and one harness then talked to the other's gateway.
    package final class ReservedPort: Sendable {
        package let port: Int
        private let descriptor: Int32

        package init() throws {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { throw StartError(description: "socket() failed: errno \(errno)") }
            var one: Int32 = 1
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
            for _ in 0..<500 {
                let candidate = try freeLoopbackPort()
                if bindLoopback(fd, port: UInt16(candidate)) {
                    port = candidate
                    descriptor = fd
                    return
                }
            }
            close(fd)
            throw StartError(description: "could not reserve a loopback port")
        }

        /// Whether the server on this port answers `GET path` with 200 (a readiness probe for spawned services).
        package func answers200(_ path: String = "/health/ready") -> Bool { httpStatus(port: port, path: path) == 200 }

        /// Lets the port go (after the server stopped for good).
        package func release() { close(descriptor) }

        /// Spawns the child that will listen on this port (see ``ChildProcess/spawn(_:arguments:environment:stdoutPath:stderrPath:)``);
        /// when the spawn itself fails, the port is let go before the error is thrown, since no child will ever stop.
        package func spawn(_ path: String, environment: [String: String], stdoutPath: String) throws -> ChildProcess {
            do {
                return try ChildProcess.spawn(path, environment: environment, stdoutPath: stdoutPath)
            } catch {
                release()
                throw error
            }
        }
    }

    private static func canBind(port: UInt16) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        return bindLoopback(fd, port: port)
    }

    /// Binds `fd` to 127.0.0.1:`port`; whether it worked.
    fileprivate static func bindLoopback(_ fd: Int32, port: UInt16) -> Bool {
        var address = loopback(port: port)
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        } == 0
    }

    private static func loopback(port: UInt16) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return address
    }

    /// A minimal blocking `GET` used only for the readiness probe (TestSupport has no HTTP client dependency).
    /// Returns the status code, or nil when nothing answered.
    private static func httpStatus(port: Int, path: String) -> Int? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var timeout = timeval(tv_sec: 1, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = loopback(port: UInt16(port))
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard connected == 0 else { return nil }
        let request = Array("GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".utf8)
        guard request.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, 0) }) == request.count else { return nil }
        var buffer = [UInt8](repeating: 0, count: 64)
        let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        guard count > 12 else { return nil }
        // "HTTP/1.1 200 OK"
        let line = String(decoding: buffer[0..<count], as: UTF8.self)
        let parts = line.split(separator: " ", maxSplits: 2)
        return parts.count >= 2 ? Int(parts[1]) : nil
    }
}

/// Runs `body` with a fresh sandbox process and stops it afterwards, whatever `body` did.
package func withSandboxProcess<T: Sendable>(
    environment: [String: String] = [:], _ body: (SandboxProcess) async throws -> T
) async throws -> T {
    let sandbox = try await SandboxProcess.start(environment: environment)
    do {
        let result = try await body(sandbox)
        await sandbox.stop()
        return result
    } catch {
        await sandbox.stop()
        throw error
    }
}
