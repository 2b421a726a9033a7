import Contracts
import Logging
import Messaging
import ServiceLifecycle
import Storage

/// Consumes closed statuses, erasure requests and acks in one group, through the shared ``ConsumerPipeline``:
/// whatever arrived while the previous batch was written (up to `maxBatch`) is applied in one ledger transaction, and
/// the batch's offsets are committed once, after it. A batch that completed erasures asks for a WAL checkpoint: the
/// page images from before the completion, which hold the raw accountId, leave the `-wal` file soon, not whenever it
/// is next overwritten.
///
/// Nothing starts before the state topics are read to their end (``RestoreGate``, no timeout). Bad input never loops
/// and never stops a partition: a record that cannot be decoded (no CloudEvents headers included) or validated, an
/// `ErasureRequested` whose tenant cannot be found, or one the ledger refuses for good (a constraint) goes to
/// `<topic>.dlq` with the reason and is committed with its batch; only transient failures (SQLite busy, the broker
/// unreachable) are retried, with a capped backoff, counted in `lethe_retries_total{operation}`.
final class ErasureIntake: Service, Sendable {
    private let pipeline: ConsumerPipeline<ErasureLedger.IntakeWork>
    private let ledger: ErasureLedger
    private let relay: ErasureNotifier
    private let checkpointer: WALCheckpointer
    private let gate: RestoreGate
    private let metrics: ErasureMetrics

    init(
        consumer: KafkaConsumer, ledger: ErasureLedger, topics: LetheTopics, relay: ErasureNotifier,
        checkpointer: WALCheckpointer, producer: KafkaProducer, gate: RestoreGate, metrics: ErasureMetrics,
        logger: Logger, maxBatch: Int = 1000
    ) {
        self.pipeline = ConsumerPipeline(
            consumer: consumer, producer: producer, logger: logger, work: "ledger write", retry: .storage,
            maxBatch: maxBatch
        ) { message in try Self.prepare(message, topics: topics) }
        self.checkpointer = checkpointer
        self.ledger = ledger
        self.relay = relay
        self.gate = gate
        self.metrics = metrics
    }

    /// Why a record is dead-lettered. Carries a reason, never the payload.
    struct Rejected: Error, CustomStringConvertible {
        var description: String
    }

    func run() async throws {
        try await pipeline.run(waitingFor: { await self.gate.waitUntilOpen() }) { batch in
            try await self.apply(batch)
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
