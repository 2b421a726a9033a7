import CRdKafka
import Foundation
import Logging
import ServiceLifecycle
import Synchronization

/// Consumer settings. Offsets are never committed automatically: the application commits after processing
/// (at-least-once), so a crash redelivers at most the uncommitted tail.
package struct KafkaConsumerConfig: Sendable {
    package enum Subscription: Sendable, Equatable {
        /// Join consumer group `groupID` and share the topics' partitions with its other members.
        case group(id: String, topics: [String])
        /// Read exactly these partitions from the given positions, outside any group (restore readers, tools).
        case partitions([(TopicPartition, from: StartOffset)])

        package static func == (lhs: Subscription, rhs: Subscription) -> Bool {
            switch (lhs, rhs) {
            case let (.group(a, b), .group(c, d)): a == c && b == d
            case let (.partitions(a), .partitions(b)): a.map(\.0) == b.map(\.0) && a.map(\.1) == b.map(\.1)
            default: false
            }
        }
    }

    package enum OffsetReset: String, Sendable { case earliest, latest }

    /// How a group shares partitions among its members.
    package enum AssignmentStrategy: String, Sendable {
        /// Eager range: partition p of topics subscribed together goes to the same member, which is how co-partitioned
        /// topics are consumed together; every rebalance revokes everything first.
        case range
        /// Incremental: a rebalance moves only the partitions that must move, and a member keeps what it holds while
        /// others join (``ReplicaLease`` relies on it: the active replica keeps the lease when a standby starts).
        case cooperativeSticky = "cooperative-sticky"
    }

    package var bootstrapServers: String
    package var subscription: Subscription
    package var clientId: String
    /// Where a group starts on a partition with no committed offset.
    package var offsetReset: OffsetReset
    /// How long the group waits for a silent member before rebalancing its partitions away.
    package var sessionTimeout: Duration
    /// How many records may wait, fetched but not yet taken by the application. Bounds memory; polling pauses when
    /// the buffer is full.
    package var maxBufferedMessages: Int
    /// How long a revocation waits for the application to finish with the revoked partitions (see
    /// `ConsumerEvent.partitionsRevoked`). After it, the partitions are released anyway.
    package var revocationTimeout: Duration
    package var assignmentStrategy: AssignmentStrategy
    /// The longest a fetch waits at the broker for records (`fetch.wait.max.ms`; librdkafka's default, 500 ms).
    /// Apache Kafka answers a waiting fetch as soon as a record arrives, so there it only bounds idle polling. The
    /// Tansu dev broker does not: a record on a quiet topic reached a consumer after ~200 ms at 500 ms, ~2 ms at 50 ms
    /// (measured with librdkafka), and every hop of an erasure (status → command → ack → completion) pays it — but
    /// shorter waits cost that broker CPU (bench/RESULTS.md, erasure). Services take it from `KAFKA_FETCH_WAIT_MS`.
    package var fetchMaxWait: Duration
    package var extraSettings: [String: String]

    package init(
        bootstrapServers: String,
        subscription: Subscription,
        clientId: String = "lethe",
        offsetReset: OffsetReset = .earliest,
        sessionTimeout: Duration = .seconds(10),
        maxBufferedMessages: Int = 10_000,
        revocationTimeout: Duration = .seconds(30),
        assignmentStrategy: AssignmentStrategy = .range,
        fetchMaxWait: Duration = .milliseconds(500),
        extraSettings: [String: String] = [:]
    ) {
        self.bootstrapServers = bootstrapServers
        self.subscription = subscription
        self.clientId = clientId
        self.offsetReset = offsetReset
        self.sessionTimeout = sessionTimeout
        self.maxBufferedMessages = maxBufferedMessages
        self.revocationTimeout = revocationTimeout
        self.assignmentStrategy = assignmentStrategy
        self.fetchMaxWait = fetchMaxWait
        self.extraSettings = extraSettings
    }

    var settings: [String: String] {
        var settings = extraSettings
        settings["bootstrap.servers"] = bootstrapServers
        settings["client.id"] = clientId
        settings["enable.auto.commit"] = "false"
        settings["enable.auto.offset.store"] = "false"
        settings["auto.offset.reset"] = offsetReset.rawValue
        settings["session.timeout.ms"] = String(sessionTimeout.milliseconds)
        settings["heartbeat.interval.ms"] = String(max(sessionTimeout.milliseconds / 4, 100))
        settings["enable.partition.eof"] = "false"
        settings["fetch.wait.max.ms"] = String(fetchMaxWait.milliseconds)
        if case .group(let id, _) = subscription {
            settings["group.id"] = id
            settings["partition.assignment.strategy"] = assignmentStrategy.rawValue
        } else {
            // librdkafka needs a group id for some internals even when no group is joined; nothing is committed.
            settings["group.id"] = "lethe-unjoined-\(UUID().uuidString)"
        }
        return settings
    }
}

