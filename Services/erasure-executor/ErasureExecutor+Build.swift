import Hummingbird
import Logging
import Messaging
import Prometheus
import ServiceKit
import ServiceLifecycle

/// Wires erasure-executor. For now it serves only the operational routes (health, metrics); its issue fills in the rest.
func buildErasureExecutor(config: ErasureExecutorConfig, logger: Logger, registry: PrometheusCollectorRegistry) throws -> ServiceGroup {
    let admin = try KafkaAdmin(bootstrapServers: config.standard.kafka.bootstrapServers, logger: logger)
    let router = Router()
    router.addOperationalRoutes(
        readiness: [ReadinessCheck(name: "kafka") { try await admin.ping() }],
        registry: registry)
    let app = Application(
        router: router, configuration: config.standard.http.applicationConfiguration(serverName: "erasure-executor"), logger: logger)
    return ServiceGroup(configuration: .init(
        services: [.init(service: app)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
}
