import Hummingbird
import Logging
import Messaging
import Prometheus
import ServiceKit
import ServiceLifecycle

/// Wires profile-store. For now it serves only the operational routes (health, metrics); its issue fills in the rest.
func buildProfileStore(config: ProfileStoreConfig, logger: Logger, registry: PrometheusCollectorRegistry) throws -> ServiceGroup {
    let admin = try KafkaAdmin(bootstrapServers: config.standard.kafka.bootstrapServers, logger: logger)
    let router = Router()
    router.addOperationalRoutes(
        readiness: [ReadinessCheck(name: "kafka") { try await admin.ping() }],
        registry: registry)
    let app = Application(
        router: router, configuration: config.standard.http.applicationConfiguration(serverName: "profile-store"), logger: logger)
    return ServiceGroup(configuration: .init(
        services: [.init(service: app)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
}
