import Contracts
import Foundation
import GRDB
import Messaging
import Prometheus
import ServiceKit
import Storage
import TestSupport

@testable import erasure_executor

/// An executor built in-process on the dev broker, in a namespace of its own, with re-sends and sweeps fast enough
/// for a test: its configuration, its topics and its parts, not yet running.
struct TestExecutor {
    let config: ErasureExecutorConfig
    let parts: ErasureExecutorParts
    var topics: LetheTopics { config.standard.topics }

    /// Builds it (topics created, ledger file migrated) in `directory`; `extra` overrides settings.
    static func build(
        kafka: KafkaFixture, namespace: String, directory: TemporaryDirectory, extra: [String: String] = [:],
        singleActive: Bool = true
    ) async throws -> TestExecutor {
        // Behind the lease unless a test asks for partition-owned replicas: most tests run one executor, and the
        // lease's active one owns every partition from its first assignment.
        let environment = [
            "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrapServers, "LETHE_DATA_DIR": directory.url.path, "HTTP_PORT": "0",
            "LETHE_TOPIC_NAMESPACE": namespace, "KAFKA_TOPIC_PARTITIONS": "3", "LETHE_AUDIT_KEY": testAuditKey,
            "LETHE_ADMIN_TOKEN": "admin-token-0123456789", "ERASURE_RESEND_SECONDS": "1",
            "ERASURE_SWEEP_MILLISECONDS": "100", "ERASURE_STATE_RESTORE_SECONDS": "10", "LOG_LEVEL": "warning",
            "ERASURE_SINGLE_ACTIVE": singleActive ? "true" : "false",
        ].merging(extra) { $1 }
        let config = try ErasureExecutorConfig(reader: ConfigReader(environment: environment))
        let parts = try await buildErasureExecutor(
            config: config, logger: kafka.logger, registry: PrometheusCollectorRegistry(), handleSignals: false)
        return TestExecutor(config: config, parts: parts)
    }
}

/// Does nothing: unit tests read the outbox instead of running a relay.
struct NoopNotifier: ErasureNotifier {
    func notify() {}
}

let testAuditKey = "audit-key-for-tests-0123456789abcdef"

/// A ledger on a real SQLite file with the real migrations.
func makeLedger(
    in directory: TemporaryDirectory, resendAfter: TimeInterval = 60, maxFailedAttempts: Int = 3,
    daySeconds: TimeInterval = 86_400, partitions: Int = 1
) throws -> ErasureLedger {
    try ErasureLedger(
        path: directory.url.appendingPathComponent("erasure-executor.sqlite").path,
        settings: LedgerSettings(
            resendAfter: resendAfter, maxFailedAttempts: maxFailedAttempts, daySeconds: daySeconds,
            commandsTopic: "commands", completedTopic: "completed", partitions: partitions),
        keys: try AuditKeys(auditKey: testAuditKey))
}

func tenant(_ id: String, _ policy: ErasurePolicy, days: Int = 30, apps: [String] = ["app-1"]) -> TenantConfigured {
    TenantConfigured(
        tenantId: id, erasurePolicy: policy, apps: apps.map { .init(appId: $0, shared: false) }, deadlineDays: days)
}

func declared(_ name: String) -> ParticipantDeclared {
    ParticipantDeclared(participant: name, holds: ["email"], declaredAt: Date())
}

func closed(_ tenantId: String, _ accountId: String, app: String = "app-1", cause: ErasureCause = .atlassianClosed,
            policy: ErasurePolicy? = nil) -> IntakeRequest {
    IntakeRequest(tenantId: tenantId, appId: app, accountId: accountId, cause: cause, requestedPolicy: policy)
}

func ack(_ erasureId: String, _ participant: String, _ outcome: ErasureOutcome, at: Date = Date())
    -> ErasureAcknowledged
{
    ErasureAcknowledged(erasureId: erasureId, participant: participant, outcome: outcome, at: at)
}

extension ErasureLedger {
    /// Every outbox record, decoded by topic.
    func outbox() async throws -> [OutgoingMessage] {
        try await database.read { db in try Outbox.all(in: db).map(\.entry.message) }
    }

    func commands() async throws -> [EraseSubject] {
        try await outbox().filter { $0.topic == settings.commandsTopic }.map {
            try EventCodec.decode(EraseSubject.self, from: $0.value!)
        }
    }

    func completions() async throws -> [ErasureCompleted] {
        try await outbox().filter { $0.topic == settings.completedTopic }.map {
            try EventCodec.decode(ErasureCompleted.self, from: $0.value!)
        }
    }

    /// Every text or blob value in every table of the file, for searching.
    func allStoredText() async throws -> String {
        try await database.read { db in
            var text = ""
            let tables = try String.fetchAll(db, sql: "SELECT name FROM sqlite_master WHERE type = 'table'")
            for table in tables {
                for row in try Row.fetchAll(db, sql: "SELECT * FROM \"\(table)\"") {
                    for (_, value) in row {
                        switch value.storage {
                        case .string(let string): text += string + "\n"
                        case .blob(let data): text += String(decoding: data, as: UTF8.self) + "\n"
                        default: break
                        }
                    }
                }
            }
            return text
        }
    }
}
