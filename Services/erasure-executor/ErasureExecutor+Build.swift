import Contracts
import Foundation
import Hummingbird
import Logging
import Messaging
import Prometheus
import ServiceKit
import ServiceLifecycle
import Storage

extension OutboxRelay: ErasureNotifier {}

/// erasure-executor's parts, built and wired, so tests can reach into them.
struct ErasureExecutorParts {
    var group: ServiceGroup
    var ledger: ErasureLedger
    var relay: OutboxRelay
    var gate: RestoreGate
}

/// Wires erasure-executor: creates its topics, opens (and migrates) its SQLite file, then runs the producer, the
/// outbox relay, the WAL checkpointer, the state reader (tenants, participants), the intake (statuses, requests,
/// acks), the sweeper (dispatch, re-sends, deadlines) and the HTTP server. Intake, sweeper and the API's write routes
/// wait until the state reader has read the tenants and participants topics to their end (`gate`). The producer is listed first: ServiceGroup
/// shuts down in reverse order, so it outlives everything that sends through it.
func buildErasureExecutor(
    config: ErasureExecutorConfig, logger: Logger, registry: PrometheusCollectorRegistry, handleSignals: Bool = true
) async throws -> ErasureExecutorParts {
    let kafka = config.standard.kafka
    let topics = config.topics
    let admin = try KafkaAdmin(bootstrapServers: kafka.bootstrapServers, logger: logger)
    func spec(_ name: String, like architectureName: String) -> TopicSpec {
        TopicSpec(
            name: name, partitions: kafka.topicPartitions,
            config: Topics.definition(named: architectureName)!.kafkaConfig)
    }
    let dlq = { (topic: String) in DeadLetterQueue.topicSpec(for: topic, partitions: kafka.topicPartitions) }
    try await admin.ensureTopics([
        spec(topics.tenants, like: Topics.tenants),
        spec(topics.pdrStatus, like: Topics.pdrStatus),
        spec(topics.erasureRequests, like: Topics.erasureRequests),
        spec(topics.erasureCommands, like: Topics.erasureCommands),
        spec(topics.erasureAcks, like: Topics.erasureAcks),
        spec(topics.erasureParticipants, like: Topics.erasureParticipants),
        spec(topics.erasureCompleted, like: Topics.erasureCompleted),
        dlq(topics.pdrStatus), dlq(topics.erasureRequests), dlq(topics.erasureAcks), dlq(topics.tenants),
        dlq(topics.erasureParticipants),
    ])
    var statePartitions: [TopicPartition] = []
    for topic in [topics.tenants, topics.erasureParticipants] {
        let count = try await admin.partitionCount(of: topic)
        statePartitions += (0..<count).map { TopicPartition(topic: topic, partition: Int32($0)) }
    }

    let ledger = try ErasureLedger(
        path: config.standard.dataDirectory.databaseFile("erasure-executor").path, settings: config.ledgerSettings,
        keys: try AuditKeys(auditKey: config.auditKey))
    let producer = try KafkaProducer(
        config: KafkaProducerConfig(bootstrapServers: kafka.bootstrapServers, clientId: "erasure-executor"),
        logger: logger)
    let relay = OutboxRelay(database: ledger.database, producer: producer, logger: logger)
    let checkpointer = WALCheckpointer(database: ledger.database, logger: logger)
    let metrics = ErasureMetrics()
    metrics.restored.record(0)
    let gate = RestoreGate()
    let state = try StateReader(
        bootstrapServers: kafka.bootstrapServers, partitions: statePartitions, ledger: ledger, topics: topics,
        producer: producer, gate: gate, relay: relay, metrics: metrics,
        alertEvery: .seconds(max(1, config.restoreAlertSeconds)), logger: logger)
    let consumer = try KafkaConsumer(
        config: KafkaConsumerConfig(
            bootstrapServers: kafka.bootstrapServers,
            subscription: .group(
                id: config.group("erasure-executor"),
                topics: [topics.pdrStatus, topics.erasureRequests, topics.erasureAcks]),
            clientId: "erasure-executor", sessionTimeout: .seconds(6)),
        logger: logger)
    let intake = ErasureIntake(
        consumer: consumer, ledger: ledger, topics: topics, relay: relay, checkpointer: checkpointer,
        producer: producer, gate: gate, metrics: metrics, logger: logger)
    let sweeper = ErasureSweeper(
        ledger: ledger, relay: relay, interval: .milliseconds(config.sweepMilliseconds), metrics: metrics,
        gate: gate, logger: logger)

    let router = Router()
    router.add(middleware: RequestLogMiddleware())  // before the routes: it applies to those added after it
    router.addOperationalRoutes(
        readiness: [
            ReadinessCheck(name: "sqlite") { try await ledger.database.check() },
            // Red when the broker cannot be reached, or for good once the producer failed fatally (the process is ending).
            ReadinessCheck(name: "kafka") {
                try await admin.ping()
                try producer.checkNotFatal()
            },
            // Red until the tenants and participants topics were read to their end since this start, with why.
            ReadinessCheck(name: "state") { try gate.check() },
        ],
        registry: registry)
    ErasureAPI.addRoutes(
        to: router, ledger: ledger,
        verifier: TenantTokenVerifier(config: config.tenantAuth, httpClient: .shared, logger: logger),
        adminToken: config.adminToken, notifier: relay, gate: gate, metrics: metrics, logger: logger,
        onCompleted: { checkpointer.request() })
    let app = Application(
        router: router, configuration: config.standard.http.applicationConfiguration(serverName: "erasure-executor"),
        logger: logger)
    let group = ServiceGroup(configuration: .init(
        services: [
            .init(service: producer), .init(service: relay), .init(service: checkpointer), .init(service: state),
            .init(service: intake), .init(service: sweeper), .init(service: app),
        ],
        gracefulShutdownSignals: handleSignals ? [.sigterm, .sigint] : [], logger: logger))
    return ErasureExecutorParts(group: group, ledger: ledger, relay: relay, gate: gate)
}
