import Contracts
import Foundation
import Logging
import Messaging
import ServiceKit
import ServiceLifecycle
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

/// Where the other replicas of a service answer, from `lethe.replicas.v1`. A replica announces itself there
/// (`ReplicaActivated`) when it becomes the active one of its service (``announce()``, keyed by the service: a service
/// with a lease) or the owner of partitions (``announce(partitions:)``, one record per partition keyed
/// `<service>#<partition>`: a service whose replicas own partitions). Every replica reads the topic from its beginning,
/// outside any group, and keeps following it: the latest record of a key is its active replica (``active``,
/// ``owner(of:)``), where a standby, or a replica asked about a partition it does not own, forwards the request.
///
/// An announcement can be stale for a moment — the replica died, or the partition moved, and no other has announced
/// yet — so whoever uses it must expect the replica it names not to answer, or to answer that it no longer owns it.
package final class ReplicaDirectory: Sendable {
    /// Who owns a partition, as far as this replica knows.
    package enum Owner: Sendable, Equatable {
        case thisReplica
        case replica(ReplicaActivated)
        /// No replica announced it yet.
        case unknown
    }

    private enum Announcement: Sendable {
        case service
        case partitions(Set<Int32>)
    }

    /// This replica's id, drawn at start: a restarted replica is a new one.
    package let replica = "r-" + RandomIdentifier.uuidString().prefix(8)
    private let service: String
    private let topic: String
    private let bootstrapServers: String
    private let producer: KafkaProducer
    private let address: ReplicaAddress
    private let logger: Logger
    private let latest = Mutex<ReplicaActivated?>(nil)
    private let owners = Mutex<[Int32: ReplicaActivated]>([:])
    private let announcements: AsyncStream<Announcement>
    private let announcementRequests: AsyncStream<Announcement>.Continuation

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
        // The latest request is the one that matters: an ownership superseded before it was sent need not be.
        (announcements, announcementRequests) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(1))
    }

    /// The latest announced active replica of this service, unless it is this one.
    package var active: ReplicaActivated? {
        latest.withLock { $0 }.flatMap { $0.replica == replica ? nil : $0 }
    }

    /// The latest announced owner of `partition`.
    package func owner(of partition: Int32) -> Owner {
        guard let owner = owners.withLock({ $0[partition] }) else { return .unknown }
        return owner.replica == replica ? .thisReplica : .replica(owner)
    }

    /// Announces this replica as the active one, in the background: once its listeners are bound, retried until the
    /// broker has it.
    package func announce() {
        announcementRequests.yield(.service)
    }

    /// Announces this replica as the owner of `partitions`, in the background, as ``announce()`` does. A partition it
    /// no longer owns is not withdrawn: its next owner's announcement supersedes this one.
    package func announce(partitions: Set<Int32>) {
        announcementRequests.yield(.partitions(partitions))
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
                for await announcement in self.announcements {
                    try await self.send(announcement)
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
        guard let key = message.keyString, key == service || key.hasPrefix(service + "#") else { return }  // another service's
        do {
            let announced = try message.decodeEvent(ReplicaActivated.self)
            guard announced.key == key else {
                throw ContractError.malformedJSON(reason: "the record key is not the announcement's service and partition")
            }
            if let partition = announced.partition {
                owners.withLock { $0[partition] = announced }
                return
            }
            latest.withLock { $0 = announced }
            if announced.replica != replica {
                logger.info("the active replica is another one", metadata: [
                    "replica.service": "\(service)", "replica.active": "\(announced.replica)",
                    "replica.url": "\(announced.url)",
                ])
            }
        } catch {
            logger.warning("an announcement of an active replica could not be read; skipped", metadata: [
                "replica.service": "\(service)", "offset": "\(message.offset)", "error": "\(error)",
            ])
        }
    }

    private func send(_ announcement: Announcement) async throws {
        var urls = address.urls
        while urls == nil {
            try await Task.sleep(for: .milliseconds(50))
            urls = address.urls
        }
        guard let (url, internalUrl) = urls else { return }
        let now = Date()
        let partitions: [Int32?] = switch announcement {
        case .service: [nil]
        case .partitions(let owned): owned.sorted()
        }
        let messages = try partitions.map { partition in
            let event = ReplicaActivated(
                service: service, replica: replica, url: url, internalUrl: internalUrl, activatedAt: now,
                partition: partition)
            return try OutgoingMessage(event: event, topic: topic, key: event.key, source: "lethe/\(service)")
        }
        guard !messages.isEmpty else { return }
        try await retryUntilDone("announcing the active replica", logger: logger) {
            try await self.producer.send(messages)
        }
        logger.info("announced as the active replica", metadata: [
            "replica.service": "\(service)", "replica.id": "\(replica)", "replica.url": "\(url)",
            "replica.partitions": "\(partitions.compactMap { $0 }.map(String.init).joined(separator: ","))",
        ])
    }
}

/// The other replicas of a service and the way to reach them: the directory of where they answer and the HTTP client
/// that forwards to them. Runs on every replica (a standby forwards too) from the start to the end of the service.
package final class ReplicaPeers: Service, Sendable {
    package let directory: ReplicaDirectory
    package let forwarder: ReplicaForwarder

    init(service: String, config: StandardServiceConfig, producer: KafkaProducer, address: ReplicaAddress, logger: Logger) {
        directory = ReplicaDirectory(
            service: service, topic: config.topics.replicas, bootstrapServers: config.kafka.bootstrapServers,
            producer: producer, address: address, logger: logger)
        forwarder = ReplicaForwarder(replica: directory.replica, logger: logger)
    }

    package func run() async throws {
        forwarder.start()
        do {
            // Ends at graceful shutdown (its consumer does), after the HTTP servers, which forward through it.
            try await directory.run()
        } catch {
            await forwarder.shutdown()
            throw error
        }
        await forwarder.shutdown()
    }
}
