import Foundation
import Synchronization

/// A dedicated OS thread that runs a polling loop until stopped. librdkafka's poll calls block for up to their
/// timeout, and they are where callbacks (delivery reports, rebalances) run, so they get a thread of their own
/// rather than a slot in Swift's cooperative pool.
final class PollThread: Sendable {
    private final class State: Sendable {
        let stopRequested = Atomic<Bool>(false)
        let finished = DispatchSemaphore(value: 0)
    }

    private let state = State()
    private let wake: @Sendable () -> Void

    /// Starts `body` on a new thread. `body` is called repeatedly until `stop()`; each call should block for at most
    /// a short timeout so a stop is noticed quickly, and `wake` should make a blocked call return at once
    /// (`rd_kafka_yield`, `rd_kafka_queue_yield`) so stopping does not wait for that timeout.
    init(name: String, wake: @escaping @Sendable () -> Void = {}, body: @escaping @Sendable () -> Void) {
        self.wake = wake
        let thread = Thread { [state] in
            while !state.stopRequested.load(ordering: .acquiring) { body() }
            state.finished.signal()
        }
        thread.name = name
        thread.start()
    }

    /// Asks the loop to end without waiting for it (for `deinit`; whatever `body` captured is released when the
    /// thread ends, so a handle captured there outlives the last poll).
    func requestStop() {
        state.stopRequested.store(true, ordering: .releasing)
    }

    /// Asks the loop to end and waits (off the cooperative pool) until it has.
    func stop() async {
        guard !state.stopRequested.exchange(true, ordering: .acquiringAndReleasing) else { return }
        wake()
        let finished = state.finished
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            DispatchQueue.global().async {
                finished.wait()
                continuation.resume()
            }
        }
    }
}
