import Contracts
import Logging
import Messaging
import ServiceLifecycle
import ServiceRuntime
import Storage

/// Consumes closed statuses, erasure requests and acks in one group, through the shared ``ConsumerPipeline``:
/// whatever arrived while the previous batch was written (up to `maxBatch`) is applied in one ledger transaction, and
/// the batch's offsets are committed once, after it and after the outbox has sent what it wrote (its changelog
/// records and commands; the next batch is written meanwhile). A batch that completed erasures asks for a WAL
/// checkpoint: the page images from before the completion, which hold the raw accountId, leave the `-wal` file soon,
/// not whenever it is next overwritten.
///
/// **Partition-owned.** The group's range assignor gives a member the same partition numbers of the three topics,
/// and an erasure's records are all on its subject's partition (its id is drawn for it), so a replica owns the
/// erasures of the partitions it is assigned. At each assignment it forgets the erasures of partitions it no longer
/// owns and reads back the changelog of the ones it owns now, before any record behind the assignment; at each
/// revocation the sweeper pauses and the outbox is sent before the partitions go, so the next owner reads back every
/// change (``PartitionOwnership``, ``ChangelogReader``).
///
/// Nothing starts before the state topics are read to their end (``RestoreGate``, no timeout). Bad input never loops
/// and never stops a partition: a record that cannot be decoded (no CloudEvents headers included) or validated, an
/// `ErasureRequested` whose tenant cannot be found, or one the ledger refuses for good (a constraint) goes to
/// `<topic>.dlq` with the reason and is committed with its batch; only transient failures (SQLite busy, the broker
/// unreachable) are retried, with a capped backoff, counted in `lethe_retries_total{operation}`.
final class ErasureIntake: Service, Sendable {
    private let pipeline: ConsumerPipeline<ErasureLedger.IntakeWork>
    private let ledger: ErasureLedger
    private let relay: OutboxRelay
    private let checkpointer: WALCheckpointer
    private let gate: RestoreGate
    private let metrics: ErasureMetrics
    private let changelog: ChangelogReader
    private let changelogTopic: String
    private let ownership: PartitionOwnership
    private let logger: Logger

    init(
        consumer: KafkaConsumer, ledger: ErasureLedger, topics: LetheTopics, relay: OutboxRelay,
        checkpointer: WALCheckpointer, producer: KafkaProducer, gate: RestoreGate, metrics: ErasureMetrics,
        changelog: ChangelogReader, ownership: PartitionOwnership, logger: Logger, maxBatch: Int = 1000
    ) {
        self.pipeline = ConsumerPipeline(
            consumer: consumer, producer: producer, logger: logger, work: "ledger write", retry: .storage,
            maxBatch: maxBatch,
            // The batch's changelog records on the broker before its offsets are committed: a replica killed in
            // between would leave the next owner of the partitions (reading the changelog back, perhaps on an empty
            // volume) without the erasures it opened or the acks it recorded, and nobody to bring them again.
            beforeCommit: { try await relay.waitUntilSent(before: "committing a batch", logger: logger) }
        ) { message in try Self.prepare(message, topics: topics) }
        self.checkpointer = checkpointer
        self.ledger = ledger
        self.relay = relay
        self.gate = gate
        self.metrics = metrics
        self.changelog = changelog
        self.changelogTopic = topics.erasureState
        self.ownership = ownership
        self.logger = logger
    }

    /// Why a record is dead-lettered. Carries a reason, never the payload.
    struct Rejected: Error, CustomStringConvertible {
        var description: String
    }

    func run() async throws {
        try await pipeline.run(waitingFor: { await self.gate.waitUntilStateRead() }, onGroupChange: { change in
            switch change {
            case .assigned(let partitions): try await self.assigned(partitions)
            case .revoked(let partitions): try await self.revoked(partitions)
            }
        }) { batch in
            try await self.apply(batch)
        }
    }

    /// Forgets the erasures of partitions no longer this replica's, reads back the changelog of the ones it owns now,
    /// and lets the sweeper and the API go on with them.
    private func assigned(_ partitions: [TopicPartition]) async throws {
        let owned = Set(partitions.map(\.partition))
        let started = ContinuousClock.now
        let dropped = try await ledger.dropPartitions(keeping: owned)
        // The forgotten open erasures held raw accountIds: their page images leave the -wal file now.
        if dropped > 0 { checkpointer.request() }
        if !owned.isEmpty {  // a member the group gave nothing (more replicas than partitions) reads nothing back
            try await changelog.restore(
                owned.sorted().map { TopicPartition(topic: changelogTopic, partition: $0) },
                done: "the changelog of the assigned partitions read back")
        }
        ownership.settle(owned)
        gate.partitionsWereRestored()
        relay.notify()  // a restored open erasure is re-sent at once
        logger.info("erasure partitions assigned", metadata: [
            "partitions": "\(owned.sorted())", "erasure.dropped": "\(dropped)",
            "erasure.assign_time": "\(ContinuousClock.now - started)",
        ])
    }

    /// Pauses the sweeper and waits (up to 20 s, within the group's revocation timeout) until the outbox is sent, so
    /// that whoever owns the partitions next reads back every change made here.
    private func revoked(_ partitions: [TopicPartition]) async throws {
        guard !partitions.isEmpty else { return }
        ownership.unsettle()
        let unsent = try await relay.waitUntilSent(deadline: .now + .seconds(20))
        if unsent > 0 {
            logger.warning(
                "erasure partitions revoked with records still unsent; the next owner re-sends what it lacks",
                metadata: ["count": "\(unsent)"])
        }
    }

    /// Applies the batch in one ledger transaction; the records the ledger rejects (a tenant it cannot find) are
    /// refused, for the DLQ.
    private func apply(_ batch: [Delivered<ErasureLedger.IntakeWork>]) async throws -> [Refusal] {
        let effects = try await ledger.apply(batch.map(\.item))
        var refusals: [Refusal] = []
        var notify = false
        var completed = false
        for (effect, record) in zip(effects, batch) {
            switch effect {
            case .opened(let count):
                metrics.intake.increment(by: count)
                notify = true
            case .repeated, .ack(.ignored):
                break
            case .rejected(let reason):
                refusals.append(Refusal(record.message, reason: reason))
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
        return refusals
    }

    /// Decodes and validates the record: the ledger work it causes, or nil (a status other than closed). Throws for a
    /// record to dead-letter.
    private static func prepare(_ message: KafkaMessage, topics: LetheTopics) throws -> ErasureLedger.IntakeWork? {
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
            if let tenant = request.tenantId {
                guard !tenant.isEmpty else { throw Rejected(description: "tenantId is empty (omit it for every tenant)") }
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
