import Contracts
import ErasureKit
import Foundation
import Logging
import Messaging
import Metrics
import ServiceLifecycle
import ServiceRuntime
import Storage
import Synchronization

/// Counts of what the intake did since start, for tests and logs (the same numbers go to `/metrics`).
struct IngestStats: Sendable, Equatable {
    var applied = 0
    var stale = 0
    var suppressed = 0
    var erased = 0
    var batches = 0
}

/// Consumes `ProfileFetched` and `EraseSubject` in one group, through the shared ``ConsumerPipeline``: each batch
/// (whatever arrived while the previous one was written, up to `maxBatch`) stores its profiles in one SQLite
/// transaction with their outbox rows, then applies its erasure commands in another and acknowledges them
/// (``ErasureAcknowledger``), and its offsets are committed after both, once the outbox has sent what they wrote (the
/// changelog records a partition's next owner reads back; the next batch is written meanwhile). A crash re-delivers
/// at most the uncommitted batches, which the newest-wins upsert and the recorded outcomes make harmless. Order
/// between a profile and an erasure of its subject does not matter: the erasure's watermark drops any profile fetched
/// before it was issued, whichever comes first. Undecodable records go to the DLQ; a failed SQLite write is retried
/// while it is transient.
///
/// **Partition-owned** (unless the service runs behind the lease). The group's range assignor gives a member the same
/// partition numbers of both topics, which are keyed by subject, so the replica that receives an erasure command is
/// the one that holds its subject's profiles. At each assignment it forgets the partitions it does not keep, and for
/// each partition new to it reads the changelog back (``ProfileDatabase/restore(_:)``) and announces what it holds
/// there, before any record behind the assignment; at each revocation it sends its outbox first, so the next owner
/// reads back every change (``PartitionOwnership``).
final class ProfileIntake: Service, Sendable {
    enum Work: Sendable {
        case profile(ProfileFetched)
        case erase(EraseSubject)
    }

    private let pipeline: ConsumerPipeline<Work>
    private let database: ProfileDatabase
    private let relay: OutboxRelay
    private let checkpointer: WALCheckpointer
    private let acknowledger: ErasureAcknowledger
    private let producer: KafkaProducer
    /// nil behind the lease: the one active replica holds every partition on the shared file.
    private let partitions: Partitions?
    /// The partitions this replica owned at its last assignment (their rows are kept at the next one).
    private let held = Mutex<Set<Int32>>([])
    private let logger: Logger
    private let counters = Mutex(IngestStats())
    private let applied = Counter(label: "lethe_profiles_applied_total")
    private let stale = Counter(label: "lethe_profiles_stale_total")
    private let suppressed = Counter(label: "lethe_profiles_suppressed_total")
    private let erased = Counter(label: "lethe_profiles_dropped_after_erasure_total")
    private let lag = Gauge(label: "lethe_profiles_consumer_lag_seconds")
    /// Transactions the ingest made: `lethe_profiles_applied_total` over it is the mean batch (make bench-ingest
    /// runs its SQLite baseline with that batch size).
    private let batches = Counter(label: "lethe_profile_batches_total")

    /// What a partition-owning replica needs to read a partition's changelog back.
    struct Partitions: Sendable {
        var ownership: PartitionOwnership
        var changelog: ProfileChangelog
        var bootstrapServers: String
    }

    init(
        consumer: KafkaConsumer, topics: LetheTopics, database: ProfileDatabase, relay: OutboxRelay,
        checkpointer: WALCheckpointer, acknowledger: ErasureAcknowledger, producer: KafkaProducer,
        partitions: Partitions?, logger: Logger, maxBatch: Int = 5000
    ) {
        let (profiles, commands) = (topics.profiles, topics.erasureCommands)
        self.pipeline = ConsumerPipeline(
            consumer: consumer, producer: producer, logger: logger, work: "storing profiles and erasures",
            retry: RetryPolicy.storage.retrying(RetryPolicy.kafka.isTransient), maxBatch: maxBatch,
            // The profiles' changelog records and announcements on the broker before the batch's offsets are
            // committed: else a replica killed in between leaves the next owner of the partition without the profiles
            // (and the reporter without their accounts), and no record brings them again.
            beforeCommit: { try await relay.waitUntilSent(before: "committing a batch", logger: logger) }
        ) { message in
            switch message.topic {
            case profiles: return .profile(try Self.decodeProfile(message))
            case commands: return .erase(try message.decodeEvent(EraseSubject.self))
            default: throw ContractError.invalidKey(reason: "record from an unexpected topic")
            }
        }
        self.producer = producer
        self.database = database
        self.relay = relay
        self.checkpointer = checkpointer
        self.acknowledger = acknowledger
        self.partitions = partitions
        self.logger = logger
    }

    var stats: IngestStats { counters.withLock { $0 } }

    func run() async throws {
        var onGroupChange: (@Sendable (GroupChange) async throws -> Void)?
        if let partitions {
            onGroupChange = { @Sendable (change: GroupChange) async throws in
                switch change {
                case .assigned(let assigned): try await self.assigned(assigned, partitions)
                case .revoked(let revoked): try await self.revoked(revoked, partitions)
                }
            }
        }
        try await pipeline.run(waitingFor: {
            try await self.acknowledger.declare()
            return true
        }, onGroupChange: onGroupChange) { batch in
            try await self.handle(batch)
            return []
        }
    }

