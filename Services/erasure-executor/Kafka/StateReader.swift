import Contracts
import Foundation
import Logging
import Messaging
import Metrics
import ServiceLifecycle
import Synchronization

/// Reads the compacted state topics (`lethe.tenants.v1`, `lethe.erasure.participants.v1`) from the beginning on every
/// start, outside any group, and keeps following them: each record is an idempotent upsert (or, as a tombstone, a
/// delete) of the ledger's copy, applied in batches, so reading the full history again is harmless and the last value
/// per key wins.
///
/// **Its own changelog first.** Before the state topics it reads `lethe.erasure.state.v1` back into the ledger (see
/// ErasureLedger+Changelog): an executor that lost its volume continues every erasure from there; on an intact file
/// this changes nothing.
///
/// **Read to the end before anything is dispatched.** At start it writes a ``RestoreMarker`` to every partition of
/// both topics and reads until it has seen its own marker in each, so everything declared before the start has been
/// read. Only then does the gate open. Failing to write or read keeps it shut, retried, with the reason in
/// `/health/ready`.
///
/// **Nothing is dropped silently.** A record that cannot be used (not decodable, no CloudEvents headers, a key that is
/// not its tenant or participant, `deadlineDays` ≤ 0) goes to `<topic>.dlq` with the reason, once (remembered in the
/// ledger, so the re-read at the next start does not send it again). A declaration that cannot be read still keeps
/// its participant — named by the record key — declared, so no erasure completes without it; it raises an alert
/// (`lethe_erasure_participant_declarations_rejected_total`, an error log, the gauge
/// `lethe_erasure_participants_rejected`) until the participant declares again properly or an operator retires it.
/// `deadlineDays` above 30 is capped at 30.
final class StateReader: Service, Sendable {
    private let pipeline: ConsumerPipeline<Prepared>
    private let producer: KafkaProducer
    private let deadLetters: DeadLetterQueue
    private let ledger: ErasureLedger
    private let topics: LetheTopics
    private let gate: RestoreGate
    private let relay: ErasureNotifier
    private let metrics: ErasureMetrics
    private let partitions: [TopicPartition]
    private let changelogPartitions: [TopicPartition]
    private let changelog: ChangelogReader
    private let bootstrapServers: String
    private let alertEvery: Duration
    private let logger: Logger

    init(
        bootstrapServers: String, partitions: [TopicPartition], changelogPartitions: [TopicPartition],
        ledger: ErasureLedger, topics: LetheTopics,
        producer: KafkaProducer, gate: RestoreGate, relay: ErasureNotifier, metrics: ErasureMetrics,
        alertEvery: Duration, logger: Logger
    ) throws {
        let consumer = try KafkaConsumer(
            config: KafkaConsumerConfig(
                bootstrapServers: bootstrapServers,
                subscription: .partitions(partitions.map { ($0, from: .beginning) }),
                clientId: "erasure-executor-state"),
            logger: logger)
        // No commits: outside any group, every start reads both topics from their beginning. `prepare` never throws
        // (a record it cannot use is a `reject`, dead-lettered once by `handle`), and `handle` retries its own writes.
        let (topics, metrics) = (topics, metrics)
        self.pipeline = ConsumerPipeline(
            consumer: consumer, producer: producer, logger: logger, work: "applying state records", retry: .storage,
            maxBatch: 1000, commits: false
        ) { message in
            Prepared(message: message, kind: Self.prepare(message, topics: topics, metrics: metrics, logger: logger))
        }
        self.producer = producer
        self.deadLetters = DeadLetterQueue(producer: producer)
        self.partitions = partitions
        self.changelogPartitions = changelogPartitions
        self.changelog = ChangelogReader(
            ledger: ledger, bootstrapServers: bootstrapServers, producer: producer, gate: gate, logger: logger)
        self.bootstrapServers = bootstrapServers
        self.ledger = ledger
        self.topics = topics
        self.gate = gate
        self.relay = relay
        self.metrics = metrics
        self.alertEvery = alertEvery
        self.logger = logger
    }

    /// What one state record means.
    struct Prepared: Sendable {
        enum Kind: Sendable {
            /// A restore marker, with its id.
            case marker(String)
            /// A change to apply; `liveKey` says which key it makes live (true) or removes (false) for the restore.
            case apply(ErasureLedger.StateChange, key: String, live: Bool)
            /// A record for the DLQ with the reason; `keep` is applied all the same (a rejected declaration keeps
            /// its participant), and `key` stays live during the restore when known.
            case reject(String, keep: ErasureLedger.StateChange?, key: String?)
        }

        var message: KafkaMessage
        var kind: Kind
    }

