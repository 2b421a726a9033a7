import Foundation
import ServiceLifecycle

/// A bounded hand-over between the task reading a consumer and the loop that handles its records in batches (the
/// engine of ``KafkaConsumer/processInBatches(maxBatch:stopOnGracefulShutdown:prepare:_:)``): the reader waits when it is full
/// (so memory stays bounded and the consumer's own buffer applies back-pressure), the loop takes everything that
/// is there, up to a batch, or waits when it is empty. One pusher and one taker; the taker reports what it has
/// processed, so the pusher can hold a partition revocation until the records before it are committed.
package final class BatchQueue<Element: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private let capacity: Int
    private var items: [Element] = []
    private var finished = false
    private var takerWaiting: CheckedContinuation<Void, Never>?
    private var pusherWaiting: CheckedContinuation<Void, Never>?
    private var processed = 0
    private var processedWaiting: (target: Int, continuation: CheckedContinuation<Void, Never>)?

    package init(capacity: Int) { self.capacity = capacity }

    package func push(_ message: Element) async {
        while true {
            var taker: CheckedContinuation<Void, Never>?
            let added = lock.withLock {
                guard items.count < capacity || finished else { return false }
                items.append(message)
                taker = takerWaiting
                takerWaiting = nil
                return true
            }
            if added {
                taker?.resume()
                return
            }
            await withCheckedContinuation { continuation in
                let ready = lock.withLock {
                    if items.count < capacity || finished { return true }
                    pusherWaiting = continuation
                    return false
                }
                if ready { continuation.resume() }
            }
        }
    }

    /// Up to `max` records, waiting for at least one; nil once finished and empty.
    package func takeBatch(max: Int) async -> [Element]? {
        while true {
            var pusher: CheckedContinuation<Void, Never>?
            let batch: [Element]? = lock.withLock {
                if !items.isEmpty {
                    let count = Swift.min(max, items.count)
                    let batch = Array(items.prefix(count))
                    items.removeFirst(count)
                    pusher = pusherWaiting
                    pusherWaiting = nil
                    return batch
                }
                return finished ? [] : nil
            }
            if let batch {
                pusher?.resume()
                return batch.isEmpty ? nil : batch
            }
            await withCheckedContinuation { continuation in
                let ready = lock.withLock {
                    if !items.isEmpty || finished { return true }
                    takerWaiting = continuation
                    return false
                }
                if ready { continuation.resume() }
            }
        }
    }

    /// Records that the taker stored and committed `count` more records.
    package func markProcessed(_ count: Int) {
        let waiter: CheckedContinuation<Void, Never>? = lock.withLock {
            processed += count
            guard let waiting = processedWaiting, processed >= waiting.target else { return nil }
            processedWaiting = nil
            return waiting.continuation
        }
        waiter?.resume()
    }

    /// Waits until `target` records (counted since start) are processed, or the queue is finished.
    package func waitUntilProcessed(_ target: Int) async {
        await withCheckedContinuation { continuation in
            let ready = lock.withLock {
                if processed >= target || finished { return true }
                processedWaiting = (target, continuation)
                return false
            }
            if ready { continuation.resume() }
        }
    }

    /// No more records will come (or the taker stopped); wakes every waiter.
    package func finish() {
        let (taker, pusher, processedWaiter) = lock.withLock {
            finished = true
            defer {
                takerWaiting = nil
                pusherWaiting = nil
                processedWaiting = nil
            }
            return (takerWaiting, pusherWaiting, processedWaiting?.continuation)
        }
        taker?.resume()
        pusher?.resume()
        processedWaiter?.resume()
    }

    /// The taker's side: hands the queued elements to `handle` in order, in batches of at most `max`, marking each
    /// processed once `handle` returns, until the queue is finished and empty. When `handle` throws, the queue is
    /// finished (so a pusher waiting for room or for processing wakes up) and the error is rethrown.
    package func drain(max: Int, _ handle: ([Element]) async throws -> Void) async throws {
        do {
            while let batch = await takeBatch(max: max) {
                try await handle(batch)
                markProcessed(batch.count)
            }
        } catch {
            finish()
            throw error
        }
    }
}

