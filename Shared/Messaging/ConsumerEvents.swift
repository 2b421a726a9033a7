import Foundation

/// The events of a consumer. Each `next()` also tells the poll thread how far the application has got: that bounds
/// the buffer, and it is how a revocation knows the application is done with the revoked partitions.
package struct ConsumerEvents: AsyncSequence, Sendable {
    package typealias Element = ConsumerEvent
    package typealias Failure = any Error

    let stream: AsyncThrowingStream<[ConsumerEvent], any Error>
    let flow: FlowControl

    package func makeAsyncIterator() -> Iterator {
        Iterator(base: stream.makeAsyncIterator(), flow: flow)
    }

    package struct Iterator: AsyncIteratorProtocol {
        var base: AsyncThrowingStream<[ConsumerEvent], any Error>.Iterator
        let flow: FlowControl
        var pending: [ConsumerEvent] = []
        var pendingIndex = 0
        var handedOut = 0

        package mutating func next() async throws -> ConsumerEvent? {
            // Asking for the next event means the previous one has been handled.
            flow.handled(through: handedOut)
            while pendingIndex == pending.count {
                guard let chunk = try await base.next() else { return nil }
                pending = chunk
                pendingIndex = 0
            }
            let event = pending[pendingIndex]
            pendingIndex += 1
            handedOut += 1
            return event
        }
    }
}

/// The records of a consumer's events; assignment and revocation events are skipped (and so acknowledged at once).
package struct ConsumerMessages: AsyncSequence, Sendable {
    package typealias Element = KafkaMessage
    package typealias Failure = any Error

    let events: ConsumerEvents

    package func makeAsyncIterator() -> Iterator { Iterator(base: events.makeAsyncIterator()) }

    package struct Iterator: AsyncIteratorProtocol {
        var base: ConsumerEvents.Iterator

        package mutating func next() async throws -> KafkaMessage? {
            while let event = try await base.next() {
                if case .message(let message) = event { return message }
            }
            return nil
        }
    }
}

/// Shared between the poll thread and the iterating task: counts events yielded and handled, and lets the poll thread
/// wait for room in the buffer or for a revocation to be handled.
final class FlowControl: @unchecked Sendable {
    private let condition = NSCondition()
    private var yielded = 0
    private var handled = 0
    private var pollerWaiting = false
    private var stopped = false
    private var closing = false
    private var stopWaiters: [CheckedContinuation<Void, Never>] = []
    let maxBuffered: Int

    init(maxBuffered: Int) { self.maxBuffered = maxBuffered }

    /// Records that `count` events were yielded; returns the sequence number of the last one.
    func didYield(_ count: Int) -> Int {
        condition.lock()
        defer { condition.unlock() }
        yielded += count
        return yielded
    }

    func handled(through count: Int) {
        condition.lock()
        defer { condition.unlock() }
        guard count > handled else { return }
        handled = count
        if pollerWaiting { condition.broadcast() }
    }

    /// Blocks the poll thread while the buffer is full (briefly, so a stop is noticed). Returns false once stopped.
    func waitForRoom() -> Bool {
        condition.lock()
        defer { condition.unlock() }
        while !stopped && yielded - handled >= maxBuffered {
            pollerWaiting = true
            _ = condition.wait(until: Date().addingTimeInterval(0.1))
        }
        pollerWaiting = false
        return !stopped
    }

    /// Blocks the poll thread until the application asked for the event after `sequence`, the consumer is closing,
    /// or `timeout` passes. Returns whether the application got there.
    func waitUntilHandled(_ sequence: Int, timeout: Duration) -> Bool {
        let deadline = Date().addingTimeInterval(Double(timeout.milliseconds) / 1000)
        condition.lock()
        defer { condition.unlock() }
        while handled < sequence && !closing && !stopped && Date() < deadline {
            pollerWaiting = true
            _ = condition.wait(until: min(deadline, Date().addingTimeInterval(0.1)))
        }
        pollerWaiting = false
        return handled >= sequence
    }

    /// During close the application is no longer iterating; revocations must not wait for it.
    func markClosing() {
        condition.lock()
        closing = true
        condition.broadcast()
        condition.unlock()
    }

    func stop() {
        condition.lock()
        stopped = true
        let waiters = stopWaiters
        stopWaiters = []
        condition.broadcast()
        condition.unlock()
        waiters.forEach { $0.resume() }
    }

    var isStopped: Bool {
        condition.lock()
        defer { condition.unlock() }
        return stopped
    }

    func waitUntilStopped() async {
        await withCheckedContinuation { continuation in
            condition.lock()
            if stopped {
                condition.unlock()
                continuation.resume()
            } else {
                stopWaiters.append(continuation)
                condition.unlock()
            }
        }
    }
}