    /// The restore in progress: markers still to see and the keys whose last record so far is not a tombstone. Only
    /// the handling task changes it.
    private final class RestoreProgress: Sendable {
        let state = Mutex(Restore(pending: [:]))
    }

    private struct Restore {
        var pending: [TopicPartition: String]
        var participants: Set<String> = []
        var tenants: Set<String> = []
        var records = 0

        mutating func note(topic: String, topics: LetheTopics, key: String, live: Bool) {
            if topic == topics.erasureParticipants {
                if live { participants.insert(key) } else { participants.remove(key) }
            } else if topic == topics.tenants {
                if live { tenants.insert(key) } else { tenants.remove(key) }
            }
        }
    }

    func run() async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await self.alertWhileNotRestored() }
            let restore = RestoreProgress()
            try await pipeline.run(waitingFor: {
                try await self.changelog.restore(self.changelogPartitions)
                let markers = RestoreMarker.make(for: self.partitions)
                restore.state.withLock { $0 = Restore(pending: markers.ids) }
                self.gate.report(pendingPartitions: markers.ids.count)
                try await self.writeMarkers(markers.records)
                return true
            }) { batch in
                try await self.handle(batch.map(\.item), restore: restore)
                return []
            }
            group.cancelAll()
        }
    }

    /// Writes this start's marker to every state partition, retrying (with the reason in the readiness check) until
    /// the broker acknowledged them all. A fatal producer error ends the service (and the process).
    private func writeMarkers(_ messages: [OutgoingMessage]) async throws {
        try await retryUntilDone("writing the restore markers", logger: logger, onRetry: {
            self.gate.report(problem: "cannot write the restore markers to the state topics: \($0)")
        }) {
            try await self.producer.send(messages)
        }
    }

    /// Logs an error at every `alertEvery` while the restore is not done: the executor is up but will not dispatch.
    private func alertWhileNotRestored() async {
        while !gate.isOpen, !Task.isCancelled, !Task.isShuttingDownGracefully {
            try? await Task.sleep(for: alertEvery)
            if let reason = gate.notReadyReason {
                logger.error("erasure-executor not ready", metadata: ["reason": "\(reason)"])
            }
        }
    }

    private func handle(_ batch: [Prepared], restore: RestoreProgress) async throws {
        // Dead letters first (once per record, ever): then the ledger remembers them with the batch.
        try await deadLetterOnce(batch)
        var changes: [ErasureLedger.StateChange] = []
        var keys: [(topic: String, key: String, live: Bool)] = []
        var markers: [(TopicPartition, String)] = []
        for item in batch {
            let message = item.message
            changes += Self.changes(of: item)
            switch item.kind {
            case .marker(let id):
                markers.append((TopicPartition(topic: message.topic, partition: message.partition), id))
            case .apply(_, let key, let live):
                keys.append((message.topic, key, live))
            case .reject(_, _, let key):
                if let key { keys.append((message.topic, key, true)) }
            }
        }
        let joined = try await apply(changes, batch: batch)
        if joined > 0 {
            logger.info("participants joined open erasures", metadata: ["commands": "\(joined)"])
            relay.notify()
        }
        guard !gate.isStateRead else { return }
        try await advance(restore, records: batch.count, keys: keys, markers: markers)
    }

    /// The unusable records of a batch to their DLQ, each alerted but sent only if no earlier read sent it.
    private func deadLetterOnce(_ batch: [Prepared]) async throws {
        let rejected = batch.compactMap { item -> (KafkaMessage, String)? in
            if case .reject(let reason, _, _) = item.kind { return (item.message, reason) }
            return nil
        }
        guard !rejected.isEmpty else { return }
        let ledger = self.ledger
        let positions = rejected.map { (topic: $0.0.topic, partition: $0.0.partition, offset: $0.0.offset) }
        let sent = try await retryUntilDone("reading dead-lettered state records", logger: logger, policy: .storage) {
            try await ledger.deadLettered(positions)
        }
        for (message, reason) in rejected {
            alert(message, reason: reason)
            guard !sent.contains("\(message.topic):\(message.partition):\(message.offset)") else { continue }
            try await route(message, reason: reason)
        }
    }

    /// Notes a batch's keys and markers in the restore; once every marker is seen, finishes the restore (the ledger
    /// drops what the topics no longer hold) and opens the gate.
    private func advance(
        _ restore: RestoreProgress, records: Int, keys: [(topic: String, key: String, live: Bool)],
        markers: [(TopicPartition, String)]
    ) async throws {
        let topics = self.topics
        let progress = restore.state.withLock { restore in
            restore.records += records
            for (topic, key, live) in keys { restore.note(topic: topic, topics: topics, key: key, live: live) }
            for (partition, id) in markers where restore.pending[partition] == id { restore.pending[partition] = nil }
            return restore
        }
        gate.report(pendingPartitions: progress.pending.count)
        guard progress.pending.isEmpty else { return }
        let ledger = self.ledger
        let (participants, tenants) = (progress.participants, progress.tenants)
        let joinedAtEnd = try await retryUntilDone("finishing the state restore", logger: logger, policy: .storage, onRetry: {
            self.gate.report(problem: "cannot write the ledger: \($0)")
        }) {
            try await ledger.finishRestore(participants: participants, tenants: tenants)
        }
        gate.open()
        metrics.restored.record(1)
        if joinedAtEnd > 0 { relay.notify() }
        logger.info("tenants and participants read to their end; dispatching starts", metadata: [
            "records": "\(progress.records)", "participants": "\(participants.count)", "tenants": "\(tenants.count)",
            "commands": "\(joinedAtEnd)",
        ])
    }

    /// Applies the batch's changes in one transaction, retrying transient failures. A change the ledger refuses for
    /// good (a constraint) is found by applying them one at a time, and its record goes to the DLQ; the others apply.
    private func apply(_ changes: [ErasureLedger.StateChange], batch: [Prepared]) async throws -> Int {
        guard !changes.isEmpty else { return 0 }
        let ledger = self.ledger
        let join = gate.isStateRead
        let onRetry: (String) -> Void = { self.gate.report(problem: "cannot write the ledger: \($0)") }
        do {
            let effect = try await retryUntilDone("applying state records", logger: logger, policy: .storage, onRetry: onRetry) {
                try await ledger.applyState(changes, joinOpenErasures: join)
            }
            note(effect)
            return effect.joined
        } catch where !RetryPolicy.storage.isTransient(error) && !(error is CancellationError) {
            logger.error("a state batch was refused by the ledger; applying its records one at a time", metadata: [
                "error": "\(RetryPolicy.storage.describe(error))",
            ])
        }
        var joined = 0
        for item in batch {
            let single = Self.changes(of: item)
            guard !single.isEmpty else { continue }
            do {
                let effect = try await retryUntilDone("applying state records", logger: logger, policy: .storage, onRetry: onRetry) {
                    try await ledger.applyState(single, joinOpenErasures: join)
                }
                note(effect)
                joined += effect.joined
            } catch where !RetryPolicy.storage.isTransient(error) && !(error is CancellationError) {
                let reason = "the ledger refused it: \(RetryPolicy.storage.describe(error))"
                alert(item.message, reason: reason)
                try await route(item.message, reason: reason)
            }
        }
        return joined
    }

    /// The ledger changes of one record: its change, or for a rejected one what it keeps and the note that it was
    /// dead-lettered.
    private static func changes(of item: Prepared) -> [ErasureLedger.StateChange] {
        let message = item.message
        switch item.kind {
        case .marker: return []
        case .apply(let change, _, _): return [change]
        case .reject(let reason, let keep, _):
            return (keep.map { [$0] } ?? []) + [.deadLettered(
                topic: message.topic, partition: message.partition, offset: message.offset, reason: reason)]
        }
    }

    private func note(_ effect: ErasureLedger.StateEffect) {
        if effect.retirements > 0 {
            logger.notice("participant retirements applied from the participants topic", metadata: [
                "retirements": "\(effect.retirements)",
            ])
            relay.notify()  // the erasures it completed have their records in the outbox
        }
        for name in effect.ignoredRetired {
            logger.info("a declaration from before its participant's retirement is ignored", metadata: [
                "participant": "\(name)",
            ])
        }
    }

    /// The alert for a record that cannot be used; a participant's declaration is an error (erasures wait for it).
    private func alert(_ message: KafkaMessage, reason: String) {
        let metadata: Logger.Metadata = [
            "topic": "\(message.topic)", "partition": "\(message.partition)", "offset": "\(message.offset)",
            "error": "\(reason)",
        ]
        if message.topic == topics.erasureParticipants {
            metrics.declarationsRejected.increment()
            var withName = metadata
            if let key = message.keyString { withName["participant"] = "\(key)" }
            logger.error(
                "participant declaration rejected to the DLQ; erasures keep waiting for the participant until it declares again or an operator retires it",
                metadata: withName)
        } else {
            logger.error("unusable state record to the DLQ", metadata: metadata)
        }
    }

    private func route(_ message: KafkaMessage, reason: String) async throws {
        try await retryUntilDone("dead-lettering", logger: logger) {
            try await self.deadLetters.route(message, reason: reason)
        }
    }
}
