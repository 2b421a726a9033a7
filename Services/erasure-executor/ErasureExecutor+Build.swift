import Contracts
import Foundation
import Logging
import Messaging
import Prometheus
import ServiceKit
import ServiceRuntime
import ServiceLifecycle
import Storage

extension OutboxRelay: ErasureNotifier {}

/// erasure-executor's parts, built and wired, so tests can reach into them.
struct ErasureExecutorParts {
    var group: ServiceGroup
    var ledger: ErasureLedger
    var relay: OutboxRelay
    var gate: RestoreGate
    var ownership: PartitionOwnership
    /// Where its listeners answer, once bound.
    var address: ReplicaAddress
    /// This replica's claim on its file (partition-owned replicas), held as long as the parts are.
    var claim: OwnedDataFile?
}

/// Wires erasure-executor in the start sequence of every service (``ServiceContext``): its SQLite ledger, its topics,
/// then the outbox relay, the WAL checkpointer, the state reader (tenants, participants), the intake (statuses,
/// requests, acks), the sweeper (dispatch, re-sends, deadlines) and the HTTP server. Intake, sweeper and the API's
/// write routes wait until the state reader has read the tenants and participants topics to their end (`gate`).
///
/// Safe at N replicas (docs/architecture.md, "Replicas"): each replica owns the partitions its intake group assigns
/// it — intake, sweeper, changelog and audit chains are partition-owned — announces them, and answers a request about
/// another replica's erasures by forwarding it to their owner, or by gathering every owner's part (``ErasureRoutes``).
/// `ERASURE_SINGLE_ACTIVE=true` runs it behind the lease instead (one active replica owning every partition, the
/// others standbys that forward to it), as before issue 18.
func buildErasureExecutor(
    config: ErasureExecutorConfig, logger: Logger, registry: PrometheusCollectorRegistry, handleSignals: Bool = true
) async throws -> ErasureExecutorParts {
    let context = try ServiceContext(
        name: "erasure-executor", config: config.standard, logger: logger, metrics: registry,
        singleActive: config.singleActive, partitioned: true)
    let topics = context.topics
    // Partition-owned replicas each need their own file; behind the lease the standbys share the active one's.
    let claim = config.singleActive ? nil : try OwnedDataFile(
        context.databasePath,
        hint: "no shared volume for erasure-executor, or ERASURE_SINGLE_ACTIVE=true to run one active replica on it")
    let ledger = try ErasureLedger(
        path: context.databasePath, settings: config.ledgerSettings, keys: try AuditKeys(auditKey: config.auditKey))
    try await context.ensureTopics(
        [\.tenants, \.pdrStatus, \.erasureRequests, \.erasureCommands, \.erasureAcks, \.erasureParticipants,
         \.erasureCompleted, \.erasureState],
        deadLettered: [\.pdrStatus, \.erasureRequests, \.erasureAcks, \.tenants, \.erasureParticipants])
    func partitions(of topic: String) async throws -> [TopicPartition] {
        let count = try await context.admin.partitionCount(of: topic)
        return (0..<count).map { TopicPartition(topic: topic, partition: Int32($0)) }
    }
    let statePartitions = try await partitions(of: topics.tenants) + partitions(of: topics.erasureParticipants)

    let producer = context.producer
    let relay = OutboxRelay(database: ledger.database, producer: producer, logger: logger, linger: config.outboxLinger)
    let checkpointer = WALCheckpointer(database: ledger.database, logger: logger)
    let metrics = ErasureMetrics()
    metrics.restored.record(0)
    let gate = RestoreGate()
    let state = try StateReader(
        bootstrapServers: config.standard.kafka.bootstrapServers, partitions: statePartitions,
        changelogPartitions: try await partitions(of: topics.erasureState), ledger: ledger,
        topics: topics, producer: producer, gate: gate, relay: relay, metrics: metrics,
        alertEvery: .seconds(max(1, config.restoreAlertSeconds)), logger: logger)
    // The range assignor gives a member the same partition numbers of the three topics: its partitions' erasures.
    let consumer = try context.consumer(
        group: "erasure-executor", topics: [topics.pdrStatus, topics.erasureRequests, topics.erasureAcks]
    ) { $0.assignmentStrategy = .range }
    let ownership = PartitionOwnership(gauge: "lethe_erasure_partitions_owned") { [peers = context.peers] in
        peers?.directory.announce(partitions: $0)
    }
    let intake = ErasureIntake(
        consumer: consumer, ledger: ledger, topics: topics, relay: relay, checkpointer: checkpointer,
        producer: producer, gate: gate, metrics: metrics,
        changelog: ChangelogReader(
            ledger: ledger, bootstrapServers: config.standard.kafka.bootstrapServers, producer: producer, gate: gate,
            logger: logger),
        ownership: ownership, logger: logger)
    let sweeper = ErasureSweeper(
        ledger: ledger, relay: relay, interval: .milliseconds(config.sweepMilliseconds), metrics: metrics,
        gate: gate, ownership: ownership, logger: logger)

    let http = context.httpServers(
        database: { try await ledger.database.check() },
        // Red until the tenants and participants topics were read to their end since this start, with why.
        readiness: [ReadinessCheck(name: "state") { try gate.check() }]
    ) { router in
        // An erasure requested, retried, waived or a participant retired: answered once its changelog record is sent.
        router.add(middleware: DurableAnswers(changelog: topics.erasureState, readsChangeNothing: true) { deadline in
            try await relay.waitUntilSent(deadline: deadline) == 0
        })
        ErasureAPI.addRoutes(
            to: router, ledger: ledger,
            verifier: TenantTokenVerifier(config: config.tenantAuth, httpClient: .shared, logger: logger),
            adminToken: config.adminToken, notifier: relay, gate: gate, metrics: metrics,
            partitions: context.peers.map { peers in
                PartitionRouter(
                    peers: peers, partitionCount: config.ledgerSettings.partitions, owned: { ownership.partitions })
            },
            logger: logger, onCompleted: { checkpointer.request() })
    }
    let group = context.serviceGroup(
        [relay, checkpointer, state, intake, sweeper], http: http, handleSignals: handleSignals)
    return ErasureExecutorParts(
        group: group, ledger: ledger, relay: relay, gate: gate, ownership: ownership, address: context.address,
        claim: claim)
}
