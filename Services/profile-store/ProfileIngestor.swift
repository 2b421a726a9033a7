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
    private let queue: BatchQueue<Received>
    private let counters = LockedStats()
    private let applied = Counter(label: "lethe_profiles_applied_total")
    private let stale = Counter(label: "lethe_profiles_stale_total")
    private let suppressed = Counter(label: "lethe_profiles_suppressed_total")
    private let deadLettered = Counter(label: "lethe_profiles_dead_lettered_total")
    private let lag = Gauge(label: "lethe_profiles_consumer_lag_seconds")

    init(
        consumer: KafkaConsumer, database: ProfileDatabase, relay: OutboxRelay, producer: KafkaProducer,
        logger: Logger, maxBatch: Int = 2000
    ) {
        self.consumer = consumer
        self.database = database
        self.relay = relay
        self.deadLetters = DeadLetterQueue(producer: producer)
        self.logger = logger
        self.maxBatch = maxBatch
        self.queue = BatchQueue<Received>(capacity: maxBatch * 2)
    }

    var stats: IngestStats { counters.value }

    /// Runs the consumer, a task feeding its records into the batch queue, and the batch loop, until the consumer
    /// ends (graceful shutdown).
    func run() async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await self.consumer.run() }
            group.addTask {
                defer { self.queue.finish() }
                var pushed = 0
                for try await event in self.consumer.events {
                    switch event {
                    case .message(let message):
                        // Decoded here, on the reading task, so decoding overlaps the previous batch's transaction.
                        await self.queue.push(Received(message: message, event: Result { try Self.decode(message) }))
                        pushed += 1
                    case .partitionsRevoked:
                        // Hold the revocation until every record taken so far is stored and committed, so the next
                        // owner of these partitions starts after them (fewer redeliveries, never a lost record).
                        await self.queue.waitUntilProcessed(pushed)
                    case .partitionsAssigned:
                        break
                    }
                }
            }
            do {
                while let batch = await queue.takeBatch(max: maxBatch) {
                    try await process(batch)
                    queue.markProcessed(batch.count)
                }
            } catch {
                queue.finish()
                throw error
            }
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
        deadLettered.increment(by: dead)
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

/// A bounded hand-over between the task reading the consumer and the batch loop: the reader waits when it is full
/// (so memory stays bounded and the consumer's own buffer applies back-pressure), the loop takes everything that
/// is there, up to a batch, or waits when it is empty. One pusher and one taker; the taker reports what it has
/// processed, so the pusher can hold a partition revocation until the records before it are committed.
final class BatchQueue<Element: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private let capacity: Int
    private var items: [Element] = []
    private var finished = false
    private var takerWaiting: CheckedContinuation<Void, Never>?
    private var pusherWaiting: CheckedContinuation<Void, Never>?
    private var processed = 0
    private var processedWaiting: (target: Int, continuation: CheckedContinuation<Void, Never>)?

    init(capacity: Int) { self.capacity = capacity }

    func push(_ message: Element) async {
        while true {
            var taker: CheckedContinuation<Void, Never>?
            let added = lock.withLock {
                guard items.count < capacity || finished else { return false }
                items.append(message)
                taker = takerWaiting
                takerWaiting = nil
                return true
            }
            if added {
                taker?.resume()
                return
            }
            await withCheckedContinuation { continuation in
                let ready = lock.withLock {
                    if items.count < capacity || finished { return true }
                    pusherWaiting = continuation
                    return false
                }
                if ready { continuation.resume() }
            }
        }
    }

    /// Up to `max` records, waiting for at least one; nil once finished and empty.
    func takeBatch(max: Int) async -> [Element]? {
        while true {
            var pusher: CheckedContinuation<Void, Never>?
            let batch: [Element]? = lock.withLock {
                if !items.isEmpty {
                    let count = Swift.min(max, items.count)
                    let batch = Array(items.prefix(count))
                    items.removeFirst(count)
                    pusher = pusherWaiting
                    pusherWaiting = nil
                    return batch
                }
                return finished ? [] : nil
            }
            if let batch {
                pusher?.resume()
                return batch.isEmpty ? nil : batch
            }
            await withCheckedContinuation { continuation in
                let ready = lock.withLock {
                    if !items.isEmpty || finished { return true }
                    takerWaiting = continuation
                    return false
                }
                if ready { continuation.resume() }
            }
        }
    }

    /// Records that the taker stored and committed `count` more records.
    func markProcessed(_ count: Int) {
        let waiter: CheckedContinuation<Void, Never>? = lock.withLock {
            processed += count
            guard let waiting = processedWaiting, processed >= waiting.target else { return nil }
            processedWaiting = nil
            return waiting.continuation
        }
        waiter?.resume()
    }

    /// Waits until `target` records (counted since start) are processed, or the queue is finished.
    func waitUntilProcessed(_ target: Int) async {
        await withCheckedContinuation { continuation in
            let ready = lock.withLock {
                if processed >= target || finished { return true }
                processedWaiting = (target, continuation)
                return false
            }
            if ready { continuation.resume() }
        }
    }

    /// No more records will come (or the taker stopped); wakes every waiter.
    func finish() {
        let (taker, pusher, processedWaiter) = lock.withLock {
            finished = true
            defer {
                takerWaiting = nil
                pusherWaiting = nil
                processedWaiting = nil
            }
            return (takerWaiting, pusherWaiting, processedWaiting?.continuation)
        }
        taker?.resume()
        pusher?.resume()
        processedWaiter?.resume()
    }
}
