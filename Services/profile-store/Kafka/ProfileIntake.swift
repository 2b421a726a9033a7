import Contracts
import Foundation
import Logging
import Messaging
import Metrics
import ServiceLifecycle
import Storage

/// Counts of what the ingestor did since start, for tests and logs (the same numbers go to `/metrics`).
struct IngestStats: Sendable, Equatable {
    var applied = 0
    var stale = 0
    var suppressed = 0
    var erased = 0
    var batches = 0
}

/// Consumes `ProfileFetched` and stores it through the shared ``ConsumerPipeline``: each batch (whatever arrived while
/// the previous one was written, up to `maxBatch`) is one SQLite transaction with its outbox rows, committed after
/// it. A crash re-delivers at most the uncommitted batches, which the newest-wins upsert makes harmless. Undecodable
/// records go to the DLQ; a failed SQLite write is retried while it is transient (busy, I/O, full disk).
final class ProfileIngestor: Service, Sendable {
    private let pipeline: ConsumerPipeline<ProfileFetched>
    private let database: ProfileDatabase
    private let relay: OutboxRelay
    private let logger: Logger
    private let counters = LockedStats()
    private let applied = Counter(label: "lethe_profiles_applied_total")
    private let stale = Counter(label: "lethe_profiles_stale_total")
    private let suppressed = Counter(label: "lethe_profiles_suppressed_total")
    private let erased = Counter(label: "lethe_profiles_dropped_after_erasure_total")
    private let lag = Gauge(label: "lethe_profiles_consumer_lag_seconds")
    /// Transactions the ingest made: `lethe_profiles_applied_total` over it is the mean batch (make bench-ingest
    /// runs its SQLite baseline with that batch size).
    private let batches = Counter(label: "lethe_profile_batches_total")

    init(
        consumer: KafkaConsumer, database: ProfileDatabase, relay: OutboxRelay, producer: KafkaProducer,
        logger: Logger, maxBatch: Int = 5000
    ) {
        self.pipeline = ConsumerPipeline(
            consumer: consumer, producer: producer, logger: logger, work: "storing a profile batch", retry: .storage,
            maxBatch: maxBatch, decode: Self.decode)
        self.database = database
        self.relay = relay
        self.logger = logger
    }

    var stats: IngestStats { counters.value }

    func run() async throws {
        try await pipeline.run { batch in
            try await self.store(batch)
            return []
        }
    }

    /// The event in a record, validated: a ContractError sends the record to the DLQ.
    private static func decode(_ message: KafkaMessage) throws -> ProfileFetched {
        let event = try message.decodeEvent(ProfileFetched.self)
        guard !event.tenantId.isEmpty else { throw ContractError.invalidKey(reason: "tenantId is empty") }
        _ = try AccountKey(appId: event.appId, accountId: event.accountId)
        return event
    }

    private func store(_ batch: [Delivered<ProfileFetched>]) async throws {
        let clock = ContinuousClock()
        let started = clock.now
        let summary = try await database.ingest(batch.map(\.item))
        if summary.announced > 0 { relay.notify() }
        logger.debug("profile batch stored", metadata: [
            "count": "\(batch.count)", "store": "\(clock.now - started)",
        ])
        applied.increment(by: summary.applied)
        stale.increment(by: summary.stale)
        suppressed.increment(by: summary.suppressed)
        erased.increment(by: summary.erased)
        batches.increment()
        if let newest = batch.compactMap(\.message.timestampMilliseconds).max() {
            lag.record(max(0, Date().timeIntervalSince1970 - Double(newest) / 1000))
        }
        counters.add(summary)
    }
}

/// The stats behind a lock.
final class LockedStats: @unchecked Sendable {
    private let lock = NSLock()
    private var stats = IngestStats()

    var value: IngestStats { lock.withLock { stats } }

    func add(_ summary: IngestSummary) {
        lock.withLock {
            stats.applied += summary.applied
            stats.stale += summary.stale
            stats.suppressed += summary.suppressed
            stats.erased += summary.erased
            stats.batches += 1
        }
    }
}
