import Contracts
import ErasureKit
import Hummingbird
import Logging
import Messaging
import Prometheus
import ServiceKit
import ServiceLifecycle
import Storage

/// profile-store's parts, built and wired, so tests can reach into them.
struct ProfileStoreParts {
    var group: ServiceGroup
    var database: ProfileDatabase
    var ingestor: ProfileIngestor
    var relay: OutboxRelay
}

/// Wires profile-store: creates its topics, opens (and migrates) its SQLite file, then runs the producer, the outbox
/// relay, the erasure participant, the profile ingestor and the HTTP server (profile API, health and metrics). The producer is
/// listed first: ServiceGroup shuts down in reverse order, so it outlives everything that sends through it.
func buildProfileStore(
    config: ProfileStoreConfig, logger: Logger, registry: PrometheusCollectorRegistry,
    handleSignals: Bool = true
) async throws -> ProfileStoreParts {
    let kafka = config.standard.kafka
    let topics = config.topics
    let admin = try KafkaAdmin(bootstrapServers: kafka.bootstrapServers, logger: logger)
    func spec(_ name: String, like definition: TopicDefinition) -> TopicSpec {
        TopicSpec(name: name, partitions: kafka.topicPartitions, config: definition.kafkaConfig)
    }
    try await admin.ensureTopics([
        spec(topics.profiles, like: Topics.definition(named: Topics.profiles)!),
        spec(topics.pdrAccounts, like: Topics.definition(named: Topics.pdrAccounts)!),
        spec(topics.erasureCommands, like: Topics.definition(named: Topics.erasureCommands)!),
        spec(topics.erasureAcks, like: Topics.definition(named: Topics.erasureAcks)!),
        spec(topics.erasureParticipants, like: Topics.definition(named: Topics.erasureParticipants)!),
        DeadLetterQueue.topicSpec(for: topics.profiles, partitions: kafka.topicPartitions),
        DeadLetterQueue.topicSpec(for: topics.erasureCommands, partitions: kafka.topicPartitions),
    ])

    let database = try ProfileDatabase(
        path: config.standard.dataDirectory.databaseFile("profile-store").path, accountsTopic: topics.pdrAccounts)
    let producer = try KafkaProducer(
        config: KafkaProducerConfig(bootstrapServers: kafka.bootstrapServers, clientId: "profile-store"),
        logger: logger)
    let checkpointer = WALCheckpointer(database: database.database, logger: logger)
    // A suppression list converted at open (or anything erased before a crash) leaves the WAL at start.
    checkpointer.request()
    // An ingest batch announces up to one AccountHeld per profile: the relay takes as many per round, so it keeps up
    // with one send and one deletion per ingest batch. Sent records are deleted at once (they name accounts), and a
    // sent tombstone — an account no tenant holds any more — asks for a checkpoint, so its accountId leaves the files.
    let relay = OutboxRelay(
        database: database.database, producer: producer, logger: logger, batchSize: max(1000, config.ingestBatch),
        retention: .zero, checkpointer: checkpointer)
    let consumer = try KafkaConsumer(
        config: KafkaConsumerConfig(
            bootstrapServers: kafka.bootstrapServers,
            subscription: .group(id: config.group("profile-store"), topics: [topics.profiles]),
            clientId: "profile-store", sessionTimeout: .seconds(6), maxBufferedMessages: config.ingestBatch * 2,
            // librdkafka prefetches up to 64 MiB by default, several seconds of ingest: 16 MiB is still well over
            // one batch ahead of the writer, and keeps that much less resident.
            extraSettings: ["queued.max.messages.kbytes": "16384"]),
        logger: logger)
    let ingestor = ProfileIngestor(
        consumer: consumer, database: database, relay: relay, producer: producer, logger: logger,
        maxBatch: config.ingestBatch)
    let participant = try ErasureParticipant(
        config: ErasureParticipantConfig(
            participant: "profile-store", holds: ["name", "email", "nickname", "picture"],
            groupId: config.group("lethe.erasure.profile-store"), commandsTopic: topics.erasureCommands,
            acksTopic: topics.erasureAcks, participantsTopic: topics.erasureParticipants,
            sessionTimeout: .seconds(6)),
        handler: ProfileErasureHandler(database: database, checkpointer: checkpointer), producer: producer,
        bootstrapServers: kafka.bootstrapServers, logger: logger)

    let router = Router()
    router.add(middleware: RequestLogMiddleware())  // before the routes: it applies to those added after it
    router.addOperationalRoutes(
        readiness: [
            ReadinessCheck(name: "sqlite") { try await database.database.check() },
            // Red when the broker cannot be reached, or for good once the producer failed fatally (the process is ending).
            ReadinessCheck(name: "kafka") {
                try await admin.ping()
                try producer.checkNotFatal()
            },
        ],
        registry: registry)
    ProfileAPI.addRoutes(
        to: router, database: database,
        verifier: TenantTokenVerifier(config: config.tenantAuth, httpClient: .shared, logger: logger))
    let app = Application(
        router: router, configuration: config.standard.http.applicationConfiguration(serverName: "profile-store"),
        logger: logger)
    let group = ServiceGroup(configuration: .init(
        services: [
            .init(service: producer), .init(service: relay), .init(service: checkpointer), .init(service: participant),
            .init(service: ingestor),
            .init(service: app),
        ],
        gracefulShutdownSignals: handleSignals ? [.sigterm, .sigint] : [], logger: logger))
    return ProfileStoreParts(group: group, database: database, ingestor: ingestor, relay: relay)
}
