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
///
/// `retryingOnly` narrows what is retried: an error it says is not transient (a constraint violation, a record that
/// cannot be decoded) fails the same way every time, so it is thrown at once for the caller to dead-letter the record
/// instead of looping on it. `describe` names a failure for the log and for `onRetry` (called before each wait, e.g.
/// to show the reason in a readiness check); the default names only the error's kind.
@discardableResult
package func retryUntilDone<T: Sendable>(
    _ what: String, logger: Logger,
    retryingOnly isTransient: (any Error) -> Bool = { _ in true },
    describe: (any Error) -> String = { ($0 as? KafkaError)?.name ?? "\(type(of: $0))" },
    onRetry: (String) -> Void = { _ in },
    _ operation: @Sendable () async throws -> T
) async throws -> T {
    var attempt = 0
    while true {
        do {
            return try await operation()
        } catch {
            if let kafka = error as? KafkaError, kafka.isFatal { throw kafka }
            guard isTransient(error) else { throw error }
            attempt += 1
            if Task.isShuttingDownGracefully || Task.isCancelled { throw CancellationError() }
            Counter(label: "lethe_retries_total", dimensions: [("operation", what)]).increment()
            let reason = describe(error)
            onRetry(reason)
            logger.warning("\(what) failed; retrying", metadata: ["error": "\(reason)", "attempt": "\(attempt)"])
            try await Task.sleep(for: .milliseconds(min(5000, 100 << min(attempt, 6))))
        }
    }
}

/// ``retryUntilDone(_:logger:retryingOnly:describe:onRetry:_:)`` retrying only what `policy` calls transient: any other
/// failure is thrown at once, for the caller to dead-letter the record.
@discardableResult
package func retryUntilDone<T: Sendable>(
    _ what: String, logger: Logger, policy: RetryPolicy, onRetry: (String) -> Void = { _ in },
    _ operation: @Sendable () async throws -> T
) async throws -> T {
    try await retryUntilDone(
        what, logger: logger, retryingOnly: policy.isTransient, describe: policy.describe, onRetry: onRetry, operation)
}
