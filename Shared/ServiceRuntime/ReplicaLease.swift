import Contracts
import Foundation
import Hummingbird
import Logging
import Messaging
import Metrics
import ServiceKit
import ServiceLifecycle
import Synchronization

/// One active replica at a time, for a service that is not safe at N replicas yet (docs/architecture.md, "Replicas"):
/// Kafka chooses it, nothing else is shared.
///
/// Every replica joins the consumer group `<service>.replicas` on the single-partition lease topic
/// (`lethe.replicas.v1`, which carries no records). The member Kafka assigns the partition to is the **active**
/// replica: its workers (``ActiveOnly``) start. The others are **standbys**: health live, readiness red with the
/// reason, every other route 503 (``ActiveReplicaMiddleware``). The cooperative-sticky assignor keeps the partition
/// with its holder when a standby joins; when the active replica stops it leaves the group and a standby takes over at
/// once, and when it dies a standby takes over once its session times out (6 s, plus the group's rebalance).
///
/// An active replica that loses the partition while it runs — its session expired while it was frozen, or the broker
/// reassigned it — ends its process with ``LeaseLost`` rather than run on beside the new active replica; the
/// orchestrator restarts it, as a standby.
///
/// The replica that becomes active announces where it answers (``ReplicaDirectory``, run by ``ReplicaPeers`` on every
/// replica), and a standby forwards the requests it receives there (``ActiveReplicaMiddleware``), so every replica
/// answers whichever one a client reaches.
package final class ReplicaLease: Service, Sendable {
    package enum State: String, Sendable {
        /// Joining the group; nothing assigned yet.
        case joining
        case standby
        case active
    }

    /// The active replica lost the lease while running: the process must end.
    package struct LeaseLost: Error, CustomStringConvertible {
        package var description: String {
            "this replica lost the active lease to another replica while running; it stops, and restarts as a standby"
        }
    }

    private let consumer: KafkaConsumer
    let peers: ReplicaPeers
    private let activationSteps = Mutex([@Sendable () async throws -> Void]())
    private let service: String
    private let logger: Logger
    private let state = Mutex(State.joining)
    private let stateGauge: Gauge
    private let exitDeadline = Mutex<Duration?>(nil)

    /// A lease among the replicas of `service` (the group is `<namespace>.<service>.replicas`); `peers` announces
    /// this replica when it becomes the active one, and forwards a standby's requests (it runs beside the lease).
    package init(service: String, config: StandardServiceConfig, peers: ReplicaPeers, logger: Logger) throws {
        self.service = service
        self.logger = logger
        self.peers = peers
        consumer = try KafkaConsumer(
            config: KafkaConsumerConfig(
                bootstrapServers: config.kafka.bootstrapServers,
                subscription: .group(id: config.group("\(service).replicas"), topics: [config.topics.replicas]),
                clientId: service, sessionTimeout: .seconds(6), maxBufferedMessages: 1,
                revocationTimeout: .seconds(5), assignmentStrategy: .cooperativeSticky),
            logger: logger)
        stateGauge = Gauge(label: "lethe_replica_active")
        stateGauge.record(0)
    }

    package var current: State { state.withLock { $0 } }

    /// For a replica that is a process of its own: once the lease is lost, the process exits with status 1 after
    /// `deadline` if the orderly stop (workers cancelled, consumers closed) has not ended it by then. A replica that
    /// lost the lease must not run on because one part of it ignores cancellation. A thread, not a task: the
    /// cooperative pool may be what is stuck.
    package func exitsProcess(ifStillRunningAfter deadline: Duration) {
        exitDeadline.withLock { $0 = deadline }
    }

    private func armExitDeadline() {
        guard let deadline = exitDeadline.withLock({ $0 }) else { return }
        let seconds = Double(deadline.components.seconds) + Double(deadline.components.attoseconds) / 1e18
        Thread.detachNewThread {
            Thread.sleep(forTimeInterval: seconds)
            FileHandle.standardError.write(Data(
                "stopped: this replica lost the active lease and had not stopped \(Int(seconds)) s later; exiting\n".utf8))
            _exit(1)  // not exit(): the orderly stop may be calling exit() at this moment, and it is not thread-safe
        }
    }

    /// `step` runs each time this replica is about to become the active one, before any worker starts or any route
    /// answers: what a standby read at start (keys, caches) may have changed under the replica it takes over from.
    /// A step that throws ends the process (the orchestrator restarts it, as a standby).
    package func beforeActive(_ step: @escaping @Sendable () async throws -> Void) {
        activationSteps.withLock { $0.append(step) }
    }

    /// Returns once this replica is the active one; throws `CancellationError` when the service shuts down first.
    package func waitUntilActive() async throws {
        try await cancelWhenGracefulShutdown {
            while self.current != .active {
                try await Task.sleep(for: .milliseconds(100))
            }
        }
    }

    /// For `/health/ready`: throws, saying why, unless this replica is the active one.
    package var readinessCheck: ReadinessCheck {
        ReadinessCheck(name: "replica") { [self] in
            switch current {
            case .active: return
            case .joining: throw NotActive(reason: "joining \(service)'s replica group to learn which replica is active")
            case .standby:
                // Which one it forwards to, so an operator reading one replica's health sees where the other answers.
                let target = peers.directory.active.map { "requests forwarded to replica \($0.replica) at \($0.url)" }
                    ?? "which one is not announced yet"
                throw NotActive(reason: "standby: another replica of \(service) is active; \(target)")
            }
        }
    }

    struct NotActive: Error, CustomStringConvertible {
        var reason: String
        var description: String { reason }
    }

    package func run() async throws {
        let events = consumer.events
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await self.consumer.run() }
            group.addTask {
                for try await event in events {
                    try await self.handle(event)
                }
            }
            do {
                try await group.next()
                try await group.waitForAll()
            } catch {
                group.cancelAll()
                throw error
            }
        }
    }

    private func handle(_ event: ConsumerEvent) async throws {
        switch event {
        case .message:
            return  // the lease topic has no records; nothing to do with one if someone wrote it
        case .partitionsAssigned(let partitions):
            if partitions.isEmpty {
                let previous = state.withLock { state in
                    defer { if state != .active { state = .standby } }
                    return state
                }
                if previous == .joining {
                    logger.notice("standby: another replica is active", metadata: ["replica.service": "\(service)"])
                }
                return
            }
            guard current != .active else { return }
            for step in activationSteps.withLock({ $0 }) { try await step() }
            state.withLock { $0 = .active }
            stateGauge.record(1)
            peers.directory.announce()
            logger.notice("this replica is now the active one", metadata: ["replica.service": "\(service)"])
        case .partitionsRevoked(let partitions):
            guard !partitions.isEmpty, current == .active, !Task.isShuttingDownGracefully else { return }
            stateGauge.record(0)
            logger.critical("lost the active lease while running; stopping", metadata: ["replica.service": "\(service)"])
            armExitDeadline()
            throw LeaseLost()
        }
    }
}

/// Runs `service` only on the active replica: it starts once the lease is this replica's (``ReplicaLease``).
package struct ActiveOnly: Service {
    let service: any Service
    let lease: ReplicaLease

    package init(_ service: any Service, lease: ReplicaLease) {
        self.service = service
        self.lease = lease
    }

    package func run() async throws {
        do {
            try await lease.waitUntilActive()
        } catch is CancellationError {
            return  // shut down while a standby: nothing was started
        }
        try await service.run()
    }
}
