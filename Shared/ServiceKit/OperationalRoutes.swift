import Hummingbird
import Logging
import Prometheus

/// One dependency `/health/ready` checks: SQLite, the broker, an upstream API. `check` throws (or times out) when the
/// dependency is unusable; the error's description is shown to the caller, so it must not contain secrets.
package struct ReadinessCheck: Sendable {
    package var name: String
    package var check: @Sendable () async throws -> Void

    package init(name: String, check: @escaping @Sendable () async throws -> Void) {
        self.name = name
        self.check = check
    }
}

/// The `/health/ready` answer: one entry per check.
package struct ReadinessReport: ResponseEncodable, Sendable, Equatable {
    package struct Entry: Codable, Sendable, Equatable {
        package var name: String
        package var ok: Bool
        package var error: String?
    }

    package var ready: Bool
    package var checks: [Entry]
}

extension Router {
    /// Adds the routes every service serves: `GET /health/live` (the process answers), `GET /health/ready` (every
    /// readiness check passes within `timeout`, else 503 with the failing ones) and, when `registry` is given,
    /// `GET /metrics` (Prometheus text of `registry`; nil on a public listener when an internal one serves it).
    package func addOperationalRoutes(
        readiness: [ReadinessCheck],
        registry: PrometheusCollectorRegistry?,
        timeout: Duration = .seconds(5)
    ) {
        get("/health/live") { _, _ -> HTTPResponse.Status in .ok }
        get("/health/ready") { _, _ -> EditedResponse<ReadinessReport> in
            let report = await runReadinessChecks(readiness, timeout: timeout)
            return EditedResponse(status: report.ready ? .ok : .serviceUnavailable, response: report)
        }
        guard let registry else { return }
        get("/metrics") { _, _ -> Response in
            var buffer: [UInt8] = []
            buffer.reserveCapacity(16 * 1024)
            registry.emit(into: &buffer)
            return Response(
                status: .ok,
                headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(bytes: buffer))
            )
        }
    }
}

/// Runs the checks concurrently, each bounded by `timeout`, so one hung dependency cannot hang the probe.
package func runReadinessChecks(_ checks: [ReadinessCheck], timeout: Duration) async -> ReadinessReport {
    let entries = await withTaskGroup(of: (Int, ReadinessReport.Entry).self) { group in
        for (index, check) in checks.enumerated() {
            group.addTask {
                do {
                    try await withTimeout(timeout) { try await check.check() }
                    return (index, .init(name: check.name, ok: true, error: nil))
                } catch {
                    return (index, .init(name: check.name, ok: false, error: String(describing: error)))
                }
            }
        }
        var results: [(Int, ReadinessReport.Entry)] = []
        for await result in group { results.append(result) }
        return results.sorted { $0.0 < $1.0 }.map(\.1)
    }
    return ReadinessReport(ready: entries.allSatisfy(\.ok), checks: entries)
}

/// Thrown by `withTimeout` when the operation did not finish in time.
package struct TimeoutError: Error, CustomStringConvertible {
    package var description: String { "timed out" }
}

/// Runs `operation`, cancelling it and throwing `TimeoutError` when it takes longer than `timeout`.
package func withTimeout<T: Sendable>(
    _ timeout: Duration,
    _ operation: @escaping @Sendable () async throws -> T
) async throws -> T {
    try await withThrowingTaskGroup(of: T.self) { group in
        group.addTask { try await operation() }
        group.addTask {
            try await Task.sleep(for: timeout)
            throw TimeoutError()
        }
        defer { group.cancelAll() }
        return try await group.next()!
    }
}
