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

/// Wires pdr-reporter: operational routes, `GET /v1/apps`, and the reporting loop.
///
/// Not wired yet (issue 7, next slice): the Kafka intake that fills the registry from `lethe.pdr.accounts.v1`
/// and restores it from `lethe.pdr.reports.v1`, the SQLite registry, and the Kafka `ReportSink`. Until then the
/// registry is in memory and empty, so the loop idles and `/v1/apps` lists no app; the sink refuses, so even a
/// registered account could never be marked reported without its events being published.
func buildPDRReporter(config: PDRReporterConfig, logger: Logger, registry: PrometheusCollectorRegistry) throws -> ServiceGroup {
    let admin = try KafkaAdmin(bootstrapServers: config.standard.kafka.bootstrapServers, logger: logger)
    let http = HTTPClient(eventLoopGroupProvider: .singleton)
    let atlassian = AtlassianClient(
        config: .init(authURL: config.atlassianAuthURL, apiURL: config.atlassianAPIURL), httpClient: http,
        logger: logger)
    let tokens: any ReportingTokenProvider = config.internalToken.map {
        HTTPReportingTokenProvider(gatewayURL: config.gatewayURL, internalToken: $0, httpClient: http)
    } ?? UnconfiguredTokenProvider()
    let schedule = Schedule(defaultCycle: config.cycle)
    let loop = ReportingLoop(
        registry: InMemoryAccountRegistry(schedule: schedule), api: atlassian, tokens: tokens,
        sink: UnwiredReportSink(), schedule: schedule, settings: config.reportingSettings, logger: logger)

    let router = Router()
    router.addOperationalRoutes(
        readiness: [ReadinessCheck(name: "kafka") { try await admin.ping() }],
        registry: registry)
    router.addAppsStatusRoute(AppsStatusEndpoint(adminToken: config.adminToken) { try await loop.status() })
    let app = Application(
        router: router, configuration: config.standard.http.applicationConfiguration(serverName: "pdr-reporter"), logger: logger)
    // Listed dependencies first: shutdown runs in reverse, so HTTP drains, then the loop stops, then the client.
    return ServiceGroup(configuration: .init(
        services: [.init(service: HTTPClientService(client: http)), .init(service: loop), .init(service: app)],
        gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
}

/// Owns the shared `HTTPClient`'s lifetime: shut down after the services that use it have stopped.
struct HTTPClientService: Service {
    let client: HTTPClient

    func run() async throws {
        try? await gracefulShutdown()
        try await client.shutdown()
    }
}

/// Without `LETHE_INTERNAL_TOKEN` there is no way to get a token; the reporter backs off and retries.
struct UnconfiguredTokenProvider: ReportingTokenProvider {
    func token(appId: String, excluding: Set<String>) async throws -> ReportingToken {
        throw ReportingTokenError.unavailable("LETHE_INTERNAL_TOKEN is not set")
    }
}

/// Placeholder until the Kafka producer implements `ReportSink`: refusing keeps a batch due (the reporter retries
/// the record) rather than marking it reported without its events.
struct UnwiredReportSink: ReportSink {
    struct NotWired: Error {}

    func publish(reported: [AccountReported], statuses: [AccountStatusReported]) async throws { throw NotWired() }
}
