import Contracts
import Foundation
import GRDB
import Messaging
import Storage
import Testing
import TestSupport

@testable import erasure_executor

@Suite("erasure-executor as a process: kill -9 during intake loses nothing and duplicates nothing")
struct ErasureExecutorCrashTests {
    @Test("kill -9 while 3000 closed statuses are taken in, restart: one erasure each, every one dispatched on the topic")
    func killNineDuringIntake() async throws {
        let kafka = try KafkaFixture("erasure-executor-crash")
        let binary = RepositoryPaths.executable("erasure-executor")
        try #require(FileManager.default.isExecutableFile(atPath: binary.path), "missing \(binary.path)")
        let directory = try TemporaryDirectory()
        let namespace = uniqueName("ee-kill")
        let topics = LetheTopics(namespace: namespace)
        let accounts = 3000
        try await declareAndCloseAccounts(kafka: kafka, topics: topics, accounts: accounts)

        let log = directory.url.appendingPathComponent("service.log")
        // Reserved for both launches: a random port in the ephemeral range can be in use.
        let port = try SandboxProcess.ReservedPort()
        defer { port.release() }
        func launch() throws -> ChildProcess {
            try ChildProcess.spawn(
                binary.path,
                environment: [
                    "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrapServers, "LETHE_DATA_DIR": directory.url.path,
                    "HTTP_PORT": String(port.port), "LETHE_TOPIC_NAMESPACE": namespace,
                    "KAFKA_TOPIC_PARTITIONS": "3", "LETHE_AUDIT_KEY": testAuditKey,
                    "LETHE_ADMIN_TOKEN": "admin-token-0123456789", "ERASURE_RESEND_SECONDS": "3600",
                    "LOG_LEVEL": "warning",
                ],
                stdoutPath: log.path)
        }
        let ledger = ReadOnlyLedger(path: directory.url.appendingPathComponent("erasure-executor.sqlite").path)

        let first = try launch()
        let started = await eventually(timeout: .seconds(90), every: .milliseconds(5)) {
            ledger.count("SELECT count(*) FROM erasures") >= 200
        }
        first.killAndReap()
        #expect(started, "the service never took anything in: \((try? String(contentsOf: log, encoding: .utf8)) ?? "")")
        let atKill = ledger.count("SELECT count(*) FROM erasures")
        #expect(atKill < accounts, "the first process finished before it was killed; the test proves nothing")

        let second = try launch()
        defer { second.killAndReap() }
        let complete = await eventually(timeout: .seconds(120), every: .milliseconds(200)) {
            ledger.count("SELECT count(*) FROM erasures WHERE status = 'dispatched'") == accounts
                && ledger.count("SELECT count(*) FROM lethe_outbox WHERE sent_at IS NULL") == 0
        }
        #expect(complete, "after restart: \(ledger.count("SELECT count(*) FROM erasures")) erasures of \(accounts)")
        #expect(ledger.count("SELECT count(*) FROM erasures") == accounts, "a redelivered status made a second erasure")
        #expect(ledger.count("SELECT count(DISTINCT account_id) FROM erasures") == accounts)
        try await expectEveryErasureAnnounced(
            kafka: kafka, topics: topics, ids: ledger.erasureIds(), accounts: accounts)
    }

    /// One participant declared, then `accounts` closed statuses, all on the topics before the executor starts.
    private func declareAndCloseAccounts(kafka: KafkaFixture, topics: LetheTopics, accounts: Int) async throws {
        try await KafkaAdmin(bootstrapServers: kafka.bootstrapServers, logger: kafka.logger).ensureTopics([
            TopicSpec(Topics.pdrStatus, in: topics, partitions: 3),
            TopicSpec(Topics.erasureParticipants, in: topics, partitions: 3),
        ])
        let producer = try kafka.makeProducer()
        try await withRunningServices([producer], logger: kafka.logger) {
            try await producer.send(try OutgoingMessage(
                event: declared("p1"), topic: topics.erasureParticipants, key: "p1", source: "test"))
            var messages: [OutgoingMessage] = []
            for index in 0..<accounts {
                let status = AccountStatusReported(
                    appId: "app-1", accountId: "acc-\(index)", tenantIds: ["t1"], status: .closed, reportedAt: Date())
                messages.append(try OutgoingMessage(
                    event: status, topic: topics.pdrStatus, key: "app-1:acc-\(index)", source: "test"))
            }
            try await producer.send(messages)
        }
    }

    /// The commands topic holds one command for every erasure in the ledger, and for no other.
    private func expectEveryErasureAnnounced(
        kafka: KafkaFixture, topics: LetheTopics, ids: Set<String>, accounts: Int
    ) async throws {
        let commands = try await readUntilDistinct(
            kafka, topic: topics.erasureCommands, timeout: .seconds(120),
            value: { try? $0.decodeEvent(EraseSubject.self).erasureId }
        ) { distinct, _ in distinct.count >= accounts }
        let announced = Set(try commands.map { try $0.decodeEvent(EraseSubject.self).erasureId })
        #expect(announced == ids, "every erasure in the ledger, and only those, was announced")
    }
}

/// The executor's ledger file, read-only and without migrating: the service owns the schema and its write lock.
/// Opened at the first query after the file exists; a query that fails counts 0.
private struct ReadOnlyLedger {
    let path: String
    private let reader = LockedValue<DatabasePool?>(nil)

    init(path: String) { self.path = path }

    func count(_ sql: String) -> Int {
        reader.withValue { pool in
            if pool == nil, FileManager.default.fileExists(atPath: path) {
                var configuration = Configuration()
                configuration.readonly = true
                pool = try? DatabasePool(path: path, configuration: configuration)
            }
            return (try? pool?.read { db in try Int.fetchOne(db, sql: sql) }) ?? 0
        }
    }

    func erasureIds() -> Set<String> {
        reader.withValue { pool in
            (try? pool?.read { db in try Set(String.fetchAll(db, sql: "SELECT id FROM erasures")) }) ?? []
        }
    }
}
