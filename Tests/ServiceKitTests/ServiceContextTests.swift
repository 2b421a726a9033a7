import Contracts
import Foundation
import Hummingbird
import HummingbirdTesting
import Messaging
import Prometheus
import ServiceKit
import ServiceRuntime
import Testing
import TestSupport

@Suite("The start sequence every service shares (ServiceContext)")
struct ServiceContextTests {
    /// A context as a service's build function makes it, in a namespace of its own on the dev broker.
    static func context(
        namespace: String, partitions: Int, createTopics: Bool, extra: [String: String] = [:],
        name: String = "context-test", singleActive: Bool = false
    ) throws -> ServiceContext {
        let config = try StandardServiceConfig(
            reader: ConfigReader(environment: [
                "KAFKA_BOOTSTRAP_SERVERS": try DevBroker.bootstrapServers(), "LETHE_TOPIC_NAMESPACE": namespace,
                "KAFKA_TOPIC_PARTITIONS": String(partitions), "KAFKA_CREATE_TOPICS": String(createTopics),
                "LETHE_DATA_DIR": FileManager.default.temporaryDirectory.appendingPathComponent(namespace).path,
            ].merging(extra) { $1 }),
            defaultPort: 0)
        return try ServiceContext(
            name: name, config: config, logger: makeTestLogger(name), metrics: PrometheusCollectorRegistry(),
            singleActive: singleActive)
    }

    @Test("""
        KAFKA_CREATE_TOPICS=false creates nothing and refuses a missing topic or another partition count, by name; \
        by default the declared topics and DLQs are created with each topic's policy and retention
        """)
    func ensureTopics() async throws {
        let namespace = uniqueName("ctx")
        let provisioned = try Self.context(namespace: namespace, partitions: 3, createTopics: false)
        let topics = provisioned.topics
        do {
            try await provisioned.ensureTopics([\.tenants, \.profiles], deadLettered: [\.profiles])
            Issue.record("a missing topic was accepted")
        } catch let error as TopicsNotProvisioned {
            #expect(error.topic == topics.tenants, "\(error)")
        }
        await #expect(throws: (any Error).self) { _ = try await provisioned.admin.partitionCount(of: topics.tenants) }

        let creating = try Self.context(namespace: namespace, partitions: 3, createTopics: true)
        try await creating.ensureTopics([\.tenants, \.profiles], deadLettered: [\.profiles])
        #expect(try await creating.admin.partitionCount(of: topics.tenants) == 3)
        #expect(try await creating.admin.topicConfig(of: topics.tenants)["cleanup.policy"] == "compact")
        let sevenDays = String(TopicDefinition.sevenDaysMs)
        #expect(try await creating.admin.topicConfig(of: topics.profiles)["retention.ms"] == sevenDays)
        // The DLQ of personal data is kept no longer than its source.
        let dlq = DeadLetterQueue.topic(for: topics.profiles)
        #expect(try await creating.admin.topicConfig(of: dlq)["retention.ms"] == sevenDays)

        try await provisioned.ensureTopics([\.tenants, \.profiles], deadLettered: [\.profiles])
        let otherCount = try Self.context(namespace: namespace, partitions: 4, createTopics: false)
        do {
            try await otherCount.ensureTopics([\.tenants], deadLettered: [])
            Issue.record("a topic with another partition count was accepted")
        } catch let error as TopicsNotProvisioned {
            #expect(error.reason.contains("3 partitions") && error.description.contains("KAFKA_CREATE_TOPICS"))
        }
    }

    @Test("the HTTP server has the health checks of every service (sqlite, kafka) then the service's, and its routes")
    func application() async throws {
        let context = try Self.context(namespace: uniqueName("ctx"), partitions: 1, createTopics: true)
        struct DatabaseDown: Error {}
        let servers = context.httpServers(
            database: { throw DatabaseDown() }, readiness: [ReadinessCheck(name: "state") {}]
        ) { router in
            router.get("/v1/thing") { _, _ in "thing" }
        }
        #expect(servers.internal == nil && servers.services.count == 1)
        try await servers.main.test(.router) { client in
            try await client.execute(uri: "/metrics", method: .get) { #expect($0.status == .ok) }
            try await client.execute(uri: "/health/ready", method: .get) { response in
                #expect(response.status == .serviceUnavailable)
                struct Report: Decodable { var checks: [ReadinessReport.Entry] }
                let report = try JSONDecoder().decode(Report.self, from: Data(buffer: response.body))
                #expect(report.checks.map(\.name) == ["sqlite", "kafka", "state"])
                #expect(report.checks.map(\.ok) == [false, true, true], "\(report)")
            }
            try await client.execute(uri: "/v1/thing", method: .get) { response in
                #expect(response.status == .ok && response.headers[.requestId] != nil)
            }
            try await client.execute(uri: "/v1/other", method: .get) { response in
                let body = try JSONDecoder().decode(ErrorBody.self, from: Data(buffer: response.body))
                #expect(body.error == "not_found" && body.requestId == response.headers[.requestId])
            }
        }
    }

    @Test("""
        with HTTP_INTERNAL_PORT, /metrics and the internal routes are served on the internal listener only; health on \
        both; the service's routes on the public one only
        """)
    func internalListener() async throws {
        let context = try Self.context(
            namespace: uniqueName("ctx"), partitions: 1, createTopics: true, extra: ["HTTP_INTERNAL_PORT": "0"])
        let servers = context.httpServers(
            database: {}, internalRoutes: { $0.post("/internal/v1/thing") { _, _ in "internal" } }
        ) { router in
            router.get("/v1/thing") { _, _ in "thing" }
        }
        let internalServer = try #require(servers.internal)
        #expect(servers.services.count == 2)
        try await servers.main.test(.router) { client in
            for (uri, method) in [("/metrics", HTTPRequest.Method.get), ("/internal/v1/thing", .post)] {
                try await client.execute(uri: uri, method: method) { #expect($0.status == .notFound, "\(uri)") }
            }
            try await client.execute(uri: "/v1/thing", method: .get) { #expect($0.status == .ok) }
            try await client.execute(uri: "/health/live", method: .get) { #expect($0.status == .ok) }
        }
        try await internalServer.test(.router) { client in
            try await client.execute(uri: "/metrics", method: .get) { #expect($0.status == .ok) }
            try await client.execute(uri: "/internal/v1/thing", method: .post) { #expect($0.status == .ok) }
            try await client.execute(uri: "/v1/thing", method: .get) { #expect($0.status == .notFound) }
            try await client.execute(uri: "/health/live", method: .get) { #expect($0.status == .ok) }
        }
    }
}
