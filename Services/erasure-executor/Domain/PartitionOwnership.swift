import Metrics
import Synchronization

/// The partitions of the erasure topics this replica's intake group assigned it — whose erasures its ledger holds —
/// or nil between a revocation and the next assignment, while the sweeper waits. Shown as
/// `lethe_erasure_partitions_owned`.
final class PartitionOwnership: Sendable {
    private let owned = Mutex<Set<Int32>?>(nil)
    private let gauge = Gauge(label: "lethe_erasure_partitions_owned")

    /// The partitions it owns now; nil while a rebalance is under way.
    var partitions: Set<Int32>? { owned.withLock { $0 } }

    func settle(_ partitions: Set<Int32>) {
        owned.withLock { $0 = partitions }
        gauge.record(partitions.count)
    }

    func unsettle() {
        owned.withLock { $0 = nil }
        gauge.record(0)
    }
}
