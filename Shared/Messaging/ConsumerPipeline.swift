import Contracts
import Logging
import Synchronization

/// Which failures of a consumer's work are worth retrying, and how to name a failure in logs and dead letters.
///
/// A transient failure (the broker unreachable, a database busy) is retried with a capped backoff, for as long as it
/// takes: the offsets must not move past records whose effect is not durable. Any other failure fails the same way
/// every time, so retrying it would loop on one record for ever and stop its partition: the record goes to the DLQ
/// with the reason instead. A fatal Kafka error is never retried (the process ends).
package struct RetryPolicy: Sendable {
    package var isTransient: @Sendable (any Error) -> Bool
    /// A reason for logs and the DLQ header. Never the payload: an error's description must not carry values.
    package var describe: @Sendable (any Error) -> String

    package init(
        isTransient: @escaping @Sendable (any Error) -> Bool,
        describe: @escaping @Sendable (any Error) -> String = { "\($0)" }
    ) {
        self.isTransient = isTransient
        self.describe = describe
    }

    /// Kafka errors that are not fatal are transient; nothing else is.
    package static let kafka = RetryPolicy(isTransient: { ($0 as? KafkaError).map { !$0.isFatal } ?? false })

    /// This policy, also retrying what `transient` says is transient (a service's own kinds of trouble).
    package func retrying(_ transient: @escaping @Sendable (any Error) -> Bool) -> RetryPolicy {
        let isTransient = self.isTransient
        return RetryPolicy(isTransient: { isTransient($0) || transient($0) }, describe: describe)
    }
}

/// A decoded record of a batch: the record (for its position and for the DLQ) and what it means to the service.
package struct Delivered<Item: Sendable>: Sendable {
    package var message: KafkaMessage
    package var item: Item
}

/// A record a handler refuses for good, with why: it goes to the DLQ and the partition moves on.
package struct Refusal: Sendable {
    package var message: KafkaMessage
    package var reason: String

    package init(_ message: KafkaMessage, reason: String) {
        self.message = message
        self.reason = reason
    }
}

