import Contracts
import ErasureKit
import Logging
import Messaging
import Prometheus
import ServiceKit
import ServiceRuntime
import ServiceLifecycle
import Storage

/// profile-store's parts, built and wired, so tests can reach into them.
struct ProfileStoreParts {
    var group: ServiceGroup
    var database: ProfileDatabase
    var intake: ProfileIntake
    var relay: OutboxRelay
    /// The partitions this replica owns (nil behind the lease).
    var ownership: PartitionOwnership?
    /// Where its listeners answer, once bound.
    var address: ReplicaAddress
    /// This replica's claim on its file (partition-owned replicas), held as long as the parts are.
    var claim: OwnedDataFile?
}

/// Wires profile-store in the start sequence of every service (``ServiceContext``): its SQLite file, its topics, then
/// the outbox relay, the WAL checkpointer, the intake (profiles and erasure commands, one group) and the HTTP server
/// (profile API, health, metrics).
///
/// Safe at N replicas (docs/architecture.md, "Replicas"): each replica owns the partitions its group assigns it —
/// the profiles and erasure commands of those subjects, read back from the changelog (`lethe.profiles.state.v1`) when
/// a partition is new to it — announces them, and answers a request about another replica's profiles by forwarding it
/// to their owner, or by gathering every owner's part (``ProfileAPI``). `PROFILE_STORE_SINGLE_ACTIVE=true` runs it
/// behind the lease instead (one active replica on a shared file, the others standbys that forward to it).
func buildProfileStore(
    config: ProfileStoreConfig, logger: Logger, registry: PrometheusCollectorRegistry,
    handleSignals: Bool = true
) async throws -> ProfileStoreParts {
    let context = try ServiceContext(
        name: "profile-store", config: config.standard, logger: logger, metrics: registry,
        singleActive: config.singleActive, partitioned: !config.singleActive)
    let topics = context.topics
    // Partition-owned replicas each need their own file; behind the lease the standbys share the active one's.
    let claim = config.singleActive ? nil : try OwnedDataFile(
        context.databasePath,
        hint: "no shared volume for profile-store, or PROFILE_STORE_SINGLE_ACTIVE=true to run one active replica on it")
    try await context.ensureTopics(
        [\.profiles, \.pdrAccounts, \.erasureCommands, \.erasureAcks, \.erasureParticipants, \.profileState],
        deadLettered: [\.profiles, \.erasureCommands])
    // ensureTopics refused to go on unless every topic has this count: the three topics are co-partitioned.
    let changelog = ProfileChangelog(topic: topics.profileState, partitions: config.standard.kafka.topicPartitions)
    let database = try ProfileDatabase(
        path: context.databasePath, accountsTopic: topics.pdrAccounts, changelog: changelog)
    // A file made before the changelog: everything it holds is written to it once, before anything is read back.
    let carried = try await database.carryOverToChangelog()
    if carried > 0 { logger.notice("file carried over to the changelog", metadata: ["count": "\(carried)"]) }

    let checkpointer = WALCheckpointer(database: database.database, logger: logger)
    // A suppression list converted at open (or anything erased before a crash) leaves the WAL at start.
    checkpointer.request()
    // An ingest batch writes up to one AccountHeld and one changelog record per profile: the relay takes as many per
    // round, so it keeps up with one send and one deletion per ingest batch. Sent records are deleted at once (they
    // name accounts), and a sent tombstone — an account no tenant holds any more — asks for a checkpoint, so its
    // accountId leaves the files.
    let relay = OutboxRelay(
        database: database.database, producer: context.producer, logger: logger,
        batchSize: max(1000, 2 * config.ingestBatch), retention: .zero, checkpointer: checkpointer)
    // The range assignor gives a member the same partition numbers of both topics: its subjects' profiles and commands.
    let consumer = try context.consumer(group: "profile-store", topics: [topics.profiles, topics.erasureCommands]) {
        $0.assignmentStrategy = .range
        $0.maxBufferedMessages = config.ingestBatch * 2
        // librdkafka prefetches up to 64 MiB by default, several seconds of ingest: 16 MiB is still well over one
        // batch ahead of the writer, and keeps that much less resident.
        $0.extraSettings["queued.max.messages.kbytes"] = "16384"
    }
    let ownership = context.peers.flatMap { peers in
        config.singleActive ? nil : PartitionOwnership(gauge: "lethe_profile_partitions_owned") {
            peers.directory.announce(partitions: $0)
        }
    }
    let intake = ProfileIntake(
        consumer: consumer, topics: topics, database: database, relay: relay, checkpointer: checkpointer,
        acknowledger: context.erasureAcknowledger(
            "profile-store", holds: ["name", "email", "nickname", "picture"],
            handler: ProfileErasureHandler(
                database: database, checkpointer: checkpointer, relay: relay, logger: logger)),
        producer: context.producer,
        partitions: ownership.map {
            ProfileIntake.Partitions(
                ownership: $0, changelog: changelog, bootstrapServers: config.standard.kafka.bootstrapServers)
        },
        logger: logger, maxBatch: config.ingestBatch)

    let http = context.httpServers(
        database: { try await database.database.check() },
        // Red until this replica's first assignment was read back (a replica given no partition is ready at once).
        readiness: ownership.map { ownership in
            [ReadinessCheck(name: "partitions") {
                guard ownership.hasSettled else { throw PartitionsNotReadBack() }
            }]
        } ?? []
    ) { router in
        ProfileAPI.addRoutes(
            to: router, database: database,
            verifier: TenantTokenVerifier(config: config.tenantAuth, httpClient: .shared, logger: logger),
            partitions: ownership.flatMap { ownership in
                context.peers.map { peers in
                    PartitionRouter(peers: peers, partitionCount: changelog.partitions, owned: { ownership.partitions })
                }
            },
            changelog: changelog)
    }
    let group = context.serviceGroup([relay, checkpointer, intake], http: http, handleSignals: handleSignals)
    return ProfileStoreParts(
        group: group, database: database, intake: intake, relay: relay, ownership: ownership,
        address: context.address, claim: claim)
}

/// The readiness check's reason before the first assignment was read back.
struct PartitionsNotReadBack: Error, CustomStringConvertible {
    var description: String {
        "its partitions are not assigned and read back from the changelog yet; profiles of other partitions are "
            + "answered by their owners"
    }
}
