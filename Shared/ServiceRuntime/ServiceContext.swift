import Contracts
import Hummingbird
import Logging
import Messaging
import Prometheus
import ServiceKit
import ServiceLifecycle

/// What every Lethe service over Kafka starts from, and the steps of its start, in one place.
///
/// A service's build function is its start sequence, each step a line of its own:
/// 1. **Configuration** is validated before (the entry point exits with one line naming a bad variable).
/// 2. **Storage**: the service opens and migrates its own SQLite file at ``databasePath``.
/// 3. **Topics**: ``ensureTopics(_:deadLettered:)`` creates what the service produces and consumes, and the DLQs of
///    what it consumes — or, when the
///    operator provisions topics (`KAFKA_CREATE_TOPICS=false`), only checks that they exist as declared.
/// 4. **Consumers** from ``consumer(group:topics:tune:)``, and the service's own workers.
/// 5. **HTTP**: ``httpServers(database:readiness:internalRoutes:routes:)`` — the request log and error shape, health,
///    metrics, the service's routes, and its internal listener when it has one.
/// 6. **Run**: ``serviceGroup(_:http:handleSignals:)`` runs the producer, the workers and HTTP, and stops them
///    in reverse order; readiness turns green once every check passes.
///
/// Creating a context connects to nothing: the producer and the admin client reach the broker when first used.
package struct ServiceContext: Sendable {
    /// The service's name: its Kafka client id, its `Server` header, its SQLite file's name.
    package let name: String
    package let config: StandardServiceConfig
    package let logger: Logger
    /// Served on `/metrics`.
    package let metrics: PrometheusCollectorRegistry
    package let admin: KafkaAdmin
    /// The service's one producer (the outbox relay, dead-letter queues and acknowledgements all send through it).
    package let producer: KafkaProducer
    /// For a service that runs one active replica at a time (``ReplicaLease``); nil for one safe at N replicas.
    package let lease: ReplicaLease?
    /// The other replicas and how to reach them, for a service with a lease or whose replicas own partitions; nil for
    /// one whose replicas never forward to each other.
    package let peers: ReplicaPeers?
    /// Where this replica's listeners answer, as the other replicas reach it (set as they bind).
    package let address: ReplicaAddress

    /// `singleActive`: the service is not safe at N replicas yet, so only the replica holding its lease runs its
    /// workers and serves its API; the others wait as standbys. `partitioned`: its replicas own partitions and
    /// announce them, and a request about another replica's partition is forwarded there (``peers``).
    package init(
        name: String, config: StandardServiceConfig, logger: Logger, metrics: PrometheusCollectorRegistry,
        singleActive: Bool = false, partitioned: Bool = false
    ) throws {
        self.name = name
        self.config = config
        self.logger = logger
        self.metrics = metrics
        admin = try KafkaAdmin(bootstrapServers: config.kafka.bootstrapServers, logger: logger)
        producer = try KafkaProducer(
            config: KafkaProducerConfig(bootstrapServers: config.kafka.bootstrapServers, clientId: name), logger: logger)
        address = ReplicaAddress(http: config.http)
        let peers = singleActive || partitioned
            ? ReplicaPeers(service: name, config: config, producer: producer, address: address, logger: logger)
            : nil
        self.peers = peers
        lease = try peers.flatMap { peers in
            singleActive ? try ReplicaLease(service: name, config: config, peers: peers, logger: logger) : nil
        }
    }

    /// The topics, inside the configured namespace.
    package var topics: LetheTopics { config.topics }

    /// The service's SQLite file, `<LETHE_DATA_DIR>/<name>.sqlite`.
    package var databasePath: String { config.dataDirectory.databaseFile(name).path }

    /// The start step for topics: every topic of `used` as ``Topics`` declares it (cleanup policy, retention) and the
    /// dead-letter topic of each of `deadLettered` (what the service consumes), all with `KAFKA_TOPIC_PARTITIONS`
    /// partitions. Only the DLQs a service writes: creating topics is slow on some brokers, and tests create many
    /// namespaces' worth (compose's `topics` job creates every DLQ once).
    ///
    /// With `KAFKA_CREATE_TOPICS=false` nothing is created: each topic must exist with that partition count, or the
    /// start fails naming the first one that does not — for an operator who provisions topics, or a broker whose
    /// credentials may not create them.
    package func ensureTopics(
        _ used: [KeyPath<Topics.Type, TopicDefinition>], deadLettered: [KeyPath<Topics.Type, TopicDefinition>]
    ) async throws {
        let partitions = config.kafka.topicPartitions
        let specs = (used + (peers == nil ? [] : [\.replicas])).map { path in
            TopicSpec(Topics.definition(of: path), in: topics, partitions: partitions)
        } + deadLettered.map { DeadLetterQueue.topicSpec(for: topics[dynamicMember: $0], partitions: partitions) }
        guard config.kafka.createTopics else {
            for spec in specs {
                try await requireProvisioned(spec)
            }
            return
        }
        try await admin.ensureTopics(specs)
    }

    private func requireProvisioned(_ spec: TopicSpec) async throws {
        let count: Int
        do {
            count = try await admin.partitionCount(of: spec.name)
        } catch {
            throw TopicsNotProvisioned(topic: spec.name, reason: "cannot be described (\(error))")
        }
        guard count == spec.partitions else {
            throw TopicsNotProvisioned(topic: spec.name, reason: "has \(count) partitions, expected \(spec.partitions)")
        }
    }

    /// A consumer of `topics` in the group `group` (inside the namespace), named after the service, with the session
    /// timeout every service uses: 6 s keeps a group's first join and a takeover after a crash short (the dev broker
    /// takes about half the session timeout to form a group). `tune` sets what one consumer needs more (buffer,
    /// fetch sizes).
    package func consumer(
        group: String, topics: [String], tune: (inout KafkaConsumerConfig) -> Void = { _ in }
    ) throws -> KafkaConsumer {
        var consumerConfig = KafkaConsumerConfig(
            bootstrapServers: config.kafka.bootstrapServers, subscription: .group(id: config.group(group), topics: topics),
            clientId: name, sessionTimeout: .seconds(6), fetchMaxWait: config.kafka.fetchMaxWait)
        tune(&consumerConfig)
        return try KafkaConsumer(config: consumerConfig, logger: logger)
    }

    /// The HTTP servers: the access log, request id and error shape (``RequestLogMiddleware``) on every route; health
    /// with the checks every service has — `sqlite` (`database`; nil for a service without a SQLite file) and `kafka`
    /// (the broker answers and the producer has not failed for good, after which the process is ending) — then
    /// `readiness`, on every listener; the service's
    /// `routes` on the public listener. `/metrics` and `internalRoutes` go on the internal listener when
    /// `HTTP_INTERNAL_PORT` sets one, and never on the public port then; without it one listener serves everything.
    package func httpServers(
        database: (@Sendable () async throws -> Void)?, readiness: [ReadinessCheck] = [],
        internalRoutes: (Router<LetheRequestContext>) -> Void = { _ in },
        routes: (Router<LetheRequestContext>) -> Void
    ) -> HTTPServers {
        let admin = admin
        let producer = producer
        let checks = (database.map { [ReadinessCheck(name: "sqlite", check: $0)] } ?? []) + [
            ReadinessCheck(name: "kafka") {
                try await admin.ping()
                try producer.checkNotFatal()
            },
        ] + readiness
        let (lease, replicaAddress) = (self.lease, self.address)
        func router(internal isInternal: Bool, metrics: Bool) -> Router<LetheRequestContext> {
            let router = Router(context: LetheRequestContext.self)
            router.add(middleware: RequestLogMiddleware())  // before the routes: it applies to those added after it
            if let lease { router.add(middleware: ActiveReplicaMiddleware(lease: lease, internalListener: isInternal)) }
            router.addOperationalRoutes(
                readiness: checks + (lease.map { [$0.readinessCheck] } ?? []), registry: metrics ? self.metrics : nil)
            return router
        }
        func server(_ router: Router<LetheRequestContext>, port: Int, internal isInternal: Bool) -> HTTPServers.Server {
            var address = config.http
            address.port = port
            return Application(
                router: router, configuration: address.applicationConfiguration(serverName: name),
                onServerRunning: { channel in
                    if let bound = channel.localAddress?.port { replicaAddress.bound(port: bound, internal: isInternal) }
                },
                logger: logger)
        }
        let http = config.http
        let main = router(internal: false, metrics: http.internalPort == nil)
        routes(main)
        guard let internalPort = http.internalPort else {
            internalRoutes(main)
            return HTTPServers(main: server(main, port: http.port, internal: false), internal: nil)
        }
        let internalRouter = router(internal: true, metrics: true)
        internalRoutes(internalRouter)
        return HTTPServers(
            main: server(main, port: http.port, internal: false),
            internal: server(internalRouter, port: internalPort, internal: true))
    }

    /// Runs the producer first, then `services` in order, then the HTTP servers; ServiceGroup stops them in reverse
    /// order, so HTTP drains first and the producer, which everything sends through, flushes last. `handleSignals`:
    /// SIGTERM and SIGINT shut down gracefully (tests run several services in one process and pass false).
    ///
    /// With a lease, it runs right after the producer and `resources`, and each of `services` starts only once this
    /// replica is the active one (``ActiveOnly``); stopping, the lease is let go after every worker ended, so the next
    /// active replica never overlaps this one. `resources` (an HTTP client's lifetime, say) and ``peers`` run on every
    /// replica. A process of its own (`handleSignals`) that loses its lease exits within 10 s whatever part of it
    /// ignores the cancellation (``ReplicaLease/exitsProcess(ifStillRunningAfter:)``).
    package func serviceGroup(
        _ services: [any Service], resources: [any Service] = [], http: HTTPServers, handleSignals: Bool
    ) -> ServiceGroup {
        if handleSignals { lease?.exitsProcess(ifStillRunningAfter: .seconds(10)) }
        let workers: [any Service] = lease.map { lease in [lease] + services.map { ActiveOnly($0, lease: lease) } }
            ?? services
        let everywhere: [any Service] = [producer] + (peers.map { [$0] } ?? []) + resources
        return ServiceGroup(configuration: .init(
            services: (everywhere + workers + http.services)
                .map { ServiceGroupConfiguration.ServiceConfiguration(service: $0) },
            gracefulShutdownSignals: handleSignals ? [.sigterm, .sigint] : [], logger: logger))
    }
}

/// A service's listeners: the public one, and the internal one (metrics, internal routes) when configured.
package struct HTTPServers {
    package typealias Server = Application<RouterResponder<LetheRequestContext>>
    package var main: Server
    package var `internal`: Server?

    package var services: [any Service] { [main] + (`internal`.map { [$0] } ?? []) }
}

/// A topic the operator was to provision (`KAFKA_CREATE_TOPICS=false`) is missing or differs.
package struct TopicsNotProvisioned: Error, CustomStringConvertible {
    package var topic: String
    package var reason: String

    package var description: String {
        "topic \(topic) \(reason); with KAFKA_CREATE_TOPICS=false every topic must be created beforehand (see compose)"
    }
}
