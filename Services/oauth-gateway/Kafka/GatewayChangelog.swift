import Contracts
import Foundation
import Logging
import Messaging
import Metrics
import ServiceLifecycle
import Storage
import Synchronization

/// Publishes the gateway's changelog (`lethe.gateway.state.v1`, GatewayDatabase+Changelog) while this replica is the
/// active one, and reads it back when a replica becomes active (``takeOver()``), so the replica that takes over holds
/// the state of the one before it whether or not they share a volume.
struct GatewayChangelog: Service {
    let database: GatewayDatabase
    let producer: KafkaProducer
    let admin: KafkaAdmin
    let topic: String
    let bootstrapServers: String
    let logger: Logger
    /// How often the publisher looks for changes nobody waits for (``waitUntilPublished(deadline:)`` wakes it at
    /// once): the longest such a change waits, and so what a lost volume can lose of them.
    let idleInterval: Duration
    private let progress: Progress

    /// The publisher's wake-up and how far it has published, shared by every copy of this value.
    private final class Progress: Sendable {
        let wake: AsyncStream<Void>
        let wakeContinuation: AsyncStream<Void>.Continuation
        /// The newest listing published and forgotten (`gateway_changes.seq` only grows: AUTOINCREMENT).
        let publishedThrough = Mutex<Int64>(0)

        init() {
            (wake, wakeContinuation) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        }
    }

    init(
        database: GatewayDatabase, producer: KafkaProducer, admin: KafkaAdmin, topic: String, bootstrapServers: String,
        logger: Logger, idleInterval: Duration = .milliseconds(50)
    ) {
        self.database = database
        self.producer = producer
        self.admin = admin
        self.topic = topic
        self.bootstrapServers = bootstrapServers
        self.logger = logger
        self.idleInterval = idleInterval
        progress = Progress()
    }

    private static let published = Counter(label: "lethe_gateway_changelog_published_total")
    /// How long a woken publisher waits before it reads the listings.
    static let linger: Duration = .milliseconds(5)