    /// The event in a profiles record, validated: a ContractError sends the record to the DLQ.
    private static func decodeProfile(_ message: KafkaMessage) throws -> ProfileFetched {
        let event = try message.decodeEvent(ProfileFetched.self)
        guard !event.tenantId.isEmpty else { throw ContractError.invalidKey(reason: "tenantId is empty") }
        _ = try AccountKey(appId: event.appId, accountId: event.accountId)
        return event
    }

    private func handle(_ batch: [Delivered<Work>]) async throws {
        var profiles: [(message: KafkaMessage, profile: ProfileFetched)] = []
        var commands: [EraseSubject] = []
        for record in batch {
            switch record.item {
            case .profile(let profile): profiles.append((record.message, profile))
            case .erase(let command): commands.append(command)
            }
        }
        if !profiles.isEmpty { try await store(profiles) }
        // The erasure handler acks a command only once its changelog records are sent (ProfileErasureHandler).
        if !commands.isEmpty { try await acknowledger.handle(commands) }
    }

    private func store(_ batch: [(message: KafkaMessage, profile: ProfileFetched)]) async throws {
        let clock = ContinuousClock()
        let started = clock.now
        let summary = try await database.ingest(batch.map(\.profile))
        if summary.announced > 0 || summary.applied > 0 { relay.notify() }
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
        counters.withLock { stats in
            stats.applied += summary.applied
            stats.stale += summary.stale
            stats.suppressed += summary.suppressed
            stats.erased += summary.erased
            stats.batches += 1
        }
    }

    // MARK: Partitions

    /// Keeps the partitions it held and still owns; forgets the others; reads back and announces the ones new to it.
    private func assigned(_ assignment: [TopicPartition], _ partitions: Partitions) async throws {
        let started = ContinuousClock.now
        let owned = Set(assignment.map(\.partition))
        let keep = owned.intersection(held.withLock { $0 })
        let new = owned.subtracting(keep)
        // This replica's own unsent changes go to the changelog first, so the read-back below holds them.
        try await relay.waitUntilSent(before: "reading partitions back", logger: logger)
        let dropped = try await database.dropPartitions(keeping: keep)
        if dropped > 0 { checkpointer.request() }  // the forgotten profiles' page images leave the -wal file
        var restored = ChangelogRestored()
        var announced = 0
        if !new.isEmpty {
            restored = try await readBack(new, keeping: keep, partitions)
            announced = try await database.announceAll(partitions: new)
            relay.notify()
        }
        held.withLock { $0 = owned }
        partitions.ownership.settle(owned)
        logger.info("profile partitions assigned", metadata: [
            "partitions": "\(owned.sorted())", "kafka.partitions_read_back": "\(new.sorted())",
            "profiles.dropped": "\(dropped)", "profiles.keys_restored": "\(restored.keys)",
            "profiles.erasures_restored": "\(restored.erasures)", "profiles.announced": "\(announced)",
            "profiles.assign_time": "\(ContinuousClock.now - started)",
        ])
        if restored.unreadable > 0 {
            logger.error("changelog records that could not be read were left out", metadata: [
                "count": "\(restored.unreadable)",
            ])
        }
    }

    /// Stops answering for the partitions and sends the outbox (up to 20 s, within the group's revocation timeout),
    /// so that whoever owns them next reads back every change made here.
    private func revoked(_ revoked: [TopicPartition], _ partitions: Partitions) async throws {
        guard !revoked.isEmpty else { return }
        partitions.ownership.unsettle()
        let unsent = try await relay.waitUntilSent(deadline: .now + .seconds(20))
        if unsent > 0 {
            logger.warning(
                "profile partitions revoked with records still unsent; the next owner reads back what was sent",
                metadata: ["count": "\(unsent)"])
        }
    }

    /// Reads `new` partitions of the changelog back from their beginning, retrying what is transient (a failed
    /// attempt's partial read-back is forgotten first: only `keep` stays).
    private func readBack(
        _ new: Set<Int32>, keeping keep: Set<Int32>, _ partitions: Partitions
    ) async throws -> ChangelogRestored {
        let (database, logger, producer) = (self.database, self.logger, self.producer)
        let topicPartitions = new.sorted().map { TopicPartition(topic: partitions.changelog.topic, partition: $0) }
        let tally = Mutex(ChangelogRestored())
        let transient = RetryPolicy.kafka.retrying(RetryPolicy.storage.isTransient)
        try await retryUntilDone("reading the profile changelog back", logger: logger, policy: transient) {
            tally.withLock { $0 = ChangelogRestored() }
            // A failed attempt may have applied part: start those partitions over.
            _ = try await database.dropPartitions(keeping: keep)
            _ = try await RestoreMarker.readToEnd(
                topicPartitions, bootstrapServers: partitions.bootstrapServers, producer: producer,
                clientId: "profile-store-changelog", logger: logger, maxBatch: 2000
            ) { messages in
                let restored = try await database.restore(messages)
                tally.withLock {
                    $0.keys += restored.keys
                    $0.erasures += restored.erasures
                    $0.unreadable += restored.unreadable
                }
            }
        }
        let restored = tally.withLock { $0 }
        Counter(label: "lethe_profile_changelog_restored_total").increment(by: restored.keys)
        Counter(label: "lethe_profile_changelog_unreadable_total").increment(by: restored.unreadable)
        return restored
    }
}
