import Metrics
import Synchronization

/// The partitions of the erasure topics this replica's intake group assigned it — whose erasures its ledger holds —
/// or nil between a revocation and the next assignment, while the sweeper waits. Shown as
/// `lethe_erasure_partitions_owned`.
final class PartitionOwnership: Sendable {
    private let owned = Mutex<Set<Int32>?>(nil)
    private let gauge = Gauge(label: "lethe_erasure_partitions_owned")
    private let onSettle: @Sendable (Set<Int32>) -> Void

    /// `onSettle` learns each new ownership (the replica announces it, so requests about its partitions reach it).
    init(onSettle: @escaping @Sendable (Set<Int32>) -> Void = { _ in }) {
        self.onSettle = onSettle
    }

    /// The partitions it owns now; nil while a rebalance is under way.
    var partitions: Set<Int32>? { owned.withLock { $0 } }

    func settle(_ partitions: Set<Int32>) {
        owned.withLock { $0 = partitions }
        gauge.record(partitions.count)
        onSettle(partitions)
    }

    func unsettle() {
        owned.withLock { $0 = nil }
        gauge.record(0)
    }
}