/// A change of a group member's partitions, as a consumer that keeps per-partition state handles it.
package enum GroupChange: Sendable, Equatable {
    case assigned([TopicPartition])
    case revoked([TopicPartition])
}

extension KafkaConsumer {
    /// Hands this consumer's records to `handle` in batches: whatever arrived while the previous batch was handled, up
    /// to `maxBatch`. One task reads `events` and runs `prepare` on each record (decoding there overlaps the previous
    /// batch's work); the calling task runs `handle`, which must make each batch durable and commit it. A partition
    /// revocation is held until every record read before it was handled, so the next owner starts after them.
    ///
    /// With `onGroupChange`, assignments and revocations are handed to it on the calling task, in their order among
    /// the records (a batch ends at each), and the next event is read only once it returned: an assignment's work is
    /// done before any record behind it, a revocation's before the group hears it acknowledged.
    ///
    /// The consumer itself must be running (its `run()` in the same task group or service group). Returns when the
    /// records end — at graceful shutdown when `stopOnGracefulShutdown`, else once the consumer has closed — and
    /// rethrows what `handle` or `onGroupChange` throws.
    package func processInBatches<Item: Sendable>(
        maxBatch: Int, stopOnGracefulShutdown: Bool = true,
        prepare: @escaping @Sendable (KafkaMessage) -> Item,
        onGroupChange: ((GroupChange) async throws -> Void)? = nil,
        _ handle: ([Item]) async throws -> Void
    ) async throws {
        let queue = BatchQueue<Queued<Item>>(capacity: maxBatch * 2)
        let events = self.events
        let handsChanges = onGroupChange != nil
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                defer { queue.finish() }
                /// Reads until the records end (or this task is cancelled), feeding the queue.
                @Sendable func read() async throws {
                    var pushed = 0
                    for try await event in events {
                        switch event {
                        case .message(let message):
                            await queue.push(.record(prepare(message)))
                            pushed += 1
                        case .partitionsRevoked(let partitions):
                            if handsChanges {
                                await queue.push(.change(.revoked(partitions)))
                                pushed += 1
                            }
                            await queue.waitUntilProcessed(pushed)
                        case .partitionsAssigned(let partitions):
                            guard handsChanges else { break }
                            await queue.push(.change(.assigned(partitions)))
                            pushed += 1
                            await queue.waitUntilProcessed(pushed)
                        }
                    }
                }
                if stopOnGracefulShutdown {
                    // One shutdown handler for the whole read: `cancelOnGracefulShutdown()` sets one up per record (a
                    // task group each), which cost about 40 µs of CPU per record in make bench-ingest.
                    try await cancelWhenGracefulShutdown { try await read() }
                } else {
                    try await read()
                }
            }
            do {
                try await queue.drain(max: maxBatch) { batch in
                    try await Queued.handOut(batch, records: handle, changes: onGroupChange)
                }
            } catch {
                group.cancelAll()
                throw error
            }
            try await group.waitForAll()
        }
    }
}

/// What the reading task queues for the handling one: a prepared record, or a change of the group's assignment.
private enum Queued<Item: Sendable>: Sendable {
    case record(Item)
    case change(GroupChange)

    /// Hands a taken batch out in order: each run of records to `records` as one batch, each change on its own.
    static func handOut(
        _ batch: [Queued], records handle: ([Item]) async throws -> Void,
        changes onGroupChange: ((GroupChange) async throws -> Void)?
    ) async throws {
        var records: [Item] = []
        records.reserveCapacity(batch.count)
        for element in batch {
            switch element {
            case .record(let item):
                records.append(item)
            case .change(let change):
                if !records.isEmpty { try await handle(records) }
                records.removeAll(keepingCapacity: true)
                try await onGroupChange?(change)
            }
        }
        if !records.isEmpty { try await handle(records) }
    }
}
