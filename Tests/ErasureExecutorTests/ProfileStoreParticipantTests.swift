import Contracts
import Foundation
import GRDB
import Messaging
import Prometheus
import ServiceKit
import Storage
import Testing
import TestSupport

@testable import erasure_executor

@Suite("erasure-executor with the real profile-store process as a participant")
struct ProfileStoreParticipantTests {
    @Test("""
        three participants — profile-store, a test participant, and one that is down at first: re-sent to the third, \
        completed only when it comes back; profile-store deleted the profile; the executor and its topics never see \
        the PII
        """)
    func profileStoreErasesAndAcks() async throws {
        let kafka = try KafkaFixture("erasure-executor-ps")
        let binary = RepositoryPaths.executable("profile-store")
        try #require(FileManager.default.isExecutableFile(atPath: binary.path), "missing \(binary.path)")
        let executorDirectory = try TemporaryDirectory()
        let storeDirectory = try TemporaryDirectory()
        let namespace = uniqueName("ee-ps")
        let built = try await TestExecutor.build(
            kafka: kafka, namespace: namespace, directory: executorDirectory, extra: ["ERASURE_RESEND_SECONDS": "2"])
        let (topics, parts) = (built.topics, built.parts)
        let executor = RunningGroup(parts.group)
        let producer = try kafka.makeProducer()
        let producing = RunningGroup([producer], logger: kafka.logger)
        var fast: RunningGroup?
        var late: RunningGroup?
        let store = try ProfileStoreChild.spawn(
            binary: binary, kafka: kafka, namespace: namespace, directory: storeDirectory)
        defer { store.stop() }

        let grace = PlantedPersonalData(
            accountId: "557058:grace-\(UUID().uuidString.prefix(6))", name: "Grace Hopper",
            email: "grace.hopper@example.com")
        let profilesTopic = topics.profiles
        do {
            try await producer.send(tenant("tenant-a", .delete), topic: topics.tenants, key: "tenant-a")
            // "late" declared itself earlier and is down now; "fast" runs in this process.
            try await producer.send(declared("late"), topic: topics.erasureParticipants, key: "late")
            let held: [String: TestParticipantHandler.Held] = [
                "tenant-a/\(grace.accountId)": .init(name: grace.name, email: grace.email),
            ]
            let fastHandler = TestParticipantHandler(held: held)
            let lateHandler = TestParticipantHandler(held: held)
            fast = try testParticipant("fast", handler: fastHandler, kafka: kafka, namespace: namespace, topics: topics)
            try await storeTheProfile(
                store, ledger: parts.ledger, producer: producer, profilesTopic: profilesTopic, grace: grace)
            try await closeAndExpectResends(
                store, ledger: parts.ledger, producer: producer, topics: topics, grace: grace)

            late = try testParticipant("late", handler: lateHandler, kafka: kafka, namespace: namespace, topics: topics)
            try await expectTheCompletion(ledger: parts.ledger, fast: fastHandler, late: lateHandler)
            try await expectThePersonalDataOnlyAtItsSource(
                kafka: kafka, ledger: parts.ledger, topics: topics, profilesTopic: profilesTopic, grace: grace)
        } catch {
            Issue.record(error)
        }
        await late?.stop()
        await fast?.stop()
        await producing.stop()
        await executor.stop()
    }
}

