import Logging
import ServiceLifecycle

/// A service group running in the background until ``stop()``: a service built in-process (one of several replicas
/// in one test).
package final class RunningGroup: Sendable {
    private let group: ServiceGroup
    private let task: Task<Void, any Error>

    package init(_ group: ServiceGroup) {
        self.group = group
        task = Task { try await group.run() }
    }

    package convenience init(_ services: [any Service], logger: Logger) {
        self.init(ServiceGroup(configuration: .init(services: services.map { .init(service: $0) }, logger: logger)))
    }

    /// Shuts the group down gracefully and waits until it has.
    package func stop() async {
        await group.triggerGracefulShutdown()
        _ = try? await task.value
    }
}