/// What a consumer yields, in the order it happened: a stateful consumer sees `partitionsAssigned` before any record of
/// those partitions, and `partitionsRevoked` after the last one it will get before losing them.
package enum ConsumerEvent: Sendable {
    case message(KafkaMessage)
    /// These partitions are now this member's. Restore their state before processing their records.
    case partitionsAssigned([TopicPartition])
    /// These partitions are being taken away. The revocation waits until the application asks for the next event
    /// (or `revocationTimeout`), so it can commit and drop their state while it still owns them.
    case partitionsRevoked([TopicPartition])
}

/// A consumer: a group member or a reader of fixed partitions. Its `events` are an `AsyncSequence`; the
/// application processes each record and then commits it. Polling runs on a thread of its own.
///
/// Run it as a `Service` (the poll loop starts in `run()`); on graceful shutdown it leaves the group cleanly and ends
/// the event sequence. Only one task may iterate `events`.
package final class KafkaConsumer: Service, @unchecked Sendable {
    private let handle: RdKafkaHandle
    private let context: ConsumerContext
    private let config: KafkaConsumerConfig
    private let logger: Logger
    private let started = Atomic<Bool>(false)

    /// Every event, in order. Iterate from one task only.
    package let events: ConsumerEvents

    package init(config: KafkaConsumerConfig, logger: Logger) throws(KafkaError) {
        if case .group(_, let topics) = config.subscription, topics.isEmpty {
            throw KafkaError.invalidArgument("a consumer group needs at least one topic")
        }
        guard config.maxBufferedMessages > 0 else { throw KafkaError.invalidArgument("maxBufferedMessages must be > 0") }
        let (stream, continuation) = AsyncThrowingStream<[ConsumerEvent], any Error>.makeStream()
        let flow = FlowControl(maxBuffered: config.maxBufferedMessages)
        let context = ConsumerContext(logger: logger, continuation: continuation, flow: flow,
                                      revocationTimeout: config.revocationTimeout)
        self.handle = try RdKafkaHandle(type: RD_KAFKA_CONSUMER, settings: config.settings, context: context) { conf in
            if case .group = config.subscription { rd_kafka_conf_set_rebalance_cb(conf, rebalanceCallback) }
        }
        // Route every event (including rebalances) through the consumer queue, which the poll thread serves.
        rd_kafka_poll_set_consumer(handle.pointer)
        self.context = context
        self.config = config
        self.logger = logger
        self.events = ConsumerEvents(stream: stream, flow: flow)
    }

    /// Only the records, for consumers without per-partition state (revocations pass through unobserved).
    package var messages: ConsumerMessages { ConsumerMessages(events: events) }

    // MARK: Lifecycle

    /// Subscribes (or assigns), polls until graceful shutdown or cancellation, then closes: leaves the group, ends
    /// `events`, destroys nothing the application might still call (the handle lives as long as this object).
    package func run() async throws {
        guard !started.exchange(true, ordering: .acquiringAndReleasing) else {
            throw KafkaError.invalidArgument("a KafkaConsumer runs once")
        }
        try start()
        let handle = self.handle
        let context = self.context
        let queue = ConsumerQueue(rd_kafka_queue_get_consumer(handle.pointer)!)
        let pollLoop = ConsumerPollLoop(handle: handle, queue: queue.pointer, context: context)
        let thread = PollThread(name: "kafka-consumer-poll", wake: { rd_kafka_queue_yield(queue.pointer) }) {
            pollLoop.pollOnce()
        }
        await withTaskCancellationOrGracefulShutdownHandler {
            await context.flow.waitUntilStopped()
        } onCancelOrGracefulShutdown: {
            context.flow.stop()
        }
        await thread.stop()
        queue.destroy()
        try? await close()
        context.continuation.finish()
    }

    private func start() throws(KafkaError) {
        switch config.subscription {
        case .group(_, let topics):
            let list = RdKafkaPartitionList(topics.map { (TopicPartition(topic: $0, partition: -1), RdKafkaPartitionList.noOffset) })
            let err = rd_kafka_subscribe(handle.pointer, list.pointer)
            if err != RD_KAFKA_RESP_ERR_NO_ERROR { throw KafkaError(err, message: "subscribe failed") }
        case .partitions(let partitions):
            let list = RdKafkaPartitionList(partitions.map { ($0.0, offset: $0.from.rawOffset) })
            let err = rd_kafka_assign(handle.pointer, list.pointer)
            if err != RD_KAFKA_RESP_ERR_NO_ERROR { throw KafkaError(err, message: "assign failed") }
            context.yield([.partitionsAssigned(partitions.map(\.0))])
        }
    }

    private func close() async throws(KafkaError) {
        let handle = self.handle
        context.flow.markClosing()
        try await BlockingCalls.run { () throws(KafkaError) in
            let err = rd_kafka_consumer_close(handle.pointer)
            if err != RD_KAFKA_RESP_ERR_NO_ERROR { throw KafkaError(err, message: "close failed") }
        }
    }

    // MARK: Offsets

    /// Commits `message` as processed: the group resumes after it. Waits for the broker's answer.
    package func commit(_ message: KafkaMessage) async throws(KafkaError) {
        try await commit([message])
    }

    /// Commits the highest offset per partition among `messages`. Call after the work they caused is durable.
    package func commit(_ messages: some Sequence<KafkaMessage>) async throws(KafkaError) {
        var highest: [TopicPartition: Int64] = [:]
        for message in messages {
            highest[message.topicPartition] = max(highest[message.topicPartition] ?? -1, message.offset)
        }
        guard !highest.isEmpty else { return }
        // The committed offset is the next one to read.
        let entries = highest.map { ($0.key, offset: $0.value + 1) }
        let handle = self.handle
        try await BlockingCalls.run { () throws(KafkaError) in
            let list = RdKafkaPartitionList(entries)
            let err = rd_kafka_commit(handle.pointer, list.pointer, 0)
            if err != RD_KAFKA_RESP_ERR_NO_ERROR { throw KafkaError(err, message: "commit failed") }
            if let error = list.firstError() { throw error }
        }
    }

    // MARK: Positioning

    /// Rewinds assigned partitions to their first record, e.g. to rebuild state from a compacted topic. Records already
    /// buffered are still delivered; the rewound ones follow.
    package func seekToBeginning(_ partitions: [TopicPartition], timeout: Duration = .seconds(10)) async throws(KafkaError) {
        try await seek(partitions.map { ($0, to: .beginning) }, timeout: timeout)
    }

    /// Moves assigned partitions to the given offsets. A seek that times out (the fetcher was busy: it happened on a
    /// loaded CI machine) is asked again, up to three times in all: seeking to the same offsets again is harmless.
    package func seek(_ positions: [(TopicPartition, to: StartOffset)], timeout: Duration = .seconds(10)) async throws(KafkaError) {
        guard !positions.isEmpty else { return }
        let handle = self.handle
        let entries = positions.map { ($0.0, offset: $0.to.rawOffset) }
        try await BlockingCalls.run { () throws(KafkaError) in
            for attempt in 1...3 {
                let list = RdKafkaPartitionList(entries)
                do throws(KafkaError) {
                    if let error = rd_kafka_seek_partitions(
                        handle.pointer, list.pointer, Int32(clamping: timeout.milliseconds))
                    {
                        throw KafkaError(consuming: error)
                    }
                    if let error = list.firstError() { throw error }
                    return
                } catch where error.code == RD_KAFKA_RESP_ERR__TIMED_OUT.rawValue && attempt < 3 {
                    continue
                }
            }
        }
    }

    /// Stops fetching these partitions (their position is kept) until `resume`.
    package func pause(_ partitions: [TopicPartition]) throws(KafkaError) {
        let list = RdKafkaPartitionList(partitions.map { ($0, offset: RdKafkaPartitionList.noOffset) })
        let err = rd_kafka_pause_partitions(handle.pointer, list.pointer)
        if err != RD_KAFKA_RESP_ERR_NO_ERROR { throw KafkaError(err, message: "pause failed") }
        if let error = list.firstError() { throw error }
    }

    /// Fetches paused partitions again.
    package func resume(_ partitions: [TopicPartition]) throws(KafkaError) {
        let list = RdKafkaPartitionList(partitions.map { ($0, offset: RdKafkaPartitionList.noOffset) })
        let err = rd_kafka_resume_partitions(handle.pointer, list.pointer)
        if err != RD_KAFKA_RESP_ERR_NO_ERROR { throw KafkaError(err, message: "resume failed") }
        if let error = list.firstError() { throw error }
    }

    /// The low and high watermarks (first offset, next offset to be written) of a partition, from the broker. A
    /// restore reader is caught up once its position reaches `high`.
    package func watermarks(of partition: TopicPartition, timeout: Duration = .seconds(10))
        async throws(KafkaError) -> (low: Int64, high: Int64)
    {
        let handle = self.handle
        return try await BlockingCalls.run { () throws(KafkaError) in
            var low: Int64 = 0
            var high: Int64 = 0
            let err = rd_kafka_query_watermark_offsets(
                handle.pointer, partition.topic, partition.partition, &low, &high, Int32(clamping: timeout.milliseconds))
            if err != RD_KAFKA_RESP_ERR_NO_ERROR { throw KafkaError(err, message: "watermarks of \(partition)") }
            return (low, high)
        }
    }

    /// The partitions currently assigned to this consumer.
    package func assignment() throws(KafkaError) -> [TopicPartition] {
        var list: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>?
        let err = rd_kafka_assignment(handle.pointer, &list)
        if err != RD_KAFKA_RESP_ERR_NO_ERROR { throw KafkaError(err, message: "assignment failed") }
        defer { if let list { rd_kafka_topic_partition_list_destroy(list) } }
        return topicPartitions(of: list)
    }
}
