import Foundation
import GRDB
import Logging
import Messaging
import ServiceLifecycle
import Synchronization

/// Publishes the outbox: reads unsent records in outbox order, sends them and waits for the broker's
/// acknowledgement, then marks them sent (or, with zero retention, deletes them). Records are sent in id order and librdkafka keeps order per partition, so
/// per key the broker sees the records in the order they were written.
///
/// A crash between the acknowledgement and the mark re-sends that batch on restart (at-least-once): consumers see
/// the same records again, in the same order, so the last value per key is still the newest. Nothing is lost,
/// because a record leaves the unsent set only after the broker acknowledged it.
///
/// List it after the `KafkaProducer` it uses in the `ServiceGroup` (which shuts services down in reverse order), so
/// the producer outlives it. Call ``notify()`` after a transaction that enqueued records to publish them without
/// waiting for the next poll.
package final class OutboxRelay: Service, Sendable {
    private let database: SQLiteDatabase
    private let producer: KafkaProducer
    private let logger: Logger
    private let batchSize: Int
    private let pollInterval: Duration
    private let linger: Duration
    private let retention: Duration
    private let checkpointer: WALCheckpointer?
    private let wake: AsyncStream<Void>
    private let wakeContinuation: AsyncStream<Void>.Continuation
    /// The newest record this relay has sent (ids only grow), so a waiter looks here rather than read the table.
    private let sentThrough = Mutex<Int64>(0)

    /// - Parameters:
    ///   - batchSize: records per send; one batch is one awaited round of acknowledgements.
    ///   - pollInterval: how often the outbox is checked without a ``notify()``, so records written by a crashed
    ///     process (or without a notify) still go out.
    ///   - linger: how long the relay waits after a ``notify()`` before it reads the outbox, so that the records of
    ///     several transactions go out in one round (one read, one send, one mark) instead of one round each. A
    ///     round costs a few thread wake-ups whatever it carries, which at a moderate rate (a sign-in at a time)
    ///     is most of the relay's CPU; the records reach the broker at most this much later.
    ///   - retention: how long sent records stay in the table before they are pruned; `.zero` deletes them as soon
    ///     as the broker has them (for records that carry personal data or account identifiers).
    ///   - checkpointer: with `.zero` retention, asked for a checkpoint after deleting a batch that held a tombstone,
    ///     so the tombstone's key leaves the database file and the WAL soon too, not at SQLite's next automatic
    ///     checkpoint. A tombstone announces that something is gone (an account erased), so its key should go with
    ///     it; other records do not ask, which keeps checkpoints out of a busy writer's way.
    package init(
        database: SQLiteDatabase, producer: KafkaProducer, logger: Logger, batchSize: Int = 1000,
        pollInterval: Duration = .milliseconds(250), linger: Duration = .milliseconds(20),
        retention: Duration = .seconds(3600),
        checkpointer: WALCheckpointer? = nil
    ) {
        self.database = database
        self.producer = producer
        self.logger = logger
        self.batchSize = batchSize
        self.pollInterval = pollInterval
        self.linger = linger
        self.retention = retention
        self.checkpointer = checkpointer
        (wake, wakeContinuation) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
    }

    /// Asks the relay to look at the outbox now.
    package func notify() { wakeContinuation.yield() }

    /// Asks the relay to go now and waits until every record the outbox holds unsent at the call is sent, or until
    /// `deadline`; returns how many of them are still unsent (0 once all are). Records written while it waits are not
    /// waited for: under a steady load the outbox is seldom empty. Without a deadline it waits as long as the broker
    /// takes, handing the count to `stillWaiting` every 10 s. A partition-owning replica calls it before its
    /// partitions go, and before it reads partitions back, so the changelog holds every change it made; oauth-gateway
    /// before it acknowledges anything.
    package func waitUntilSent(
        deadline: ContinuousClock.Instant? = nil, stillWaiting: (Int) -> Void = { _ in }
    ) async throws -> Int {
        guard let newest = try await database.read({ db in try Outbox.newestPendingId(in: db) }) else { return 0 }
        return try await waitUntilSent(through: newest, deadline: deadline, stillWaiting: stillWaiting)
    }

    /// ``waitUntilSent(deadline:stillWaiting:)`` without a deadline, logging a warning every 10 s it still waits
    /// (the broker unreachable): for an acknowledgement or a commit that must follow the records (`before` says which).
    package func waitUntilSent(before acknowledgement: String, logger: Logger) async throws {
        _ = try await waitUntilSent { unsent in
            logger.warning("waiting for the outbox to be sent before \(acknowledgement)", metadata: [
                "count": "\(unsent)",
            ])
        }
    }

    /// ``waitUntilSent(deadline:stillWaiting:)`` for the unsent records up to `newest` (an outbox id).
    package func waitUntilSent(
        through newest: Int64, deadline: ContinuousClock.Instant? = nil, stillWaiting: (Int) -> Void = { _ in }
    ) async throws -> Int {
        notify()
        var lastReported = ContinuousClock.now
        var lastRead = ContinuousClock.now
        while true {
            // What this relay sent, every 2 ms; the table every 50 ms, for what another process or hand marked sent.
            try await Task.sleep(for: .milliseconds(2))
            if sentThrough.withLock({ $0 }) >= newest { return 0 }
            guard ContinuousClock.now - lastRead >= .milliseconds(50) || deadline.map({ .now >= $0 }) == true else {
                continue
            }
            lastRead = .now
            let unsent = try await database.read { db in try Outbox.pendingCount(through: newest, in: db) }
            if unsent == 0 { return 0 }
            if let deadline, ContinuousClock.now >= deadline { return unsent }
            if ContinuousClock.now - lastReported >= .seconds(10) {
                lastReported = .now
                stillWaiting(unsent)
            }
        }
    }

    /// Publishes until graceful shutdown, then publishes what is left (the producer is still running) and returns.
    package func run() async throws {
        let interval = pollInterval
        let continuation = wakeContinuation
        let ticker = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                continuation.yield()
            }
        }
        defer { ticker.cancel() }
        var lastPrune = ContinuousClock.now
        for await _ in wake.cancelOnGracefulShutdown() {
            if linger > .zero { try? await Task.sleep(for: linger) }
            await drain()
            if retention > .zero, ContinuousClock.now - lastPrune > .seconds(60) {
                lastPrune = .now
                let cutoff = Date().addingTimeInterval(-Double(retention.components.seconds))
                _ = try? await database.write { db in try Outbox.pruneSent(before: cutoff, in: db) }
            }
        }
        await drain(attempts: 3)
    }

    /// Publishes every unsent record. On a failure it backs off and retries the same records, up to `attempts`
    /// rounds (nil: until cancelled or a graceful shutdown).
    private func drain(attempts: Int? = nil) async {
        var failures = 0
        while !Task.isCancelled {
            do {
                let size = batchSize
                let batch = try await database.read { db in try Outbox.pending(limit: size, in: db) }
                if batch.isEmpty { return }
                try await producer.send(batch.map(\.message))
                let lastId = batch[batch.count - 1].id
                // Not synced: a power loss that undoes the mark (or the deletion) re-sends these records, which the
                // at-least-once contract above already allows, while a synced write would cost the writer one more
                // sync per batch.
                if retention == .zero {
                    try await database.writeUnsynced { db in try Outbox.deleteSent(through: lastId, in: db) }
                    if batch.contains(where: { $0.message.value == nil }) { checkpointer?.request() }
                } else {
                    try await database.writeUnsynced { db in try Outbox.markSent(through: lastId, in: db) }
                }
                sentThrough.withLock { $0 = max($0, lastId) }
                failures = 0
                // A short batch emptied the outbox as it was when read; what was written since has notified the relay,
                // which drains again: no second read to find nothing.
                if batch.count < size { return }
            } catch {
                failures += 1
                logger.warning(
                    "outbox publish failed; retrying", metadata: ["error": "\(error)", "attempt": "\(failures)"])
                if let attempts, failures >= attempts { return }
                if gracefulShutdownRequested(), attempts == nil { return }
                try? await Task.sleep(for: .milliseconds(min(5000, 100 << min(failures, 6))))
            }
        }
    }

    private func gracefulShutdownRequested() -> Bool {
        Task.isShuttingDownGracefully
    }
}
