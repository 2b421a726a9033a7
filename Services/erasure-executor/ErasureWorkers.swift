import Contracts
import Foundation
import Logging
import Messaging
import Metrics
import ServiceLifecycle
import Storage
import Synchronization

/// Opens once the state topics were read up to where they ended at start, or after a timeout: intake waits on it so
/// that the first erasures after a start on a fresh file use the tenants' policies and the declared participants.
final class RestoreGate: Sendable {
    private let opened = Atomic<Bool>(false)

    func open() { opened.store(true, ordering: .releasing) }
    var isOpen: Bool { opened.load(ordering: .acquiring) }

    /// Waits until open or `timeout`; returns whether it opened.
    func wait(timeout: Duration) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while !isOpen, ContinuousClock.now < deadline, !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(20))
        }
        return isOpen
    }
}

/// Reads the compacted state topics (`lethe.tenants.v1`, `lethe.erasure.participants.v1`) from the beginning on every
/// start, outside any group, and keeps following them: each record is an idempotent upsert (or, as a tombstone, a
/// delete) of the ledger's copy, so reading the full history again is harmless and the last value per key wins.
final class StateReader: Service, Sendable {
    private let consumer: KafkaConsumer
    private let ledger: ErasureLedger
    private let topics: LetheTopics
    private let gate: RestoreGate
    private let partitions: [TopicPartition]
    private let logger: Logger

    init(
        bootstrapServers: String, partitions: [TopicPartition], ledger: ErasureLedger, topics: LetheTopics,
        gate: RestoreGate, logger: Logger
    ) throws {
        self.consumer = try KafkaConsumer(
            config: KafkaConsumerConfig(
                bootstrapServers: bootstrapServers,
                subscription: .partitions(partitions.map { ($0, offset: KafkaConsumer.beginning) }),
                clientId: "erasure-executor-state"),
            logger: logger)
        self.partitions = partitions
        self.ledger = ledger
        self.topics = topics
        self.gate = gate
        self.logger = logger
    }

    func run() async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await self.consumer.run() }
            // Where each partition ends now; the gate opens once every one is read that far.
            var remaining: [TopicPartition: Int64] = [:]
            for partition in partitions {
                if let marks = try? await consumer.watermarks(of: partition), marks.high > marks.low {
                    remaining[partition] = marks.high - 1
                }
            }
            if remaining.isEmpty { gate.open() }
            for try await message in consumer.messages.cancelOnGracefulShutdown() {
                await apply(message)
                if let last = remaining[message.topicPartition], message.offset >= last {
                    remaining[message.topicPartition] = nil
                    if remaining.isEmpty { gate.open() }
                }
            }
            group.cancelAll()
        }
    }

    private func apply(_ message: KafkaMessage) async {
        do {
            switch message.topic {
            case topics.tenants:
                if message.value == nil {
                    if let key = message.keyString { try await ledger.removeTenant(key) }
                } else {
                    try await ledger.configureTenant(try message.decodeEvent(TenantConfigured.self))
                }
            case topics.erasureParticipants:
                if message.value == nil {
                    if let key = message.keyString { try await ledger.removeParticipant(key) }
                } else {
                    try await ledger.declareParticipant(try message.decodeEvent(ParticipantDeclared.self))
                }
            default:
                break
            }
        } catch {
            // State topics are compacted and re-read on every start: a bad record is logged (never its payload) and
            // skipped, not dead-lettered, so it is not dead-lettered again on each start.
            logger.warning("unusable state record skipped", metadata: [
                "kafka.topic": "\(message.topic)", "partition": "\(message.partition)", "offset": "\(message.offset)",
                "error": "\(error)",
            ])
        }
    }
}

/// Consumes closed statuses, erasure requests and acks in one group, in batches: whatever arrived while the previous
/// batch was written (up to `maxBatch`) is applied in one ledger transaction, and the batch's offsets are committed
/// once, after it. A record that cannot be decoded or validated goes to `<topic>.dlq` with the reason, and is
/// committed with its batch. A batch that completed erasures asks for a WAL checkpoint: the page images from before
/// the completion, which hold the raw accountId, leave the `-wal` file soon, not whenever it is next overwritten.
final class ErasureIntake: Service, Sendable {
    private let consumer: KafkaConsumer
    private let ledger: ErasureLedger
    private let topics: LetheTopics
    private let relay: ErasureNotifier
    private let checkpointer: WALCheckpointer
    private let deadLetters: DeadLetterQueue
    private let gate: RestoreGate
    private let restoreTimeout: Duration
    private let metrics: ErasureMetrics
    private let logger: Logger
    private let maxBatch: Int

