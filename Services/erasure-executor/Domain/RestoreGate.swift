import ServiceLifecycle
import Synchronization

/// Whether the executor knows what it needs before it acts, and if not, why not: the state reader has read its
/// changelog and the tenants and participants topics to their end since this start (``stateRead``), and intake has
/// read back the changelog of the partitions its group assigned it (``partitionsRestored``).
///
/// Intake waits for the state; the sweeper and the API's write routes wait for both: no erasure is opened,
/// dispatched or re-sent before the executor knows every participant declared on the topic and the erasures of its
/// partitions, however long that takes. There is no timeout that goes on without them: until it opens,
/// `/health/ready` is red with the reason, and the state reader logs an error at every
/// `ERASURE_STATE_RESTORE_SECONDS`.
final class RestoreGate: Sendable {
    private struct State {
        var stateRead = false
        var partitionsRestored = false
        var problem: String?
        var pendingPartitions = 0
        let startedAt = ContinuousClock.now
    }

    private let state = Mutex(State())

    /// The state reader read the changelog and the state topics to their end.
    func open() { state.withLock { $0.stateRead = true; $0.problem = nil; $0.pendingPartitions = 0 } }
    /// Intake read back its assigned partitions' changelog (at least once since this start).
    func partitionsWereRestored() { state.withLock { $0.partitionsRestored = true } }

    var isStateRead: Bool { state.withLock { $0.stateRead } }
    var isOpen: Bool { state.withLock { $0.stateRead && $0.partitionsRestored } }

    /// What stands in the way, for the readiness check and the logs (nil clears it).
    func report(problem: String?) { state.withLock { $0.problem = problem } }
    func report(pendingPartitions: Int) { state.withLock { $0.pendingPartitions = pendingPartitions } }

    /// Why the executor is not ready yet, or nil once the restore is done.
    var notReadyReason: String? {
        state.withLock { state in
            guard !(state.stateRead && state.partitionsRestored) else { return nil }
            let seconds = Int((ContinuousClock.now - state.startedAt).components.seconds)
            var reason: String
            if state.stateRead {
                reason = "the changelog of the partitions assigned to it is not yet read back"
                reason += " (\(seconds) s since start)"
            } else {
                reason = "its changelog and the tenants and participants topics are not yet read to their end"
                reason += " (\(seconds) s since start"
                if state.pendingPartitions > 0 { reason += ", \(state.pendingPartitions) partitions to go" }
                reason += ")"
            }
            reason += "; no erasure is dispatched until they are"
            if let problem = state.problem { reason += ": \(problem)" }
            return reason
        }
    }

    /// The readiness check: throws the reason until open.
    func check() throws {
        if let reason = notReadyReason { throw NotRestored(description: reason) }
    }

    struct NotRestored: Error, CustomStringConvertible {
        var description: String
    }

    /// Waits until open; false when the task was cancelled or the service is shutting down first.
    func waitUntilOpen() async -> Bool {
        await wait { $0.isOpen }
    }

    /// Waits until the state is read (what intake needs before it takes anything in); false as ``waitUntilOpen()``.
    func waitUntilStateRead() async -> Bool {
        await wait { $0.isStateRead }
    }

    private func wait(until condition: (RestoreGate) -> Bool) async -> Bool {
        while !condition(self) {
            if Task.isCancelled || Task.isShuttingDownGracefully { return false }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return true
    }
}