/// The one way a Lethe service consumes a topic in a consumer group:
/// **decode** (on the task reading the consumer, so it overlaps the previous batch's work; the CloudEvents header
/// check is part of `decodeEvent`) → **dead-letter** what cannot be decoded, with the reason → hand the batch to the
/// service's **handler**, which makes its effect durable (one transaction) → **commit** the batch's offsets, after it
/// (and after `beforeCommit`, for a service whose changelog must hold the batch first).
///
/// A crash anywhere re-delivers at most the uncommitted batches, so handlers are idempotent (newest wins, processed
/// events, recorded results). A handler failure the ``RetryPolicy`` calls transient is retried until it succeeds or
/// the service shuts down; a permanent one re-runs the batch one record at a time, so only the record that fails
/// alone is dead-lettered. Dead letters are counted in `lethe_dead_letters_total{topic}` (``DeadLetterQueue``) and
/// logged with their position and reason, never their content.
///
/// A consumer whose state is rebuilt from the topics, not resumed from committed offsets, runs it with
/// `commits: false`: the executor's state reader (outside any group, from the beginning at every start), and
/// pdr-reporter's intake, which also hands its group's changes to a handler (``run(waitingFor:onGroupChange:_:)``).
package struct ConsumerPipeline<Item: Sendable>: Sendable {
    private let consumer: KafkaConsumer
    private let deadLetters: DeadLetterQueue
    private let retry: RetryPolicy
    private let maxBatch: Int
    private let work: String
    private let commits: Bool
    private let beforeCommit: (@Sendable () async throws -> Void)?
    private let logger: Logger
    private let decode: @Sendable (KafkaMessage) throws -> Item?

    /// - Parameters:
    ///   - work: what the handler does, for logs and `lethe_retries_total{operation}` (e.g. "storing profiles").
    ///   - maxBatch: most records per handler call (whatever arrived while the previous batch was handled, up to it).
    ///   - commits: whether a handled batch's offsets are committed; false for a consumer that starts every partition
    ///     from its beginning because it rebuilds that partition's state from the topics.
    ///   - beforeCommit: what must be done before a handled batch's offsets are committed, when the handler's
    ///     transaction is not all: a service whose batch wrote changelog records through its outbox waits here until
    ///     they are on the broker, else a replica killed after the commit would leave the partition's next owner
    ///     reading back a state without them. It runs while the next batch is handled, so the wait costs latency, not
    ///     throughput; one batch waits at a time, and a group change or the end of the records waits for it first.
    ///     When it throws, the batch is not committed (its records come again: handlers are idempotent).
    ///   - decode: the record's meaning, nil for a record the service ignores (committed with its batch), or a throw
    ///     whose description is the dead letter's reason.
    package init(
        consumer: KafkaConsumer, producer: KafkaProducer, logger: Logger, work: String, retry: RetryPolicy,
        maxBatch: Int, commits: Bool = true, beforeCommit: (@Sendable () async throws -> Void)? = nil,
        decode: @escaping @Sendable (KafkaMessage) throws -> Item?
    ) {
        self.consumer = consumer
        self.deadLetters = DeadLetterQueue(producer: producer)
        self.retry = retry
        self.maxBatch = maxBatch
        self.work = work
        self.commits = commits
        self.beforeCommit = beforeCommit
        self.logger = logger
        self.decode = decode
    }

    /// Runs the consumer and hands it its batches until graceful shutdown. Then it takes no new record, handles and
    /// commits the ones it already took while the consumer is still in its group, and only then closes the consumer
    /// (which leaves the group): the next owner of the partitions starts after them, not with them again.
    ///
    /// `ready` is awaited before the first record is handled (false: stop, e.g. shutdown came first; a throw ends the
    /// service). `handle` gets a batch's decoded records in order and returns the ones it refuses for good.
    ///
    /// `onGroupChange` gets this member's assignments and revocations in their order among the records (see
    /// ``KafkaConsumer/processInBatches(maxBatch:stopOnGracefulShutdown:prepare:onGroupChange:_:)``), transient
    /// failures retried as the handler's. With it the pipeline follows the consumer to its close at graceful shutdown
    /// instead of stopping there, so the revocation that leaving the group brings is handled too.
    package func run(
        waitingFor ready: @Sendable () async throws -> Bool = { true },
        onGroupChange: (@Sendable (GroupChange) async throws -> Void)? = nil,
        _ handle: @escaping @Sendable ([Delivered<Item>]) async throws -> [Refusal]
    ) async throws {
        // Detached, so it does not see graceful shutdown (a task-local it would inherit): it must stay in the group,
        // able to commit, until the last batch taken is done. Cancelled below, or with this task. A pipeline that
        // handles group changes instead lets the consumer see graceful shutdown and reads its events to their end.
        let consumer = self.consumer
        let followsClose = onGroupChange != nil
        let running = followsClose ? Task { try await consumer.run() } : Task.detached { try await consumer.run() }
        let pending = PendingCommit()
        // A batch still waiting for `beforeCommit` is committed before any group change: a revoked partition's
        // offsets while it is still this member's, an assigned one's work after the commits before it.
        let changed: (@Sendable (GroupChange) async throws -> Void)?
        if onGroupChange != nil || beforeCommit != nil {
            changed = { @Sendable change in
                await pending.finish()
                guard let onGroupChange else { return }
                try await retryUntilDone("handling a rebalance", logger: logger, policy: retry) {
                    try await onGroupChange(change)
                }
            }
        } else {
            changed = nil
        }
        let failure: (any Error)?
        do {
            try await withTaskCancellationHandler {
                guard try await ready() else { return }
                let decode = self.decode
                try await consumer.processInBatches(
                    maxBatch: maxBatch, stopOnGracefulShutdown: !followsClose,
                    prepare: { message in Decoded(message: message, item: Result { try decode(message) }) },
                    onGroupChange: changed
                ) { batch in try await process(batch, handle, pending: pending) }
                await pending.finish()
            } onCancel: {
                pending.cancel()
                running.cancel()
            }
            failure = nil
        } catch {
            failure = error
        }
        running.cancel()
        let closed = await running.result
        if let failure { throw failure }
        try closed.get()
    }

    private struct Decoded: Sendable {
        var message: KafkaMessage
        var item: Result<Item?, any Error>
    }

    private func process(
        _ batch: [Decoded], _ handle: @Sendable ([Delivered<Item>]) async throws -> [Refusal], pending: PendingCommit
    ) async throws {
        var delivered: [Delivered<Item>] = []
        delivered.reserveCapacity(batch.count)
        for record in batch {
            switch record.item {
            case .success(let item?): delivered.append(Delivered(message: record.message, item: item))
            case .success(nil): break
            case .failure(let error): try await deadLetter(Refusal(record.message, reason: retry.describe(error)))
            }
        }
        if !delivered.isEmpty {
            for refusal in try await apply(delivered, handle) { try await deadLetter(refusal) }
        }
        guard commits else { return }
        let messages = batch.map(\.message)
        guard let beforeCommit else { return await commit(messages) }
        // The previous batch's commit first (it waited while this batch was handled), so commits stay in order.
        await pending.finish()
        let (logger, work) = (self.logger, self.work)
        pending.start(Task {
            do {
                try await beforeCommit()
            } catch {
                logger.warning("a batch was handled but is not committed; its records come again", metadata: [
                    "work": "\(work)", "error": "\(error)",
                ])
                return
            }
            await commit(messages)
        })
    }

    private func commit(_ messages: [KafkaMessage]) async {
        do {
            try await consumer.commit(messages)
        } catch {
            // Handled already; a redelivery is harmless (handlers are idempotent), so this is not worth stopping for.
            logger.warning("offset commit failed; the batch may be redelivered", metadata: ["error": "\(error)"])
        }
    }

    /// The batch through `handle`, transient failures retried; when it fails for good, one record at a time, so only
    /// the one that fails alone is refused.
    private func apply(
        _ delivered: [Delivered<Item>], _ handle: @Sendable ([Delivered<Item>]) async throws -> [Refusal]
    ) async throws -> [Refusal] {
        let topic = delivered[0].message.topic
        do {
            return try await retryUntilDone(work, logger: logger, policy: retry) {
                try await handle(delivered)
            }
        } catch where !retry.isTransient(error) && !(error is CancellationError) {
            if let kafka = error as? KafkaError, kafka.isFatal { throw kafka }
            guard delivered.count > 1 else { return [Refusal(delivered[0].message, reason: retry.describe(error))] }
            logger.error("\(work) failed for a whole batch; one record at a time", metadata: [
                "topic": "\(topic)", "count": "\(delivered.count)", "error": "\(retry.describe(error))",
            ])
        }
        var refusals: [Refusal] = []
        for record in delivered {
            do {
                refusals += try await retryUntilDone(work, logger: logger, policy: retry) {
                    try await handle([record])
                }
            } catch where !retry.isTransient(error) && !(error is CancellationError) {
                if let kafka = error as? KafkaError, kafka.isFatal { throw kafka }
                refusals.append(Refusal(record.message, reason: retry.describe(error)))
            }
        }
        return refusals
    }

    private func deadLetter(_ refusal: Refusal) async throws {
        let message = refusal.message
        // The reason only: the record may hold personal data.
        logger.warning("unusable record to the DLQ", metadata: [
            "topic": "\(message.topic)", "partition": "\(message.partition)", "offset": "\(message.offset)",
            "error": "\(refusal.reason)",
        ])
        let deadLetters = self.deadLetters
        try await retryUntilDone("dead-lettering", logger: logger) {
            try await deadLetters.route(message, reason: refusal.reason)
        }
    }
}

/// The commit of the last handled batch while it waits for the pipeline's `beforeCommit`: at most one.
private final class PendingCommit: Sendable {
    private let state = Mutex<(task: Task<Void, Never>?, cancelled: Bool)>((nil, false))

    /// A commit started after the pipeline was cancelled is cancelled at once: its wait would outlive the relay it
    /// waits for.
    func start(_ commit: Task<Void, Never>) {
        state.withLock { state in
            state.task = commit
            if state.cancelled { commit.cancel() }
        }
    }

    /// Waits until the pending commit is done (or given up). It stays in place while it is awaited, so that a
    /// cancellation meanwhile reaches it, else the pipeline would never return.
    func finish() async {
        guard let pending = state.withLock({ $0.task }) else { return }
        await pending.value
        state.withLock { state in if state.task == pending { state.task = nil } }
    }

    func cancel() {
        state.withLock { state in
            state.cancelled = true
            state.task?.cancel()
        }
    }
}