    init(
        consumer: KafkaConsumer, ledger: ErasureLedger, topics: LetheTopics, relay: ErasureNotifier,
        checkpointer: WALCheckpointer, producer: KafkaProducer, gate: RestoreGate, restoreTimeout: Duration,
        metrics: ErasureMetrics, logger: Logger, maxBatch: Int = 1000
    ) {
        self.maxBatch = maxBatch
        self.checkpointer = checkpointer
        self.consumer = consumer
        self.ledger = ledger
        self.topics = topics
        self.relay = relay
        self.deadLetters = DeadLetterQueue(producer: producer)
        self.gate = gate
        self.restoreTimeout = restoreTimeout
        self.metrics = metrics
        self.logger = logger
    }

    /// Why a record is dead-lettered. Carries a reason, never the payload.
    struct Rejected: Error, CustomStringConvertible {
        var description: String
    }

    func run() async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await self.consumer.run() }
            if !(await gate.wait(timeout: restoreTimeout)) {
                logger.warning("state topics not fully restored in time; intake starts anyway")
            }
            // Records are decoded and validated in `prepare`, on the task that reads the consumer, so decoding the
            // next batch overlaps the ledger transaction of the current one.
            let prepare: @Sendable (KafkaMessage) -> Prepared = { [self] message in
                Prepared(message: message, work: Result { try self.prepare(message) })
            }
            try await consumer.processInBatches(maxBatch: maxBatch, prepare: prepare) { batch in
                try await process(batch)
            }
            group.cancelAll()
        }
    }

    /// A record with what it means for the ledger, or why it is dead-lettered.
    struct Prepared: Sendable {
        var message: KafkaMessage
        var work: Result<ErasureLedger.IntakeWork?, any Error>
    }

    private func process(_ prepared: [Prepared]) async throws {
        let batch = prepared.map(\.message)
        var work: [ErasureLedger.IntakeWork] = []
        work.reserveCapacity(batch.count)
        for item in prepared {
            let message = item.message
            do {
                if let item = try item.work.get() { work.append(item) }
            } catch {
                logger.warning("unusable record to the DLQ", metadata: [
                    "kafka.topic": "\(message.topic)", "partition": "\(message.partition)",
                    "offset": "\(message.offset)", "error": "\(error)",
                ])
                try await retryUntilDone("dead-lettering", logger: logger) {
                    try await self.deadLetters.route(message, reason: "\(error)")
                }
                metrics.deadLettered.increment()
            }
        }
        if !work.isEmpty {
            // SQLite trouble is retried: the offsets must not move past records whose effect is not durable.
            let ledger = self.ledger
            let items = work
            let effects = try await retryUntilDone("ledger write", logger: logger) { try await ledger.apply(items) }
            var notify = false
            var completed = false
            for effect in effects {
                switch effect {
                case .opened(let count):
                    metrics.intake.increment(by: count)
                    notify = true
                case .repeated, .ack(.ignored):
                    break
                case .ack(.recorded(let latency)):
                    if let latency { metrics.ackLatency.recordSeconds(latency) }
                case .ack(.completed(let latency)):
                    if let latency { metrics.ackLatency.recordSeconds(latency) }
                    metrics.completed.increment()
                    notify = true
                    completed = true
                }
            }
            if notify { relay.notify() }
            if completed { checkpointer.request() }
        }
        do {
            try await consumer.commit(batch)
        } catch {
            // Applied already; a redelivery is recognised (processed events, recorded acks).
            logger.warning("offset commit failed; the batch may be redelivered", metadata: ["error": "\(error)"])
        }
    }

    /// Decodes and validates the record: the ledger work it causes, or nil (a status other than closed). Throws for a
    /// record to dead-letter.
    private func prepare(_ message: KafkaMessage) throws -> ErasureLedger.IntakeWork? {
        let eventId = message.stringHeaders["ce_id"] ?? "\(message.topic):\(message.partition):\(message.offset)"
        switch message.topic {
        case topics.pdrStatus:
            let status = try message.decodeEvent(AccountStatusReported.self)
            guard status.status == .closed else { return nil }
            _ = try AccountKey(appId: status.appId, accountId: status.accountId)
            let tenants = Array(Set(status.tenantIds.filter { !$0.isEmpty })).sorted()
            guard !tenants.isEmpty else { throw Rejected(description: "closed status without tenantIds") }
            return .open(
                tenants.map {
                    IntakeRequest(
                        tenantId: $0, appId: status.appId, accountId: status.accountId, cause: .atlassianClosed,
                        requestedPolicy: nil)
                }, eventId: "status:\(eventId)")
        case topics.erasureRequests:
            let request = try message.decodeEvent(ErasureRequested.self)
            _ = try AccountKey(appId: request.appId, accountId: request.accountId)
            guard !request.requestId.isEmpty else { throw Rejected(description: "requestId is empty") }
            if let tenant = request.tenantId, !tenant.isEmpty {
                return .open(
                    [IntakeRequest(
                        tenantId: tenant, appId: request.appId, accountId: request.accountId, cause: request.cause,
                        requestedPolicy: request.policy)],
                    eventId: "request:\(request.requestId)")
            }
            return .openForApp(
                appId: request.appId, accountId: request.accountId, cause: request.cause, policy: request.policy,
                eventId: "request:\(request.requestId)")
        case topics.erasureAcks:
            return .ack(try message.decodeEvent(ErasureAcknowledged.self))
        default:
            throw Rejected(description: "record from an unexpected topic")
        }
    }
}

