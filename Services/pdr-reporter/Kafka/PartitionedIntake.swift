import Contracts
import Foundation
import Logging
import Messaging
import Metrics
import ServiceLifecycle
import Storage
import Synchronization

/// Keeps the registry equal to this instance's share of `lethe.pdr.accounts.v1`, restored with its changelog.
///
/// Instances form one consumer group over the accounts topic only; the changelog (`lethe.pdr.reports.v1`) is read by a
/// separate restore reader assigned to the *same partition numbers* (docs/architecture.md, the Kafka Streams way).
/// Both topics are keyed `appId:accountId`, partitioned by murmur2 with the same count, so partition p of both holds
/// the same accounts.
///
/// Ordering, per group event (the consumer yields them in the order they happened, and a revocation waits until we
/// ask for the next event):
/// - `partitionsAssigned(ps)`: drop any stale rows of ps, then restore ps's changelog completely (see
///   `restoreChangelog`) and adopt the per-app cycle it implies, and only then take the next event — so every
///   `AccountHeld` of ps is applied on top of the restored changelog and a held account resumes from its last report,
///   never earlier. Nothing of ps is in the registry (so nothing of it is scheduled) before that.
/// - `message`: `AccountHeld` → hold; tombstone → release at once; anything undecodable → the DLQ. Consecutive
///   records are applied in batches (whatever the consumer had buffered, up to `maxBatch`) in one registry transaction,
///   in their order.
/// - `partitionsRevoked(ps)`: drop ps's rows before acknowledging, so this instance stops reporting them before the
///   next owner can start.
///
/// Offsets: none are ever committed. The registry of a partition is rebuilt from both topics (compacted: on Tansu, full
/// history where the last value per key wins) every time the partition is assigned, so the group always starts an
/// assigned partition from its beginning (`auto.offset.reset=earliest`, nothing committed). A crash therefore loses
/// nothing: the next owner rebuilds from the topics, not from this instance's SQLite file.
final class PartitionedIntake: Service, Sendable {
    private let consumer: KafkaConsumer
    private let registry: any PartitionedAccountRegistry
    private let loop: ReportingLoop
    private let producer: KafkaProducer
    private let topics: LetheTopics
    private let bootstrapServers: String
    private let restoreTimeout: Duration
    private let restoreProgressInterval: Duration
    /// The accounts topic's partition count (`KAFKA_TOPIC_PARTITIONS`, which topic creation enforces), for this
    /// replica's ``PacingShare``.
    private let partitionCount: Int
    /// The partitions of the accounts topic this replica owns now (assignments and revocations are handled one at a
    /// time, in order).
    private let owned = Mutex<Set<Int32>>([])
    private let logger: Logger


    struct RestoreTimedOut: Error, CustomStringConvertible {
        var partitions: [Int32]
        var description: String { "restore of changelog partitions \(partitions) timed out" }
    }

    /// What a changelog restore applied, and the cycle per app its records imply (see `restoreChangelog`).
    struct RestoredChangelog: Sendable {
        var applied: Int
        var impliedCycles: [String: Duration]
    }

    init(consumer: KafkaConsumer, registry: any PartitionedAccountRegistry, loop: ReportingLoop,
         producer: KafkaProducer, topics: LetheTopics, bootstrapServers: String, partitionCount: Int,
         restoreTimeout: Duration, restoreProgressInterval: Duration = .seconds(5), logger: Logger) {
        self.consumer = consumer
        self.registry = registry
        self.loop = loop
        self.producer = producer
        self.topics = topics
        self.bootstrapServers = bootstrapServers
        self.restoreTimeout = restoreTimeout
        self.restoreProgressInterval = restoreProgressInterval
        self.partitionCount = partitionCount
        self.logger = logger
    }

    /// Most records handled as one batch (one registry transaction).
    static let maxBatch = 5000

