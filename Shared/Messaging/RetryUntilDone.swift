import Logging
import Metrics
import ServiceLifecycle

/// Runs `operation` until it succeeds, waiting 100 ms, 200 ms, … up to 5 s between attempts.
///
/// For work a consumer must not skip: its offset may only move past a record whose effect is durable (stored in
/// SQLite, acknowledged by the broker), so a transient failure is retried rather than dropped. On graceful shutdown or
/// cancellation it gives up with `CancellationError`; the record then stays uncommitted and the next start does it
/// again. Failures are logged with `what` and the error's kind only — an error's description may carry data — and
/// counted in `lethe_retries_total{operation}`, so a retry that goes on for ever shows on a dashboard, not only in logs.
/// A fatal Kafka error is not retried (no attempt can succeed): it is thrown, and the process ends.
@discardableResult
package func retryUntilDone<T: Sendable>(
    _ what: String, logger: Logger, _ operation: @Sendable () async throws -> T
) async throws -> T {
    var attempt = 0
    while true {
        do {
            return try await operation()
        } catch {
            attempt += 1
            if Task.isShuttingDownGracefully || Task.isCancelled { throw CancellationError() }
            if let kafka = error as? KafkaError, kafka.isFatal { throw kafka }
            Counter(label: "lethe_retries_total", dimensions: [("operation", what)]).increment()
            let kind = (error as? KafkaError)?.name ?? "\(type(of: error))"
            logger.warning("\(what) failed; retrying", metadata: ["error": "\(kind)", "attempt": "\(attempt)"])
            try await Task.sleep(for: .milliseconds(min(5000, 100 << min(attempt, 6))))
        }
    }
}