/// Periodically dispatches pending erasures, re-sends missing acks, flags overdue erasures, and refreshes the gauges.
final class ErasureSweeper: Service, Sendable {
    private let ledger: ErasureLedger
    private let relay: ErasureNotifier
    private let interval: Duration
    private let metrics: ErasureMetrics
    private let logger: Logger

    init(ledger: ErasureLedger, relay: ErasureNotifier, interval: Duration, metrics: ErasureMetrics, logger: Logger) {
        self.ledger = ledger
        self.relay = relay
        self.interval = interval
        self.metrics = metrics
        self.logger = logger
    }

    func run() async throws {
        var gaugesRefreshed: ContinuousClock.Instant?
        while !Task.isShuttingDownGracefully, !Task.isCancelled {
            do {
                let result = try await ledger.sweep()
                if result.dispatched + result.resent > 0 { relay.notify() }
                metrics.resent.increment(by: result.resent)
                if result.newlyOverdue > 0 {
                    logger.warning("erasures past their deadline", metadata: ["count": "\(result.newlyOverdue)"])
                }
                // The gauges at most once a second, however short the sweep interval: a scrape interval is seconds.
                let due = gaugesRefreshed.map { ContinuousClock.now - $0 >= .seconds(1) } ?? true
                if result.newlyOverdue > 0 || due {
                    metrics.update(try await ledger.counts())
                    gaugesRefreshed = .now
                }
            } catch {
                logger.error("sweep failed", metadata: ["errorType": "\(type(of: error))"])
            }
            try? await Task.sleep(for: interval)
        }
    }
}

/// Something to poke after a transaction enqueued outbox rows (the `OutboxRelay`; a no-op in unit tests).
protocol ErasureNotifier: Sendable {
    func notify()
}

/// The executor's metrics, named `lethe_erasure…`.
struct ErasureMetrics: Sendable {
    let intake = Counter(label: "lethe_erasures_requested_total")
    let completed = Counter(label: "lethe_erasures_completed_total")
    let resent = Counter(label: "lethe_erasure_commands_resent_total")
    let deadLettered = Counter(label: "lethe_erasure_intake_dead_lettered_total")
    let ackLatency = Metrics.Timer(label: "lethe_erasure_ack_latency_seconds")
    let open = Gauge(label: "lethe_erasures_open")
    let overdue = Gauge(label: "lethe_erasures_overdue")

    func update(_ counts: LedgerCounts) {
        open.record(counts.open)
        overdue.record(counts.overdue)
        for (status, count) in counts.byStatus {
            Gauge(label: "lethe_erasures", dimensions: [("status", status.rawValue)]).record(count)
        }
    }
}

extension Metrics.Timer {
    func recordSeconds(_ seconds: TimeInterval) {
        recordNanoseconds(Int64(max(0, seconds) * 1_000_000_000))
    }
}
