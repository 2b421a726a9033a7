import Foundation
import ServiceKit
import Testing
import TestSupport

@Suite("Configuration read from the environment")
struct ConfigTests {
    @Test("a missing required variable is an error naming it")
    func missingRequiredVariableIsNamed() throws {
        let reader = ConfigReader(environment: ["HTTP_PORT": "8081"])
        #expect(throws: ConfigError(variable: "KAFKA_BOOTSTRAP_SERVERS", reason: "is required but not set")) {
            try StandardServiceConfig(reader: reader, defaultPort: 8081)
        }
    }

    @Test("bad values are refused with the variable's name and never its value")
    func badValuesAreRefused() {
        let reader = ConfigReader(environment: [
            "HTTP_PORT": "eighty", "KAFKA_BOOTSTRAP_SERVERS": "localhost", "LETHE_URL": "ftp://x",
            "LETHE_SECRET": "short", "FLAG": "maybe",
        ])
        #expect(throws: ConfigError(variable: "HTTP_PORT", reason: "must be an integer")) {
            try HTTPServerConfig(reader: reader, defaultPort: 1)
        }
        #expect(throws: ConfigError.self) { try KafkaSettings(reader: reader) }
        #expect(throws: ConfigError.self) { try reader.url("LETHE_URL") }
        #expect(throws: ConfigError.self) { try reader.bool("FLAG", default: false) }
        do {
            _ = try reader.secret("LETHE_SECRET")
            Issue.record("a short secret was accepted")
        } catch {
            #expect(!String(describing: error).contains("short"))
            #expect(String(describing: error).contains("LETHE_SECRET"))
        }
    }

    @Test("defaults apply when variables are unset or empty")
    func defaultsApply() throws {
        let reader = ConfigReader(environment: ["KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092,127.0.0.1:9093",
                                                "HTTP_HOST": ""])
        let http = try HTTPServerConfig(reader: reader, defaultPort: 8083)
        #expect(http == HTTPServerConfig(host: "127.0.0.1", port: 8083))
        #expect(try HTTPServerConfig(reader: reader, defaultPort: 8080, defaultInternalPort: 9080).internalPort == 9080)
        let internalPort = ConfigReader(environment: ["HTTP_PORT": "8080", "HTTP_INTERNAL_PORT": "8080"])
        #expect(throws: ConfigError(variable: "HTTP_INTERNAL_PORT", reason: "must differ from HTTP_PORT")) {
            try HTTPServerConfig(reader: internalPort, defaultPort: 1)
        }
        let kafka = try KafkaSettings(reader: reader)
        #expect(kafka.topicPartitions == 12 && kafka.createTopics && kafka.fetchMaxWait == .milliseconds(500))
        let tuned = try KafkaSettings(reader: ConfigReader(environment: [
            "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092", "KAFKA_CREATE_TOPICS": "false", "KAFKA_FETCH_WAIT_MS": "100",
        ]))
        #expect(!tuned.createTopics && tuned.fetchMaxWait == .milliseconds(100))
        #expect(throws: ConfigError.self) {
            try KafkaSettings(reader: ConfigReader(environment: [
                "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092", "KAFKA_FETCH_WAIT_MS": "0",
            ]))
        }
        #expect(try reader.int("PORTS", default: 3, range: 1...5) == 3)
        #expect(throws: ConfigError.self) {
            try ConfigReader(environment: ["PORTS": "9"]).int("PORTS", default: 3, range: 1...5)
        }
    }

    @Test("a topic namespace prefixes names, and a namespace with other characters is refused")
    func topicNamespace() throws {
        let namespace = try TopicNamespace(reader: ConfigReader(environment: ["LETHE_TOPIC_NAMESPACE": "run-1"]))
        #expect(namespace.name("lethe.profiles.v1") == "run-1.lethe.profiles.v1")
        #expect(try TopicNamespace(reader: ConfigReader(environment: [:])).name("g") == "g")
        let standard = try StandardServiceConfig(
            reader: ConfigReader(environment: [
                "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092", "LETHE_TOPIC_NAMESPACE": "run-1",
                "LETHE_DATA_DIR": FileManager.default.temporaryDirectory.path,
            ]),
            defaultPort: 1)
        #expect(standard.topics.profiles == "run-1.lethe.profiles.v1" && standard.group("profile-store") == "run-1.profile-store")
        #expect(throws: ConfigError.self) {
            try TopicNamespace(reader: ConfigReader(environment: ["LETHE_TOPIC_NAMESPACE": "a b"]))
        }
    }

    @Test("a service started without its broker address exits 1 with one line naming the variable")
    func serviceProcessExitsOnMissingVariable() throws {
        for service in ["profile-store", "erasure-executor", "pdr-reporter", "oauth-gateway"] {
            let binary = RepositoryPaths.executable(service)
            try #require(FileManager.default.isExecutableFile(atPath: binary.path), "missing \(binary.path)")
            var environment = ProcessInfo.processInfo.environment
            environment["KAFKA_BOOTSTRAP_SERVERS"] = nil
            environment["LETHE_DATA_DIR"] = FileManager.default.temporaryDirectory.path
            let output = try runProcess(binary.path, arguments: [], environment: environment)
            #expect(output.status == 1, "\(service)")
            #expect(output.stderr == "configuration error: KAFKA_BOOTSTRAP_SERVERS is required but not set", "\(service)")
        }
    }
}
