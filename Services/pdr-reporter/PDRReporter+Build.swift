import AsyncHTTPClient
import AtlassianClient
import Contracts
import Foundation
import Logging
import Messaging
import Prometheus
import ServiceKit
import ServiceRuntime
import ServiceLifecycle

/// pdr-reporter's parts, built and wired, so tests can reach into them.
struct PDRReporterParts {
    var group: ServiceGroup
    var registry: SQLiteAccountRegistry
    var loop: ReportingLoop
}

/// Wires pdr-reporter in the start sequence of every service (``ServiceContext``): the SQLite registry, its topics,
/// then the HTTP client, the registry's WAL checkpointer, the reporting loop, the partitioned intake (group over
/// `lethe.pdr.accounts.v1` + changelog restore) and the HTTP server. On shutdown HTTP drains, the intake leaves the
/// group, the loop stops (a batch in flight stays due), and the producer flushes last.
///
/// - Parameters:
///   - tokens: overrides the gateway's reporting-token API (tests serve it from a double); nil = from configuration.
///   - settings: overrides the pacing and retry settings (tests shorten the waits); nil = from configuration.
func buildPDRReporter(
    config: PDRReporterConfig, logger: Logger, registry metrics: PrometheusCollectorRegistry = PrometheusCollectorRegistry(),
    tokens overrideTokens: (any ReportingTokenProvider)? = nil, settings: ReportingSettings? = nil,
    handleSignals: Bool = true
) async throws -> PDRReporterParts {
    let context = try ServiceContext(name: "pdr-reporter", config: config.standard, logger: logger, metrics: metrics)
    let topics = context.topics
    let schedule = config.schedule
    let accounts = try SQLiteAccountRegistry(path: context.databasePath, schedule: schedule, logger: logger)
    // Accounts and reports are co-partitioned: one partition count for both (KAFKA_TOPIC_PARTITIONS), and an existing
    // topic whose count differs is refused rather than silently breaking it.
    try await context.ensureTopics([\.pdrAccounts, \.pdrReports, \.pdrStatus], deadLettered: [\.pdrAccounts])

    let http = HTTPClient(eventLoopGroupProvider: .singleton)
    let atlassian = AtlassianClient(
        config: .init(authURL: config.atlassianAuthURL, apiURL: config.atlassianAPIURL), httpClient: http,
        logger: logger)
    let tokens: any ReportingTokenProvider = overrideTokens
        ?? HTTPReportingTokenProvider(gatewayURL: config.gatewayInternalURL, internalToken: config.internalToken, httpClient: http)
    let loop = ReportingLoop(
        registry: accounts, api: atlassian, tokens: tokens,
        sink: KafkaReportSink(producer: context.producer, topics: topics), schedule: schedule,
        settings: settings ?? config.reportingSettings, logger: logger)
    let consumer = try context.consumer(group: "pdr-reporter", topics: [topics.pdrAccounts]) {
        // Every assignment re-reads its partitions from the beginning (nothing is committed): larger fetches (16 MiB
        // per partition instead of librdkafka's 1 MiB) and a deeper buffer keep that to a few round trips.
        $0.maxBufferedMessages = 20_000
        $0.extraSettings = ["max.partition.fetch.bytes": "16777216", "fetch.max.bytes": "67108864"]
    }
    let intake = PartitionedIntake(
        consumer: consumer, registry: accounts, loop: loop, producer: context.producer, topics: topics,
        bootstrapServers: config.standard.kafka.bootstrapServers,
        partitionCount: config.standard.kafka.topicPartitions, restoreTimeout: config.restoreTimeout,
        restoreProgressInterval: config.restoreProgressInterval, logger: logger)

    let servers = context.httpServers(database: { try await accounts.check() }) { router in
        router.addAppsStatusRoute(AppsStatusEndpoint(adminToken: config.adminToken) { try await loop.status() })
    }
    let group = context.serviceGroup(
        [HTTPClientService(client: http), accounts.checkpointer, loop, intake], http: servers,
        handleSignals: handleSignals)
    return PDRReporterParts(group: group, registry: accounts, loop: loop)
}
