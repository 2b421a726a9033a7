import ServiceLifecycle
import Synchronization

/// Whether the executor's changelog and the tenants and participants topics have been read to their end since this
/// start, and if not, why not.
///
/// Intake, the sweeper and the API's write routes wait for it: no erasure is opened, dispatched or re-sent before
/// the executor knows every participant declared on the topic, however long that takes. There is no timeout that
/// goes on without them: until it opens, `/health/ready` is red with the reason, and the state reader logs an error
/// at every `ERASURE_STATE_RESTORE_SECONDS`.
final class RestoreGate: Sendable {
    private struct State {
        var isOpen = false
        var problem: String?
        var pendingPartitions = 0
        let startedAt = ContinuousClock.now
    }

    private let state = Mutex(State())

    func open() { state.withLock { $0.isOpen = true; $0.problem = nil; $0.pendingPartitions = 0 } }
    var isOpen: Bool { state.withLock { $0.isOpen } }

    /// What stands in the way, for the readiness check and the logs (nil clears it).
    func report(problem: String?) { state.withLock { $0.problem = problem } }
    func report(pendingPartitions: Int) { state.withLock { $0.pendingPartitions = pendingPartitions } }

    /// Why the executor is not ready yet, or nil once the restore is done.
    var notReadyReason: String? {
        state.withLock { state in
            guard !state.isOpen else { return nil }
            let seconds = Int((ContinuousClock.now - state.startedAt).components.seconds)
            var reason = "its changelog and the tenants and participants topics are not yet read to their end (\(seconds) s since start"
            if state.pendingPartitions > 0 { reason += ", \(state.pendingPartitions) partitions to go" }
            reason += "); no erasure is dispatched until they are"
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
        while !isOpen {
            if Task.isCancelled || Task.isShuttingDownGracefully { return false }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return true
    }
}
