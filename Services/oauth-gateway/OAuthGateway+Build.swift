import AsyncHTTPClient
import AtlassianClient
import Contracts
import ErasureKit
import Foundation
import Hummingbird
import Logging
import Messaging
import Prometheus
import ServiceKit
import ServiceLifecycle
import Storage

/// oauth-gateway's parts, built and wired, so tests can reach into them.
struct OAuthGatewayParts {
    var group: ServiceGroup
    var gateway: Gateway
    var database: GatewayDatabase
}

/// Wires oauth-gateway: creates its topics, opens its SQLite file, loads the data and signing keys, registers the
/// shared app, then runs the producer (first, so it stops last), the outbox relay, the erasure participant, the
/// status consumer, a pruner for expired sign-in states and codes, and the HTTP server.
func buildOAuthGateway(
    config: OAuthGatewayConfig, logger: Logger, registry: PrometheusCollectorRegistry, handleSignals: Bool = true
) async throws -> OAuthGatewayParts {
    let kafka = config.standard.kafka
    let topics = LetheTopics(namespace: config.namespace)
    let admin = try KafkaAdmin(bootstrapServers: kafka.bootstrapServers, logger: logger)
    func spec(_ name: String, like base: String) -> TopicSpec {
        TopicSpec(name: name, partitions: kafka.topicPartitions, config: Topics.definition(named: base)!.kafkaConfig)
    }
    try await admin.ensureTopics([
        spec(topics.tenants, like: Topics.tenants),
        spec(topics.profiles, like: Topics.profiles),
        spec(topics.pdrStatus, like: Topics.pdrStatus),
        spec(topics.erasureRequests, like: Topics.erasureRequests),
        spec(topics.erasureCommands, like: Topics.erasureCommands),
        spec(topics.erasureAcks, like: Topics.erasureAcks),
        spec(topics.erasureParticipants, like: Topics.erasureParticipants),
        DeadLetterQueue.topicSpec(for: topics.pdrStatus, partitions: kafka.topicPartitions),
        DeadLetterQueue.topicSpec(for: topics.erasureCommands, partitions: kafka.topicPartitions),
    ])

    let database = try GatewayDatabase(
        path: config.standard.dataDirectory.databaseFile("oauth-gateway").path, topics: topics)
    let box = try SecretBox(masterKey: config.masterKey, database: database.writer)
    // A retired key stays published well past the longest-lived token it can have signed.
    let signer = TokenSigner(
        database: database, box: box, retention: max(config.tenantTokenLifetime, Gateway.idTokenLifetime) * 2 + 3600)
    try await signer.load()
    if let shared = config.sharedApp {
        try await database.registerSharedApp(
            appId: shared.clientId, callbackURL: shared.callbackURL, scopes: Gateway.requiredScopes)
    }
    let producer = try KafkaProducer(
        config: KafkaProducerConfig(bootstrapServers: kafka.bootstrapServers, clientId: "oauth-gateway"), logger: logger)
    // Sent profiles hold personal data: the relay deletes them as soon as the broker has them.
    let relay = OutboxRelay(database: database.database, producer: producer, logger: logger, retention: .zero)
    let checkpointer = WALCheckpointer(database: database.database, logger: logger)
    // A suppression list converted at open (or anything erased before a crash) leaves the WAL at start.
    checkpointer.request()
    let statusConsumer = try KafkaConsumer(
        config: KafkaConsumerConfig(
            bootstrapServers: kafka.bootstrapServers,
            subscription: .group(id: config.name("oauth-gateway"), topics: [topics.pdrStatus]),
            clientId: "oauth-gateway", sessionTimeout: .seconds(6)),
        logger: logger)
    let participant = try ErasureParticipant(
        config: ErasureParticipantConfig(
            participant: "oauth-gateway", holds: ["accountId", "accessToken", "refreshToken"],
            groupId: config.name("lethe.erasure.oauth-gateway"), commandsTopic: topics.erasureCommands,
            acksTopic: topics.erasureAcks, participantsTopic: topics.erasureParticipants, sessionTimeout: .seconds(6)),
        handler: GatewayErasureHandler(database: database, checkpointer: checkpointer), producer: producer,
        bootstrapServers: kafka.bootstrapServers, logger: logger)

    // Created after everything that can throw, so a failed start never leaves a client that was not shut down.
    // Its own client rather than HTTPClient.shared: the shared one keeps at most 8 connections per host, and every
    // sign-in in flight makes two sequential calls to Atlassian, so concurrent sign-ins queued for a connection.
    var httpConfiguration = HTTPClient.Configuration.singletonConfiguration
    httpConfiguration.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: 64)
    let httpClient = HTTPClient(eventLoopGroupProvider: .singleton, configuration: httpConfiguration)
    let atlassian = AtlassianClient(config: config.atlassian, httpClient: httpClient, logger: logger)
    let gateway = Gateway(
        config: config, database: database, box: box, signer: signer, atlassian: atlassian, logger: logger)

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
    GatewayAPI.addRoutes(
        to: router, gateway: gateway, adminToken: config.adminToken, internalToken: config.internalToken,
        issuer: config.issuer)
    let app = Application(
        router: router, configuration: config.standard.http.applicationConfiguration(serverName: "oauth-gateway"),
        logger: logger)
    let group = ServiceGroup(configuration: .init(
        services: [
            .init(service: HTTPClientService(client: httpClient)), .init(service: producer), .init(service: relay),
            .init(service: checkpointer), .init(service: participant),
            .init(service: StatusConsumer(consumer: statusConsumer, gateway: gateway, producer: producer, logger: logger)),
            .init(service: ExpiryPruner(database: database, logger: logger)),
            .init(service: ConnectionKeepAlive(
                database: database, vault: gateway.vault, settings: config.keepAlive, logger: logger)),
            .init(service: app),
        ],
        gracefulShutdownSignals: handleSignals ? [.sigterm, .sigint] : [], logger: logger))
    return OAuthGatewayParts(group: group, gateway: gateway, database: database)
}

/// Deletes expired sign-in states and codes every 30 s, so an abandoned sign-in's sealed profile does not linger.
struct ExpiryPruner: Service {
    let database: GatewayDatabase
    let logger: Logger

    func run() async throws {
        while !Task.isShuttingDownGracefully, !Task.isCancelled {
            do {
                try await database.pruneExpired()
            } catch {
                logger.warning("pruning expired sign-ins failed", metadata: ["error": "\(type(of: error))"])
            }
            do {
                try await cancelWhenGracefulShutdown { try await Task.sleep(for: .seconds(30)) }
            } catch {
                // Shutdown or cancellation. Returning is the point: a swallowed CancellationError made this loop spin
                // (the sleep and the prune throw at once in a cancelled task) and starve the whole process.
                return
            }
        }
    }
}

/// Shuts the gateway's HTTP client down after everything that uses it stopped (it is listed first, so it stops last).
struct HTTPClientService: Service {
    let client: HTTPClient

    func run() async throws {
        try? await gracefulShutdown()
        try await client.shutdown()
    }
}
