import Contracts
import Foundation
import Logging
import Messaging
import Metrics
import ServiceLifecycle
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

    /// How often an idle publisher looks for changes: the longest a change waits, and so what a lost volume can lose.
    static let pollInterval: Duration = .milliseconds(50)

    private static let published = Counter(label: "lethe_gateway_changelog_published_total")

    /// Publishes listed changes until the service stops, then what is left (the next active replica reads it back).
    func run() async throws {
        while !Task.isShuttingDownGracefully, !Task.isCancelled {
            do {
                if try await publishPending() > 0 { continue }
            } catch {
                logger.warning("publishing the gateway's changelog failed; retrying", metadata: [
                    "error": "\(error)",
                ])
            }
            do {
                try await cancelWhenGracefulShutdown { try await Task.sleep(for: Self.pollInterval) }
            } catch {
                break
            }
        }
        do {
            try await publishPending()
        } catch {
            logger.error("changes of the gateway's state left unpublished at shutdown", metadata: ["error": "\(error)"])
        }
    }

    /// Publishes every listed change, in batches, each forgotten once the broker has it. Returns how many records.
    @discardableResult
    func publishPending() async throws -> Int {
        var total = 0
        while let (records, through) = try await database.pendingChanges(topic: topic) {
            try await producer.send(records)
            try await database.forgetChanges(through: through)
            total += records.count
            Self.published.increment(by: records.count)
        }
        return total
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
