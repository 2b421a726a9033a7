import AsyncHTTPClient
import AtlassianClient
import Contracts
import ErasureKit
import Foundation
import Logging
import Messaging
import Prometheus
import ServiceKit
import ServiceRuntime
import ServiceLifecycle
import Storage

/// oauth-gateway's parts, built and wired, so tests can reach into them.
struct OAuthGatewayParts {
    var group: ServiceGroup
    var gateway: Gateway
    var database: GatewayDatabase
    var changelog: GatewayChangelog
    var durability: Durability
    /// This replica's claim on its file, held as long as the parts are.
    var claim: OwnedDataFile
}

/// Wires oauth-gateway in the start sequence of every service (``ServiceContext``): its SQLite file, its topics, the
/// data and signing keys, the shared app; then the outbox relay, the erasure participant, the status consumer, a
/// pruner for expired sign-in states and codes, the data key rotation, the connection keep-alive and the HTTP server.
func buildOAuthGateway(
    config: OAuthGatewayConfig, logger: Logger, registry: PrometheusCollectorRegistry, handleSignals: Bool = true
) async throws -> OAuthGatewayParts {
    // Not safe at N replicas yet (docs/architecture.md, "Replicas"): one active replica, the others standbys.
    let context = try ServiceContext(
        name: "oauth-gateway", config: config.standard, logger: logger, metrics: registry, singleActive: true)
    let topics = context.topics
    // Each replica has a file of its own: the one that becomes active reads the state back from the changelog.
    let claim = try OwnedDataFile(
        context.databasePath,
        hint: "no shared volume for oauth-gateway: the replica that becomes active reads the state back from "
            + "lethe.gateway.state.v1")
    let database = try GatewayDatabase(path: context.databasePath, topics: topics)
    // Not active yet, so what this file holds is another replica's state by now, perhaps with what was erased since.
    if let dropped = try await database.dropStaleState() {
        try database.database.checkpointNow()
        logger.info("the state this file held was dropped: it is read back when this replica becomes active", metadata: [
            "rows": "\(dropped)",
        ])
    }
    try await context.ensureTopics(
        [\.tenants, \.profiles, \.pdrStatus, \.erasureRequests, \.erasureCommands, \.erasureAcks,
         \.erasureParticipants, \.erasureCompleted, \.gatewayState],
        deadLettered: [\.pdrStatus, \.erasureCommands, \.erasureCompleted])

    let producer = context.producer
    // Sent profiles hold personal data: the relay deletes them as soon as the broker has them. Answers wait for the
    // outbox (Durability), so it lingers as briefly as the changelog's publisher.
    let relay = OutboxRelay(
        database: database.database, producer: producer, logger: logger, linger: GatewayChangelog.linger,
        retention: .zero)
    let checkpointer = WALCheckpointer(database: database.database, logger: logger)
    // A suppression list converted at open (or anything erased before a crash) leaves the WAL at start.
    checkpointer.request()
    // The state's changelog, and what every acknowledgement waits for (an answer, an erasure's ack, a commit).
    let changelog = GatewayChangelog(
        database: database, producer: producer, admin: context.admin, topic: topics.gatewayState,
        bootstrapServers: config.standard.kafka.bootstrapServers, logger: logger, idleInterval: config.changelogInterval)
    let durability = Durability(changelog: changelog, relay: relay)
    let statusConsumer = try context.consumer(group: "oauth-gateway", topics: [topics.pdrStatus])
    // Completed erasures become the tenants' account-purged security events.
    let completionConsumer = try context.consumer(group: "oauth-gateway.ssf", topics: [topics.erasureCompleted])
    let participant = try context.erasureParticipant(
        "oauth-gateway", holds: ["accountId", "accessToken", "refreshToken"],
        handler: GatewayErasureHandler(database: database, checkpointer: checkpointer, durability: durability))

    // Created after everything that can throw, so a failed start never leaves a client that was not shut down.
    let httpClient = atlassianHTTPClient()
    let gateway: Gateway
    do {
        gateway = try await makeGateway(config: config, database: database, httpClient: httpClient, logger: logger)
    } catch {
        try? await httpClient.shutdown()
        throw error
    }

    // Becoming the active replica: the state as the changelog holds it (the replica before may have had another
    // volume), then what this process configures at start (the shared app) written again over it, and the keys
    // loaded again, as read back or rotated by the replica before.
    context.lease?.beforeActive {
        try await changelog.takeOver(previousActivation: context.peers?.directory.active?.activatedAt)
        try await registerSharedApp(config: config, database: database)
        try gateway.box.reload()
        try await gateway.signer.load()
    }

    let http = gatewayServers(context, config: config, gateway: gateway, database: database, durability: durability)
    let group = context.serviceGroup(
        [
            changelog, relay, checkpointer, participant,
            StatusConsumer(
                consumer: statusConsumer, gateway: gateway, durability: durability, producer: producer, logger: logger),
            ExpiryPruner(database: database, logger: logger),
            DataKeyRotation(database: database, box: gateway.box, logger: logger),
            CompletionConsumer(
                consumer: completionConsumer, database: database, durability: durability, producer: producer,
                logger: logger),
            SecurityEventDelivery(
                gateway: gateway, httpClient: httpClient, settings: config.securityEventDelivery, logger: logger),
            ConnectionKeepAlive(database: database, vault: gateway.vault, settings: config.keepAlive, logger: logger),
        ],
        resources: [HTTPClientService(client: httpClient)], http: http, handleSignals: handleSignals)
    return OAuthGatewayParts(
        group: group, gateway: gateway, database: database, changelog: changelog, durability: durability, claim: claim)
}

