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

        let log = storeDirectory.url.appendingPathComponent("profile-store.log")
        // A reserved port, not a random one: a random pick in the ephemeral range can be in use (CI failed on that).
        let storePort = try SandboxProcess.ReservedPort()
        defer { storePort.release() }
        let store = try storePort.spawn(
            binary.path,
            environment: [
                "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrapServers, "LETHE_DATA_DIR": storeDirectory.url.path,
                "HTTP_PORT": String(storePort.port), "LETHE_TOPIC_NAMESPACE": namespace,
                "KAFKA_TOPIC_PARTITIONS": "3", "LOG_LEVEL": "warning",
            ],
            stdoutPath: log.path)
        defer { store.killAndReap() }
        let storePath = storeDirectory.url.appendingPathComponent("profile-store.sqlite").path
        func profiles() -> Int? {
            var configuration = Configuration()
            configuration.readonly = true
            guard FileManager.default.fileExists(atPath: storePath),
                  let pool = try? DatabasePool(path: storePath, configuration: configuration)
            else { return nil }
            return try? pool.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM profiles") }
        }

        let accountId = "557058:grace-\(UUID().uuidString.prefix(6))"
        let name = "Grace Hopper"
        let email = "grace.hopper@example.com"
        do {
            func send(_ event: some LetheEvent, topic: String, key: String) async throws {
                try await producer.send(try OutgoingMessage(event: event, topic: topic, key: key, source: "test"))
            }
            try await send(tenant("tenant-a", .delete), topic: topics.tenants, key: "tenant-a")
            // "late" declared itself earlier and is down now; "fast" runs in this process.
            try await send(declared("late"), topic: topics.erasureParticipants, key: "late")
            let held: [String: TestParticipantHandler.Held] = ["tenant-a/\(accountId)": .init(name: name, email: email)]
            let fastHandler = TestParticipantHandler(held: held)
            let lateHandler = TestParticipantHandler(held: held)
            fast = try testParticipant("fast", handler: fastHandler, kafka: kafka, namespace: namespace, topics: topics)
            let profilesTopic = "\(namespace).\(Topics.profiles)"
            // Nothing is produced before profile-store is ready: a send to its topics before it created them lets the
            // broker auto-create one with its default partition count, and profile-store then refuses to start.
            let ready = await eventually(timeout: .seconds(60), every: .milliseconds(200)) { storePort.answers200() }
            try #require(
                ready, "profile-store never became ready: \((try? String(contentsOf: log, encoding: .utf8)) ?? "")")
            let declaredAndStored = await eventually(timeout: .seconds(60), every: .milliseconds(200)) {
                // Publish until it holds the profile.
                if profiles() == 0 {
                    try? await send(
                        ProfileFetched(
                            tenantId: "tenant-a", appId: "app-1", accountId: accountId, name: name, email: email,
                            nickname: "grace", picture: nil, fetchedAt: Date()),
                        topic: profilesTopic, key: "app-1:\(accountId)")
                }
                let participants = try? await parts.ledger.participants()
                return participants == ["fast", "late", "profile-store"] && profiles() == 1
            }
            let declaredNow = (try? await parts.ledger.participants()) ?? []
            let storeLog = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
            try #require(
                declaredAndStored,
                "participants \(declaredNow), profiles \(profiles() ?? -1); not declared or not stored: \(storeLog)")

            let status = AccountStatusReported(
                appId: "app-1", accountId: accountId, tenantIds: ["tenant-a"], status: .closed, reportedAt: Date())
            try await send(status, topic: topics.pdrStatus, key: "app-1:\(accountId)")
            // profile-store and "fast" ack; the command is re-sent to "late", and the erasure stays open.
            let resent = await eventually(timeout: .seconds(60), every: .milliseconds(200)) {
                let page = try? await parts.ledger.erasures(tenantId: "tenant-a", status: nil, afterRow: 0, limit: 1)
                guard let states = page?.records.first?.participants else { return false }
                let outcome = { (name: String) in states.first { $0.participant == name }?.outcome }
                let lateSends = states.first { $0.participant == "late" }?.sends ?? 0
                return outcome("profile-store") == .erased && outcome("fast") == .erased && lateSends >= 2
            }
            #expect(resent, "no re-sends to the participant that is down, or the others did not ack")
            #expect(profiles() == 0, "profile-store still holds the profile")
            let open = try await parts.ledger.erasures(tenantId: "tenant-a", status: nil, afterRow: 0, limit: 1)
            #expect(open.records.first?.status == .dispatched, "it must not complete while a participant is missing")

            late = try testParticipant("late", handler: lateHandler, kafka: kafka, namespace: namespace, topics: topics)
            let completed = await eventually(timeout: .seconds(60), every: .milliseconds(200)) {
                (try? await parts.ledger.counts().byStatus[.completed]) == 1
            }
            #expect(completed, "the erasure did not complete after the third participant came back")
            let record = try await parts.ledger.erasures(tenantId: "tenant-a", status: nil, afterRow: 0, limit: 1)
            #expect(record.records.first?.participants.map(\.participant) == ["fast", "late", "profile-store"])
            #expect(record.records.first?.participants.map(\.outcome) == [.erased, .erased, .erased])
            let leftWithFast = await fastHandler.held
            let leftWithLate = await lateHandler.held
            #expect(leftWithFast.isEmpty && leftWithLate.isEmpty)
            #expect(try await parts.ledger.verifyAudit().ok)

            // The PII is in the system (the profiles topic) but not in the executor's file or topics.
            let source = try await readUntil(kafka, topic: profilesTopic) { $0.count >= 1 }
            #expect(source.contains { String(decoding: $0.value ?? [], as: UTF8.self).contains(email) })
            for suffix in ["", "-wal", "-shm"] {
                let bytes = (try? Data(contentsOf: URL(fileURLWithPath: parts.ledger.database.path + suffix))) ?? Data()
                #expect(bytes.range(of: Data(name.utf8)) == nil && bytes.range(of: Data(email.utf8)) == nil)
            }
            let stored = try await parts.ledger.allStoredText()
            #expect(!stored.contains(accountId) && !stored.contains(name) && !stored.contains(email))
            for topic in [topics.erasureCommands, topics.erasureAcks, topics.erasureCompleted] {
                for message in try await readUntil(kafka, topic: topic, { $0.count >= 1 }) {
                    let text = String(decoding: message.value ?? [], as: UTF8.self)
                    #expect(!text.contains(name) && !text.contains(email) && !text.contains("grace\""))
                }
            }
        } catch {
            Issue.record(error)
        }
        await late?.stop()
        await fast?.stop()
        await producing.stop()
        await executor.stop()
    }
}