    /// Publishes listed changes until the service stops, then what is left (the next active replica reads it back).
    func run() async throws {
        let interval = idleInterval
        let continuation = progress.wakeContinuation
        let ticker = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                continuation.yield()
            }
        }
        defer { ticker.cancel() }
        for await _ in progress.wake.cancelOnGracefulShutdown() {
            // A few ms for the requests answered at about the same time to list their changes too: one round (one
            // read, one send, one write) for all of them rather than one each.
            try? await Task.sleep(for: Self.linger)
            do {
                try await publishPending()
            } catch {
                logger.warning("publishing the gateway's changelog failed; retrying", metadata: [
                    "error": "\(error)",
                ])
                try? await Task.sleep(for: .milliseconds(200))
            }
        }
        do {
            try await publishPending()
        } catch {
            logger.error("changes of the gateway's state left unpublished at shutdown", metadata: ["error": "\(error)"])
        }
    }

    /// Publishes every listed change, in batches, each forgotten once the broker has it. Returns how many records.
    /// One caller at a time: the service's loop, or ``takeOver(previousActivation:)`` before the loop starts.
    @discardableResult
    func publishPending() async throws -> Int {
        var total = 0
        while let (records, through) = try await database.pendingChanges(topic: topic) {
            try await producer.send(records)
            try await database.forgetChanges(through: through)
            progress.publishedThrough.withLock { $0 = max($0, through) }
            total += records.count
            Self.published.increment(by: records.count)
        }
        return total
    }

    /// Returns once every change this file lists now is on the broker: what acknowledges a change to someone else —
    /// an answer to a request, an erasure's ack, a consumed record's commit — waits for it, so a replica killed after
    /// the acknowledgement cannot take the change with it (the next active replica reads the changelog back, not this
    /// file). Wakes the publisher rather than waiting for its next round. Returns false when `deadline` passed first
    /// (the broker unreachable: the change is saved and listed, and published once the broker answers); without a
    /// deadline it waits as long as that takes. Returns at once on a standby: it lists nothing.
    @discardableResult
    func waitUntilPublished(deadline: ContinuousClock.Instant? = nil) async throws -> Bool {
        guard let listed = try await database.newestListing() else { return true }
        progress.wakeContinuation.yield()
        // A publication takes the linger and a produce round trip: looked at after 2 ms, then less and less often, so
        // that many requests waiting on a slow broker do not wake hundreds of times a second each.
        var pause: Duration = .milliseconds(2)
        while progress.publishedThrough.withLock({ $0 }) < listed {
            if let deadline, ContinuousClock.now >= deadline { return false }
            try await Task.sleep(for: pause)
            pause = min(pause * 2, .milliseconds(20))
        }
        return true
    }

    /// Makes this replica's file hold the gateway's state before it becomes the active one:
    /// 1. It publishes what its file still lists: changes this file's previous process made as the active replica and
    ///    had not published when it was killed. Unless another replica became active after them (`previousActivation`,
    ///    the latest the replicas topic announced): the changelog holds newer state then, and they are discarded.
    /// 2. It reads the whole topic back over the file (a row that clashes with another through a unique column waits
    ///    for the end, when it is the latest of its key: GatewayDatabase.applyChangelog), and deletes every row the
    ///    topic does not hold (what a standby made on its own file, a row deleted while this file was not read).
    /// 3. If the topic held nothing but what step 1 published — a first start, an upgrade from before the changelog,
    ///    a topic emptied — the file is the state: every row is published instead, and nothing deleted.
    /// 4. It starts listing its own changes.
    func takeOver(previousActivation: Date? = nil) async throws {
        let started = ContinuousClock.now
        if let previousActivation, let newest = try await database.newestListedChange(), newest < previousActivation {
            let discarded = try await database.discardListedChanges()
            logger.warning("changes this file listed before another replica became active are not published", metadata: [
                "count": "\(discarded)",
            ])
        }
        let leftover = try await publishPending()
        let partitions = try await admin.partitionCount(of: topic)
        let progress = Mutex(GatewayDatabase.ChangelogReadBack())
        let read = try await RestoreMarker.readToEnd(
            (0..<partitions).map { TopicPartition(topic: topic, partition: Int32($0)) },
            bootstrapServers: bootstrapServers, producer: producer, clientId: "oauth-gateway-changelog", logger: logger
        ) { [database] messages in
            let batch = try await database.applyChangelog(messages)
            progress.withLock { $0.absorb(batch) }
        }
        let applied = try await database.finishReadBack(progress.withLock { $0 })
        var metadata: Logger.Metadata = [
            "records": "\(read.handed)", "rows": "\(applied.rows)", "tombstones": "\(applied.deleted)",
            "republished": "\(leftover)",
        ]
        if read.handed <= leftover {
            let listed = try await database.listEveryRow()
            let published = try await publishPending()
            metadata["carried_over"] = "\(listed)"
            logger.notice("the changelog held none of the gateway's state: this file's state is published", metadata: [
                "rows": "\(listed)", "records": "\(published)",
            ])
        } else {
            metadata["dropped"] = "\(try await database.deleteRows(notIn: applied.seen))"
        }
        try await database.markReadBack()
        try await database.captureChanges()
        metadata["restore_time"] = "\(ContinuousClock.now - started)"
        logger.info("the gateway's state read back from its changelog", metadata: metadata)
        if applied.refused > 0 {
            logger.error("changelog records refused: unreadable, or of a table or column this file does not have", metadata: [
                "count": "\(applied.refused)",
            ])
        }
    }
}

/// What the gateway waits for before it acknowledges a change to anyone — an answer to a request, an erasure's ack,
/// a consumed record's commit: the change's changelog records, and the records its transaction queued in the outbox,
/// on the broker. The file alone does not keep a change: the next active replica reads the changelog back, not this
/// file, and never sends this file's outbox.
struct Durability: Sendable {
    let changelog: GatewayChangelog
    let relay: OutboxRelay

    /// Returns true once both are on the broker, false when `deadline` passed first (the broker unreachable: the
    /// change is saved here and goes out once the broker answers, unless this replica dies first). Without a deadline
    /// it waits as long as the broker takes — an erasure's ack or a record's commit could not go out before it anyway;
    /// a replica whose broker stays unreachable while it shuts down waits until it is killed, and what it had not
    /// acknowledged comes again.
    @discardableResult
    func wait(deadline: ContinuousClock.Instant? = nil) async throws -> Bool {
        guard try await changelog.waitUntilPublished(deadline: deadline) else { return false }
        return try await relay.waitUntilSent(deadline: deadline) == 0
    }
}
