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
    var ingestor: ProfileIngestor
    var relay: OutboxRelay
}

/// Wires profile-store in the start sequence of every service (``ServiceContext``): its SQLite file, its topics, then
/// the outbox relay, the erasure participant, the profile ingestor and the HTTP server (profile API, health, metrics).
func buildProfileStore(
    config: ProfileStoreConfig, logger: Logger, registry: PrometheusCollectorRegistry,
    handleSignals: Bool = true
) async throws -> ProfileStoreParts {
    // Not safe at N replicas yet (docs/architecture.md, "Replicas"): one active replica, the others standbys.
    let context = try ServiceContext(
        name: "profile-store", config: config.standard, logger: logger, metrics: registry, singleActive: true)
    let topics = context.topics
    let database = try ProfileDatabase(path: context.databasePath, accountsTopic: topics.pdrAccounts)
    try await context.ensureTopics(
        [\.profiles, \.pdrAccounts, \.erasureCommands, \.erasureAcks, \.erasureParticipants],
        deadLettered: [\.profiles, \.erasureCommands])

    let checkpointer = WALCheckpointer(database: database.database, logger: logger)
    // A suppression list converted at open (or anything erased before a crash) leaves the WAL at start.
    checkpointer.request()
    // An ingest batch announces up to one AccountHeld per profile: the relay takes as many per round, so it keeps up
    // with one send and one deletion per ingest batch. Sent records are deleted at once (they name accounts), and a
    // sent tombstone — an account no tenant holds any more — asks for a checkpoint, so its accountId leaves the files.
    let relay = OutboxRelay(
        database: database.database, producer: context.producer, logger: logger,
        batchSize: max(1000, config.ingestBatch), retention: .zero, checkpointer: checkpointer)
    let consumer = try context.consumer(group: "profile-store", topics: [topics.profiles]) {
        $0.maxBufferedMessages = config.ingestBatch * 2
        // librdkafka prefetches up to 64 MiB by default, several seconds of ingest: 16 MiB is still well over one
        // batch ahead of the writer, and keeps that much less resident.
        $0.extraSettings["queued.max.messages.kbytes"] = "16384"
    }
    let ingestor = ProfileIngestor(
        consumer: consumer, database: database, relay: relay, producer: context.producer, logger: logger,
        maxBatch: config.ingestBatch)
    let participant = try context.erasureParticipant(
        "profile-store", holds: ["name", "email", "nickname", "picture"],
        handler: ProfileErasureHandler(database: database, checkpointer: checkpointer))

    let http = context.httpServers(database: { try await database.database.check() }) { router in
        ProfileAPI.addRoutes(
            to: router, database: database,
            verifier: TenantTokenVerifier(config: config.tenantAuth, httpClient: .shared, logger: logger))
    }
    let group = context.serviceGroup(
        [relay, checkpointer, participant, ingestor], http: http, handleSignals: handleSignals)
    return ProfileStoreParts(group: group, database: database, ingestor: ingestor, relay: relay)
}
