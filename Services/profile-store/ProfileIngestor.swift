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
    var deadLettered = 0
    var batches = 0
}

/// Consumes `ProfileFetched` and stores it: records are taken in batches (whatever arrived while the previous batch
/// was being written, up to `maxBatch`), each batch is one SQLite transaction with its outbox rows, and its offsets
/// are committed only after that transaction. A crash re-delivers at most the uncommitted batches, which the
/// newest-wins upsert makes harmless. Undecodable records go to the DLQ and are committed with their batch.
final class ProfileIngestor: Service, Sendable {
    private let consumer: KafkaConsumer
    private let database: ProfileDatabase
    private let relay: OutboxRelay
    private let deadLetters: DeadLetterQueue
    private let logger: Logger
    private let maxBatch: Int
    private let counters = LockedStats()
    private let applied = Counter(label: "lethe_profiles_applied_total")
    private let stale = Counter(label: "lethe_profiles_stale_total")
    private let suppressed = Counter(label: "lethe_profiles_suppressed_total")
    private let erased = Counter(label: "lethe_profiles_dropped_after_erasure_total")
    private let deadLettered = Counter(label: "lethe_profiles_dead_lettered_total")
    private let lag = Gauge(label: "lethe_profiles_consumer_lag_seconds")
    /// Transactions the ingest made: `lethe_profiles_applied_total` over it is the mean batch (make bench-ingest
    /// runs its SQLite baseline with that batch size).
    private let batches = Counter(label: "lethe_profile_batches_total")

    init(
        consumer: KafkaConsumer, database: ProfileDatabase, relay: OutboxRelay, producer: KafkaProducer,
        logger: Logger, maxBatch: Int = 5000
    ) {
        self.consumer = consumer
        self.database = database
        self.relay = relay
        self.deadLetters = DeadLetterQueue(producer: producer)
        self.logger = logger
        self.maxBatch = maxBatch
    }

    var stats: IngestStats { counters.value }

    /// Runs the consumer, a task feeding its records into the batch queue, and the batch loop, until the consumer
    /// ends (graceful shutdown).
    func run() async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await self.consumer.run() }
            // Decoded on the reading task, so decoding overlaps the previous batch's transaction. Reading goes on
            // until the consumer has closed, so what it delivered before leaving the group is stored and committed.
            try await consumer.processInBatches(
                maxBatch: maxBatch, stopOnGracefulShutdown: false,
                prepare: { message in Received(message: message, event: Result { try Self.decode(message) }) }
            ) { batch in try await process(batch) }
            try await group.waitForAll()
        }
    }

    /// The event in a record, validated: a ContractError sends the record to the DLQ.
    private static func decode(_ message: KafkaMessage) throws -> ProfileFetched {
        let event = try message.decodeEvent(ProfileFetched.self)
        guard !event.tenantId.isEmpty else { throw ContractError.invalidKey(reason: "tenantId is empty") }
        _ = try AccountKey(appId: event.appId, accountId: event.accountId)
        return event
    }

    private func process(_ received: [Received]) async throws {
        let clock = ContinuousClock()
        let started = clock.now
        let batch = received.map(\.message)
        var events: [ProfileFetched] = []
        events.reserveCapacity(batch.count)
        var dead = 0
        for item in received {
            let message = item.message
            do {
                events.append(try item.event.get())
            } catch {
                // The reason never includes the payload: it may hold personal data.
                logger.warning("undecodable profile event to the DLQ", metadata: [
                    "partition": "\(message.partition)", "offset": "\(message.offset)", "error": "\(error)",
                ])
                try await retryUntilDone("dead-lettering", logger: logger) {
                    try await deadLetters.route(message, reason: "\(error)")
                }
                dead += 1
            }
        }
        let decoded = clock.now
        // A failed SQLite write (disk full, busy) is retried: the offsets must not move past records not stored.
        let decodedEvents = events
        let summary = try await retryUntilDone("storing a profile batch", logger: logger) {
            try await database.ingest(decodedEvents)
        }
        let stored = clock.now
        if summary.announced > 0 { relay.notify() }
        do {
            try await consumer.commit(batch)
        } catch {
            // Stored already; a redelivery is harmless (newest wins), so this is not worth stopping for.
            logger.warning("offset commit failed; the batch may be redelivered", metadata: ["error": "\(error)"])
        }
        logger.debug("profile batch stored", metadata: [
            "records": "\(batch.count)", "deadLetter": "\(decoded - started)", "store": "\(stored - decoded)",
            "commit": "\(clock.now - stored)",
        ])
        applied.increment(by: summary.applied)
        stale.increment(by: summary.stale)
        suppressed.increment(by: summary.suppressed)
        erased.increment(by: summary.erased)
        deadLettered.increment(by: dead)
        batches.increment()
        if let newest = batch.compactMap(\.timestampMilliseconds).max() {
            lag.record(max(0, Date().timeIntervalSince1970 - Double(newest) / 1000))
        }
        counters.add(summary, deadLettered: dead)
    }
}

/// The stats behind a lock.
final class LockedStats: @unchecked Sendable {
    private let lock = NSLock()
    private var stats = IngestStats()

    var value: IngestStats { lock.withLock { stats } }

    func add(_ summary: IngestSummary, deadLettered: Int) {
        lock.withLock {
            stats.applied += summary.applied
            stats.stale += summary.stale
            stats.suppressed += summary.suppressed
            stats.erased += summary.erased
            stats.deadLettered += deadLettered
            stats.batches += 1
        }
    }
}

/// A record and its decoded event (or why it could not be decoded).
struct Received: Sendable {
    var message: KafkaMessage
    var event: Result<ProfileFetched, any Error>
}
