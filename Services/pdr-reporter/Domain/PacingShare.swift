import Metrics
import Synchronization

/// This replica's share of each app's request rate: the fraction of the accounts topic's partitions it owns.
///
/// `PDR_REQUEST_INTERVAL_MS` is the interval between two requests of one app for the whole deployment, not for each
/// replica. An app's accounts are spread over every partition (keyed by `appId:accountId`), so a replica owning a
/// share s of the partitions holds about s of each app's accounts and paces the app at `interval / s`: Atlassian sees
/// about one request of the app per interval however many reporters there are — adding reporters spreads the work, not
/// the rate. (Each replica still sends its own batches: with r replicas an app's calls carry fewer accounts each when
/// few are due, never more calls than one replica alone would send in a cycle per partition share.)
package final class PacingShare: Sendable {
    private let share = Mutex<Double>(1)

    /// A share of 1: a lone reporter, or a test's loop without partitions.
    package init() {}

    /// This replica now owns `owned` of `total` partitions. Owning none keeps the last share (there is nothing to
    /// report until the next assignment sets it).
    package func set(owned: Int, of total: Int) {
        guard owned > 0, total > 0 else { return }
        let value = min(1, Double(owned) / Double(total))
        share.withLock { $0 = value }
        Gauge(label: "lethe_pdr_pacing_share").record(value)
    }

    /// The fraction of the partitions this replica owns (1 until an assignment says otherwise).
    package var value: Double { share.withLock { $0 } }

    /// The interval this replica keeps between two requests of one app, for a deployment-wide `interval`.
    package func interval(for interval: Duration) -> Duration {
        interval / value
    }
}