/// The gateway's listeners. The reporting-token API is on the internal listener only (the gateway always has one):
/// never through the public URL, whatever a proxy in front of the public port forwards.
private func gatewayServers(
    _ context: ServiceContext, config: OAuthGatewayConfig, gateway: Gateway, database: GatewayDatabase,
    durability: Durability
) -> HTTPServers {
    // The gateway always has an internal listener (HTTP_INTERNAL_PORT, 9080 by default): two routers, one middleware
    // each. Every method waits: a sign-in's callback is a GET.
    let durable = DurableAnswers<LetheRequestContext>(
        changelog: context.topics.gatewayState, readsChangeNothing: false
    ) { deadline in try await durability.wait(deadline: deadline) }
    return context.httpServers(
        database: { try await database.database.check() },
        internalRoutes: { router in
            router.add(middleware: durable)
            GatewayAPI.addInternalRoutes(to: router, gateway: gateway, internalToken: config.internalToken)
        }
    ) { router in
        router.add(middleware: durable)
        GatewayAPI.addRoutes(to: router, gateway: gateway, adminToken: config.adminToken, issuer: config.issuer)
    }
}

/// The client of Atlassian's (and the Shared Signals receivers') endpoints. Its own rather than HTTPClient.shared: the
/// shared one keeps at most 8 connections per host, and every sign-in in flight makes two sequential calls to
/// Atlassian, so concurrent sign-ins queued for a connection.
func atlassianHTTPClient() -> HTTPClient {
    var configuration = HTTPClient.Configuration.singletonConfiguration
    configuration.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: 64)
    return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
}

/// The gateway's logic over its SQLite file, without Kafka: the data and signing keys loaded (created on a new file),
/// the platform's shared app registered. The build wires it to its consumers and routes; route tests use it alone.
func makeGateway(
    config: OAuthGatewayConfig, database: GatewayDatabase, httpClient: HTTPClient, logger: Logger
) async throws -> Gateway {
    let box = try SecretBox(masterKey: config.masterKey, previousMasterKey: config.previousMasterKey, database: database)
    // A retired key stays published well past the longest-lived token it can have signed.
    let signer = TokenSigner(
        database: database, box: box, retention: max(config.tenantTokenLifetime, Gateway.idTokenLifetime) * 2 + 3600)
    try await signer.load()
    try await registerSharedApp(config: config, database: database)
    let atlassian = AtlassianClient(config: config.atlassian, httpClient: httpClient, logger: logger)
    return Gateway(config: config, database: database, box: box, signer: signer, atlassian: atlassian, logger: logger)
}

/// Registers (or updates) the platform's shared app as configured, when one is.
private func registerSharedApp(config: OAuthGatewayConfig, database: GatewayDatabase) async throws {
    guard let shared = config.sharedApp else { return }
    try await database.registerSharedApp(
        appId: shared.clientId, callbackURL: shared.callbackURL, scopes: Gateway.requiredScopes)
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
