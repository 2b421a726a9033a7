import AsyncHTTPClient
import AtlassianClient
import Contracts
import Foundation
import Hummingbird
import Logging
import Messaging
import Prometheus
import ServiceKit
import ServiceLifecycle

/// pdr-reporter's parts, built and wired, so tests can reach into them.
struct PDRReporterParts {
    var group: ServiceGroup
    var registry: SQLiteAccountRegistry
    var loop: ReportingLoop
}

/// Wires pdr-reporter: creates its topics, opens (and migrates) the SQLite registry, then runs the producer, the HTTP
/// client, the registry's WAL checkpointer, the reporting loop, the partitioned intake (group over
/// `lethe.pdr.accounts.v1` + changelog restore) and the HTTP server. Listed dependencies first: ServiceGroup shuts
/// down in reverse order, so HTTP drains, the intake leaves the group, the loop stops (a batch in flight stays due),
/// and the producer flushes last.
///
/// - Parameters:
///   - tokens: overrides the gateway's reporting-token API (tests serve it from a double); nil = from configuration.
///   - settings: overrides the pacing and retry settings (tests shorten the waits); nil = from configuration.
func buildPDRReporter(
    config: PDRReporterConfig, logger: Logger, registry metrics: PrometheusCollectorRegistry = PrometheusCollectorRegistry(),
    tokens overrideTokens: (any ReportingTokenProvider)? = nil, settings: ReportingSettings? = nil,
    handleSignals: Bool = true
) async throws -> PDRReporterParts {
    let kafka = config.standard.kafka
    let topics = config.topics
    let admin = try KafkaAdmin(bootstrapServers: kafka.bootstrapServers, logger: logger)
    func spec(_ name: String, like definition: TopicDefinition) -> TopicSpec {
        TopicSpec(name: name, partitions: kafka.topicPartitions, config: definition.kafkaConfig)
    }
    // Same partition count for accounts and reports (KAFKA_TOPIC_PARTITIONS): co-partitioning depends on it, and
    // ensureTopics refuses an existing topic whose count differs rather than silently breaking it.
    try await admin.ensureTopics([
        spec(topics.pdrAccounts, like: Topics.definition(named: Topics.pdrAccounts)!),
        spec(topics.pdrReports, like: Topics.definition(named: Topics.pdrReports)!),
        spec(topics.pdrStatus, like: Topics.definition(named: Topics.pdrStatus)!),
        DeadLetterQueue.topicSpec(for: topics.pdrAccounts, partitions: kafka.topicPartitions),
    ])

    let schedule = config.schedule
    let accounts = try SQLiteAccountRegistry(
        path: config.standard.dataDirectory.databaseFile("pdr-reporter").path, schedule: schedule, logger: logger)
    let producer = try KafkaProducer(
        config: KafkaProducerConfig(bootstrapServers: kafka.bootstrapServers, clientId: "pdr-reporter"),
        logger: logger)
    let http = HTTPClient(eventLoopGroupProvider: .singleton)
    let atlassian = AtlassianClient(
        config: .init(authURL: config.atlassianAuthURL, apiURL: config.atlassianAPIURL), httpClient: http,
        logger: logger)
    let tokens: any ReportingTokenProvider = overrideTokens
        ?? HTTPReportingTokenProvider(gatewayURL: config.gatewayURL, internalToken: config.internalToken, httpClient: http)
    let loop = ReportingLoop(
        registry: accounts, api: atlassian, tokens: tokens, sink: KafkaReportSink(producer: producer, topics: topics),
        schedule: schedule, settings: settings ?? config.reportingSettings, logger: logger)
    let consumer = try KafkaConsumer(
        config: KafkaConsumerConfig(
            bootstrapServers: kafka.bootstrapServers,
            subscription: .group(id: config.groupId, topics: [topics.pdrAccounts]),
            // Tansu: a group's first join takes about half the session timeout; 6 s keeps both start and takeover
            // after a crash short.
            clientId: "pdr-reporter", offsetReset: .earliest, sessionTimeout: .seconds(6),
            // Every assignment re-reads its partitions from the beginning (nothing is committed): larger fetches
            // (16 MiB per partition instead of librdkafka's 1 MiB) and a deeper buffer keep that to a few round trips.
            maxBufferedMessages: 20_000,
            extraSettings: ["max.partition.fetch.bytes": "16777216", "fetch.max.bytes": "67108864"]),
        logger: logger)
    let intake = PartitionedIntake(
        consumer: consumer, registry: accounts, loop: loop, producer: producer, topics: topics,
        bootstrapServers: kafka.bootstrapServers, restoreTimeout: config.restoreTimeout,
        restoreProgressInterval: config.restoreProgressInterval, logger: logger)

    let router = Router()
    router.add(middleware: RequestLogMiddleware())  // before the routes: it applies to those added after it
    router.addOperationalRoutes(
        readiness: [
            ReadinessCheck(name: "sqlite") { try await accounts.check() },
            // Red when the broker cannot be reached, or for good once the producer failed fatally (the process is ending).
            ReadinessCheck(name: "kafka") {
                try await admin.ping()
                try producer.checkNotFatal()
            },
        ],
        registry: metrics)
    router.addAppsStatusRoute(AppsStatusEndpoint(adminToken: config.adminToken) { try await loop.status() })
    let app = Application(
        router: router, configuration: config.standard.http.applicationConfiguration(serverName: "pdr-reporter"),
        logger: logger)
    let group = ServiceGroup(configuration: .init(
        services: [
            .init(service: producer), .init(service: HTTPClientService(client: http)),
            .init(service: accounts.checkpointer), .init(service: loop), .init(service: intake), .init(service: app),
        ],
        gracefulShutdownSignals: handleSignals ? [.sigterm, .sigint] : [], logger: logger))
    return PDRReporterParts(group: group, registry: accounts, loop: loop)
}

/// Owns the shared `HTTPClient`'s lifetime: shut down after the services that use it have stopped.
struct HTTPClientService: Service {
    let client: HTTPClient

    func run() async throws {
        try? await gracefulShutdown()
        try await client.shutdown()
    }
}