    func run() async throws {
        // Nothing is assigned yet: rows left by an earlier run of this process belong to no one until restored.
        try await registry.dropAll()
        // The shared pipeline, without commits, with the group's changes: consecutive records are applied as one batch
        // (one SQLite transaction), an assignment's restore completes before any record behind it is applied, and a
        // revocation is acknowledged only after its rows are dropped. A record that cannot be understood goes to the
        // DLQ (the reason only, never the payload) and the intake moves on: one bad producer must not stop PDR for
        // everyone. SQLite trouble that passes is retried, for as long as it lasts.
        let pipeline = ConsumerPipeline(
            consumer: consumer, producer: producer, logger: logger, work: "applying held accounts",
            retry: .storage, maxBatch: Self.maxBatch, commits: false, decode: Self.decode)
        let loop = self.loop
        try await pipeline.run(onGroupChange: { change in
            switch change {
            case .assigned(let partitions): try await self.assigned(partitions)
            case .revoked(let partitions): try await self.revoked(partitions)
            }
        }) { batch in
            try await loop.apply(batch.map(\.item))
            return []
        }
    }

    /// What a `lethe.pdr.accounts.v1` record means: `AccountHeld` → hold (with the record's partition), a tombstone →
    /// release at once; a key that is not `appId:accountId`, or not the event's, or an undecodable record, throws the
    /// dead letter's reason.
    static func decode(_ message: KafkaMessage) throws -> HeldChange {
        let key = try AccountKey(bytes: message.key ?? [])
        guard message.value != nil else { return .release(appId: key.appId, accountId: key.accountId) }
        let event = try message.decodeEvent(AccountHeld.self)
        guard event.appId == key.appId, event.accountId == key.accountId else {
            throw ContractError.invalidKey(reason: "key does not match the event's appId:accountId")
        }
        return .hold(HeldAccount(event), partition: message.partition)
    }

    private func assigned(_ partitions: [TopicPartition]) async throws {
        let numbers = partitions.filter { $0.topic == topics.pdrAccounts }.map(\.partition).sorted()
        guard !numbers.isEmpty else { return }
        let started = ContinuousClock.now
        for partition in numbers { try await registry.dropPartition(partition) }
        let restore = try await restoreChangelog(numbers)
        let restored = restore.applied
        for (appId, cycle) in restore.impliedCycles.sorted(by: { $0.key < $1.key }) {
            try await loop.adoptRestoredCycle(appId: appId, implied: cycle)
        }
        Timer(label: "lethe_pdr_restore_seconds").record(duration: ContinuousClock.now - started)
        Counter(label: "lethe_pdr_changelog_records_restored_total").increment(by: restored)
        let ownedCount = owned.withLock { $0.formUnion(numbers); return $0.count }
        loop.pacing.set(owned: ownedCount, of: partitionCount)
        Gauge(label: "lethe_pdr_partitions_assigned").record(ownedCount)
        logger.info("partitions assigned; changelog restored", metadata: [
            "kafka.partitions": "\(numbers)", "pdr.changelog_records": "\(restored)",
            "pdr.restore_time": "\(ContinuousClock.now - started)",
            "pdr.pacing_share": "\(loop.pacing.value)",
        ])
    }

    private func revoked(_ partitions: [TopicPartition]) async throws {
        let numbers = partitions.filter { $0.topic == topics.pdrAccounts }.map(\.partition).sorted()
        for partition in numbers { try await registry.dropPartition(partition) }
        // Before acknowledging the revocation: every call already sent for these accounts must have its
        // AccountReported acknowledged, so the next owner's restore (which reads up to its own, later marker)
        // sees it. Bounded below the consumer's revocation timeout; a sink that cannot publish (Kafka down)
        // leaves at most that batch to be re-sent — the documented at-least-once case.
        if await !loop.drainInFlight(timeout: .seconds(20)) {
            logger.warning("revoked with a PDR call still unrecorded; its batch may be re-sent by the next owner")
        }
        Gauge(label: "lethe_pdr_partitions_assigned").record(owned.withLock { $0.subtract(numbers); return $0.count })
        logger.info("partitions revoked; their accounts dropped", metadata: ["kafka.partitions": "\(numbers)"])
    }

