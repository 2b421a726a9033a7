import Contracts
import Foundation
import Logging
import Messaging
import ServiceKit
import Synchronization

/// Where this replica's listeners answer, as the other replicas of its service reach it: the advertised host
/// (`HTTPServerConfig.advertisedHost`, resolved when first asked: only a replica that announces itself needs it) and
/// the ports the listeners bound, known once they run (port 0 in tests asks the system for one).
package final class ReplicaAddress: Sendable {
    private struct Ports {
        var main: Int?
        var `internal`: Int?
        var host: String?
    }

    private let http: HTTPServerConfig
    private let ports = Mutex(Ports())

    package init(http: HTTPServerConfig) {
        self.http = http
    }

    /// Called by a listener once it is bound.
    package func bound(port: Int, internal isInternal: Bool) {
        ports.withLock { if isInternal { $0.internal = port } else { $0.main = port } }
    }

    /// The URLs, once every listener is bound.
    package var urls: (url: String, internalUrl: String?)? {
        ports.withLock { ports in
            guard let main = ports.main else { return nil }
            let host = ports.host ?? http.advertisedHost
            ports.host = host
            guard http.internalPort != nil else { return ("http://\(host):\(main)", nil) }
            return ports.internal.map { ("http://\(host):\(main)", "http://\(host):\($0)") }
        }
    }
}

/// Which replica of a service is the active one and where it answers, from `lethe.replicas.v1`: the replica that
/// becomes active announces itself there (``announce()``, a `ReplicaActivated` keyed by the service), and every replica
/// reads the topic from its beginning, outside any group, and keeps following it. The latest announcement of its own
/// service is the active replica (``active``), which a standby forwards requests to (``ActiveReplicaMiddleware``).
///
/// An announcement can be stale for a moment — the active replica died and no other has taken over yet — so whoever
/// uses it must expect the replica it names not to answer.
final class ReplicaDirectory: Sendable {
    /// This replica's id, drawn at start: a restarted replica is a new one.
    let replica = "r-" + RandomIdentifier.uuidString().prefix(8)
    private let service: String
    private let topic: String
    private let bootstrapServers: String
    private let producer: KafkaProducer
    private let address: ReplicaAddress
    private let logger: Logger
    private let latest = Mutex<ReplicaActivated?>(nil)
    private let announcements: AsyncStream<Void>
    private let announcementRequests: AsyncStream<Void>.Continuation

    init(
        service: String, topic: String, bootstrapServers: String, producer: KafkaProducer, address: ReplicaAddress,
        logger: Logger
    ) {
        self.service = service
        self.topic = topic
        self.bootstrapServers = bootstrapServers
        self.producer = producer
        self.address = address
        self.logger = logger
        (announcements, announcementRequests) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(1))
    }

    /// The latest announced active replica of this service, unless it is this one.
    var active: ReplicaActivated? {
        latest.withLock { $0 }.flatMap { $0.replica == replica ? nil : $0 }
    }

    /// Announces this replica as the active one, in the background: once its listeners are bound, retried until the
    /// broker has it.
    func announce() {
        announcementRequests.yield()
    }

    /// Reads the topic and sends the announcements until the service stops.
    func run() async throws {
        let consumer = try KafkaConsumer(
            config: KafkaConsumerConfig(
                bootstrapServers: bootstrapServers,
                subscription: .partitions([(TopicPartition(topic: topic, partition: 0), from: .beginning)]),
                clientId: "\(service)-replicas"),
            logger: logger)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await consumer.run() }
            group.addTask {
                for try await event in consumer.events {
                    if case .message(let message) = event { self.read(message) }
                }
            }
            group.addTask {
                for await _ in self.announcements {
                    try await self.sendAnnouncement()
                }
            }
            do {
                try await group.next()
                group.cancelAll()
            } catch {
                group.cancelAll()
                throw error
            }
        }
    }

    private func read(_ message: KafkaMessage) {
        guard message.keyString == service else { return }  // another service's
        do {
            let announced = try message.decodeEvent(ReplicaActivated.self)
            latest.withLock { $0 = announced }
            if announced.replica != replica {
                logger.info("the active replica is another one", metadata: [
                    "replica.service": "\(service)", "replica.active": "\(announced.replica)",
                    "replica.url": "\(announced.url)",
                ])
            }
        } catch {
            logger.warning("an announcement of the active replica could not be read; skipped", metadata: [
                "replica.service": "\(service)", "offset": "\(message.offset)", "error": "\(error)",
            ])
        }
    }

    private func sendAnnouncement() async throws {
        var urls = address.urls
        while urls == nil {
            try await Task.sleep(for: .milliseconds(50))
            urls = address.urls
        }
        guard let (url, internalUrl) = urls else { return }
        let event = ReplicaActivated(
            service: service, replica: replica, url: url, internalUrl: internalUrl, activatedAt: Date())
        let message = try OutgoingMessage(event: event, topic: topic, key: service, source: "lethe/\(service)")
        try await retryUntilDone("announcing the active replica", logger: logger) {
            _ = try await self.producer.send(message)
        }
        logger.info("announced as the active replica", metadata: [
            "replica.service": "\(service)", "replica.id": "\(replica)", "replica.url": "\(url)",
        ])
    }
}