/// The scenario's phases, in order.
extension ProfileStoreParticipantTests {
    /// Nothing is produced before profile-store is ready: a send to its topics before it created them lets the broker
    /// auto-create one with its default partition count, and profile-store then refuses to start. Then the profile is
    /// published until profile-store holds it, and every participant has declared itself.
    private func storeTheProfile(
        _ store: ProfileStoreChild, ledger: ErasureLedger, producer: KafkaProducer, profilesTopic: String,
        grace: PlantedPersonalData
    ) async throws {
        let ready = await eventually(timeout: .seconds(60), every: .milliseconds(200)) { store.port.answers200() }
        try #require(ready, "profile-store never became ready: \(store.logText())")
        let declaredAndStored = await eventually(timeout: .seconds(60), every: .milliseconds(200)) {
            // Publish until it holds the profile.
            if store.profiles() == 0 {
                try? await producer.send(
                    ProfileFetched(
                        tenantId: "tenant-a", appId: "app-1", accountId: grace.accountId, name: grace.name,
                        email: grace.email, nickname: "grace", picture: nil, fetchedAt: Date()),
                    topic: profilesTopic, key: "app-1:\(grace.accountId)")
            }
            let participants = try? await ledger.participants()
            return participants == ["fast", "late", "profile-store"] && store.profiles() == 1
        }
        let declaredNow = (try? await ledger.participants()) ?? []
        let storeLog = store.logText()
        try #require(
            declaredAndStored,
            "participants \(declaredNow), profiles \(store.profiles() ?? -1); not declared or not stored: \(storeLog)")
    }

    /// The account closes: profile-store and "fast" ack; the command is re-sent to "late", and the erasure stays open.
    private func closeAndExpectResends(
        _ store: ProfileStoreChild, ledger: ErasureLedger, producer: KafkaProducer, topics: LetheTopics,
        grace: PlantedPersonalData
    ) async throws {
        let status = AccountStatusReported(
            appId: "app-1", accountId: grace.accountId, tenantIds: ["tenant-a"], status: .closed, reportedAt: Date())
        try await producer.send(status, topic: topics.pdrStatus, key: "app-1:\(grace.accountId)")
        let resent = await eventually(timeout: .seconds(60), every: .milliseconds(200)) {
            let page = try? await ledger.erasures(tenantId: "tenant-a", status: nil, after: nil, limit: 1)
            guard let states = page?.records.first?.participants else { return false }
            let outcome = { (name: String) in states.first { $0.participant == name }?.outcome }
            let lateSends = states.first { $0.participant == "late" }?.sends ?? 0
            return outcome("profile-store") == .erased && outcome("fast") == .erased && lateSends >= 2
        }
        #expect(resent, "no re-sends to the participant that is down, or the others did not ack")
        #expect(store.profiles() == 0, "profile-store still holds the profile")
        let open = try await ledger.erasures(tenantId: "tenant-a", status: nil, after: nil, limit: 1)
        #expect(open.records.first?.status == .dispatched, "it must not complete while a participant is missing")
    }

    /// With "late" back the erasure completes: every participant erased, the audit verifies.
    private func expectTheCompletion(
        ledger: ErasureLedger, fast: TestParticipantHandler, late: TestParticipantHandler
    ) async throws {
        let completed = await eventually(timeout: .seconds(60), every: .milliseconds(200)) {
            (try? await ledger.counts().byStatus[.completed]) == 1
        }
        #expect(completed, "the erasure did not complete after the third participant came back")
        let record = try await ledger.erasures(tenantId: "tenant-a", status: nil, after: nil, limit: 1)
        #expect(record.records.first?.participants.map(\.participant) == ["fast", "late", "profile-store"])
        #expect(record.records.first?.participants.map(\.outcome) == [.erased, .erased, .erased])
        let leftWithFast = await fast.held
        let leftWithLate = await late.held
        #expect(leftWithFast.isEmpty && leftWithLate.isEmpty)
        #expect(try await ledger.verifyAudit().ok)
    }

    /// The PII is in the system (the profiles topic) but not in the executor's file or topics.
    private func expectThePersonalDataOnlyAtItsSource(
        kafka: KafkaFixture, ledger: ErasureLedger, topics: LetheTopics, profilesTopic: String,
        grace: PlantedPersonalData
    ) async throws {
        let (name, email) = (grace.name, grace.email)
        let source = try await readUntil(kafka, topic: profilesTopic) { $0.count >= 1 }
        #expect(source.contains { String(decoding: $0.value ?? [], as: UTF8.self).contains(email) })
        expectNoNameOrEmail(grace, inFilesOf: ledger)
        let stored = try await ledger.allStoredText()
        #expect(!stored.contains(grace.accountId) && !stored.contains(name) && !stored.contains(email))
        for topic in [topics.erasureCommands, topics.erasureAcks, topics.erasureCompleted] {
            for message in try await readUntil(kafka, topic: topic, { $0.count >= 1 }) {
                let text = String(decoding: message.value ?? [], as: UTF8.self)
                #expect(!text.contains(name) && !text.contains(email) && !text.contains("grace\""))
            }
        }
    }
}

/// profile-store as a child process on a reserved port — not a random one: a random pick in the ephemeral range can
/// be in use (CI failed on that) — with a read-only look at its profiles table. ``stop()`` kills it.
private struct ProfileStoreChild {
    let port: SandboxProcess.ReservedPort
    let process: ChildProcess
    let log: URL
    let databasePath: String

    static func spawn(
        binary: URL, kafka: KafkaFixture, namespace: String, directory: TemporaryDirectory
    ) throws -> ProfileStoreChild {
        let log = directory.url.appendingPathComponent("profile-store.log")
        let port = try SandboxProcess.ReservedPort()
        // On failure the port is released by `spawn`.
        let process = try port.spawn(
            binary.path,
            environment: [
                "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrapServers, "LETHE_DATA_DIR": directory.url.path,
                "HTTP_PORT": String(port.port), "LETHE_TOPIC_NAMESPACE": namespace,
                "KAFKA_TOPIC_PARTITIONS": "3", "LOG_LEVEL": "warning",
            ],
            stdoutPath: log.path)
        return ProfileStoreChild(
            port: port, process: process, log: log,
            databasePath: directory.url.appendingPathComponent("profile-store.sqlite").path)
    }

    /// How many profiles it holds, or nil before its file exists.
    func profiles() -> Int? {
        var configuration = Configuration()
        configuration.readonly = true
        guard FileManager.default.fileExists(atPath: databasePath),
              let pool = try? DatabasePool(path: databasePath, configuration: configuration)
        else { return nil }
        return try? pool.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM profiles") }
    }

    func logText() -> String { (try? String(contentsOf: log, encoding: .utf8)) ?? "" }

    func stop() {
        process.killAndReap()
        port.release()
    }
}
