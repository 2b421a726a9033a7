import Metrics
import Synchronization

/// The partitions a replica's group assigned it — whose state its file holds (erasure-executor's erasures,
/// profile-store's profiles) — or nil between a revocation and the end of the next assignment, while their state is
/// read back (and the executor's sweeper waits). Shown as a gauge (`lethe_erasure_partitions_owned`,
/// `lethe_profile_partitions_owned`).
package final class PartitionOwnership: Sendable {
    private let owned = Mutex<Set<Int32>?>(nil)
    private let settledOnce = Mutex(false)
    private let gauge: Gauge
    private let onSettle: @Sendable (Set<Int32>) -> Void

    /// `gauge`: the metric showing how many it owns. `onSettle` learns each new ownership (the replica announces it,
    /// so requests about its partitions reach it).
    package init(gauge: String, onSettle: @escaping @Sendable (Set<Int32>) -> Void = { _ in }) {
        self.gauge = Gauge(label: gauge)
        self.onSettle = onSettle
    }

    /// The partitions it owns now; nil while a rebalance is under way.
    package var partitions: Set<Int32>? { owned.withLock { $0 } }

    /// Whether an assignment was ever settled since start (what readiness waits for).
    package var hasSettled: Bool { settledOnce.withLock { $0 } }

    package func settle(_ partitions: Set<Int32>) {
        owned.withLock { $0 = partitions }
        settledOnce.withLock { $0 = true }
        gauge.record(partitions.count)
        onSettle(partitions)
    }

    package func unsettle() {
        owned.withLock { $0 = nil }
        gauge.record(0)
    }
}
