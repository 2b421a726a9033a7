import Hummingbird
import HummingbirdTesting
import Messaging
import Prometheus
import ServiceKit
import Testing
import TestSupport

@Suite("Health and metrics routes")
struct OperationalRoutesTests {
    struct Down: Error, CustomStringConvertible {
        var description: String { "database file missing" }
    }

    @Test("live answers 200; ready reports each check and answers 503 when one fails")
    func readinessReportsEachCheck() async throws {
        let router = Router()
        router.addOperationalRoutes(
            readiness: [
                ReadinessCheck(name: "sqlite") { throw Down() },
                ReadinessCheck(name: "hangs") { try await Task.sleep(for: .seconds(60)) },
                ReadinessCheck(name: "ok") {},
            ],
            registry: PrometheusCollectorRegistry(),
            timeout: .milliseconds(200))
        let app = Application(router: router)
        try await app.test(.router) { client in
            try await client.execute(uri: "/health/live", method: .get) { #expect($0.status == .ok) }
            try await client.execute(uri: "/health/ready", method: .get) { response in
                #expect(response.status == .serviceUnavailable)
                let body = String(buffer: response.body)
                #expect(body.contains("database file missing"))
                #expect(body.contains("timed out"))
                #expect(body.contains("\"ready\":false"))
            }
        }
    }

    @Test("ready is 200 against the real broker, and metrics are Prometheus text")
    func readyAgainstBrokerAndMetrics() async throws {
        let kafka = try KafkaFixture("routes")
        let admin = try KafkaAdmin(bootstrapServers: kafka.bootstrapServers, logger: kafka.logger)
        let registry = PrometheusCollectorRegistry()
        registry.makeCounter(descriptor: MetricNameDescriptor(
            namespace: "lethe", subsystem: "test", metricName: "events", unitName: "total", helpText: "test events"
        )).increment(by: Int64(3))
        let router = Router()
        router.addOperationalRoutes(
            readiness: [ReadinessCheck(name: "kafka") { try await admin.ping() }], registry: registry)
        let app = Application(router: router)
        try await app.test(.router) { client in
            try await client.execute(uri: "/health/ready", method: .get) { #expect($0.status == .ok) }
            try await client.execute(uri: "/metrics", method: .get) { response in
                #expect(response.status == .ok)
                #expect(response.headers[.contentType]?.hasPrefix("text/plain") == true)
                #expect(String(buffer: response.body).contains("lethe_test_events_total 3"))
            }
        }
    }
}