    /// Reads changelog partitions `partitions` from their beginning until this restore's own marker, applying every
    /// `AccountReported` (last value per key wins). Returns how many records were applied, and per app the cycle its
    /// latest records imply.
    ///
    /// The implied cycle: `nextDueAt − reportedAt` of the app's last record read from a partition (offset order, so
    /// the latest written — a report under the current cycle, or a record republished when the cycle changed, see
    /// `AppReporter.adopt`), rounded to the millisecond the dates carry; over several partitions the longest wins,
    /// because following too long a cycle for a moment is late while too short a one would be early.
    ///
    /// Read to the end by ``RestoreMarker`` (not the high watermark, which Tansu does not report exactly): the marker
    /// comes after every `AccountReported` the previous owner got acknowledged before its sink returned, so the
    /// restore sees everything it recorded. Markers from other restores (other instances, earlier assignments) are
    /// skipped.
    private func restoreChangelog(_ partitions: [Int32]) async throws -> RestoredChangelog {
        let (registry, logger, progressInterval) = (self.registry, self.logger, restoreProgressInterval)
        let (bootstrapServers, producer, timeout) = (self.bootstrapServers, self.producer, restoreTimeout)
        let changelog = partitions.map { TopicPartition(topic: topics.pdrReports, partition: $0) }
        let progress = RestoreProgress.Shared()
        logger.info("restoring the changelog of assigned partitions", metadata: ["kafka.partitions": "\(partitions)"])
        try await withThrowingTaskGroup(of: Bool.self) { group in
            group.addTask {
                _ = try await RestoreMarker.readToEnd(
                    changelog, bootstrapServers: bootstrapServers, producer: producer, clientId: "pdr-reporter-restore",
                    logger: logger, maxBatch: Self.maxBatch
                ) { messages in
                    try await Self.applyChangelog(messages, to: registry, progress: progress, logger: logger)
                    progress.state.withLock { state in
                        guard ContinuousClock.now - state.lastLogged >= progressInterval else { return }
                        state.lastLogged = .now
                        logger.info("restoring the changelog", metadata: [
                            "kafka.partitions": "\(partitions)", "pdr.changelog_records": "\(state.applied)",
                        ])
                    }
                }
                return true
            }
            group.addTask {
                try await Task.sleep(for: timeout)
                throw RestoreTimedOut(partitions: partitions)
            }
            defer { group.cancelAll() }
            _ = try await group.next()
        }
        let state = progress.state.withLock { $0 }
        return RestoredChangelog(applied: state.applied, impliedCycles: Self.longestCycles(state.implied))
    }

    /// How far a changelog restore got: records applied, the cycle per app each partition's latest records imply.
    private struct RestoreProgress: Sendable {
        var applied = 0
        var implied: [Int32: [String: Duration]] = [:]
        var lastLogged = ContinuousClock.now

        /// The progress shared by the reading task and the caller.
        final class Shared: Sendable {
            let state = Mutex(RestoreProgress())
        }
    }

    /// Applies changelog records in the order read, in one registry batch per partition; a tombstone (it follows the
    /// record of an account answered `closed`) closes the account there, after the records before it, so the accounts
    /// records read after the restore cannot register it again while its erasure is still running (issue 15).
    private static func applyChangelog(
        _ messages: [KafkaMessage], to registry: any PartitionedAccountRegistry, progress: RestoreProgress.Shared,
        logger: Logger
    ) async throws {
        var batches: [Int32: [AccountReported]] = [:]
        func flush(_ partition: Int32) async throws {
            guard let batch = batches.removeValue(forKey: partition) else { return }
            try await registry.restoreReported(batch, partition: partition)
            progress.state.withLock { $0.applied += batch.count }
        }
        for message in messages {
            guard message.value != nil else {
                if let key = try? AccountKey(bytes: message.key ?? []) {
                    try await flush(message.partition)
                    try await registry.close([key])
                }
                continue
            }
            do {
                let report = try message.decodeEvent(AccountReported.self)
                batches[message.partition, default: []].append(report)
                let milliseconds = (report.nextDueAt.timeIntervalSince(report.reportedAt) * 1000).rounded()
                if milliseconds > 0, milliseconds < 1e13 {
                    progress.state.withLock { $0.implied[message.partition, default: [:]][report.appId] = Duration.milliseconds(Int64(milliseconds)) }
                }
            } catch {
                logger.warning("unreadable changelog record skipped", metadata: [
                    "kafka.partition": "\(message.partition)", "kafka.offset": "\(message.offset)",
                    "error": "\(error)",
                ])
            }
        }
        for partition in batches.keys.sorted() { try await flush(partition) }
    }

    /// Per app, the longest of the cycles its partitions' latest records imply.
    private static func longestCycles(_ implied: [Int32: [String: Duration]]) -> [String: Duration] {
        var cycles: [String: Duration] = [:]
        for perApp in implied.values {
            for (appId, cycle) in perApp { cycles[appId] = max(cycles[appId] ?? .zero, cycle) }
        }
        return cycles
    }
}
