import Contracts
import Foundation
import GRDB
import Logging
import Messaging
import Prometheus
import ServiceKit
import Storage
import Testing
import TestSupport

@testable import erasure_executor

/// Issue 15 through Kafka, where the order of events matters: the executor in-process (so a test can reach its
/// ledger), the dev broker, ErasureKit participants in-process.
@Suite("erasure-executor under every order of events, against the dev broker")
struct ErasureExecutorOrderingTests {
    let kafka: KafkaFixture

    init() throws { kafka = try KafkaFixture("erasure-executor-issue15") }

    func records(of ledger: ErasureLedger, tenant: String) async throws -> [ErasureRecord] {
        try await ledger.erasures(tenantId: tenant, status: nil, after: nil, limit: 50).records
    }

    func closedStatus(_ accountId: String, tenants: [String], app: String = "app-1") -> AccountStatusReported {
        AccountStatusReported(appId: app, accountId: accountId, tenantIds: tenants, status: .closed, reportedAt: Date())
    }

    // MARK: Participants fixed too early

    @Test("""
        a closed status waiting at start is dispatched only once the participants topic is read to its end: a \
        participant declared behind 30,000 records is in the erasure, however short ERASURE_STATE_RESTORE_SECONDS is
        """)
    func dispatchWaitsForTheWholeParticipantsTopic() async throws {
        try await inWorld("ee15-restore") { world in
            let (topics, producer) = (world.topics, world.producer)
            // Partition 0 of the participants topic: "early", 30,000 re-declarations of it, then "late" — so "late"
            // is read last, long after the old start-up timeout.
            func declaration(_ name: String) throws -> OutgoingMessage {
                var message = try OutgoingMessage(
                    event: declared(name), topic: topics.erasureParticipants, key: name, source: "test")
                message.partition = 0
                return message
            }
            try await producer.send(try declaration("early"))
            for _ in 0..<30 { try await producer.send(try (0..<1000).map { _ in try declaration("early") }) }
            try await producer.send(try declaration("late"))
            try await producer.send(try OutgoingMessage(
                event: closedStatus("acc-restore", tenants: ["t-restore"]), topic: topics.pdrStatus,
                key: "app-1:acc-restore", source: "test"))

            let parts = try await world.build(extra: ["ERASURE_STATE_RESTORE_SECONDS": "1"])
            #expect(throws: RestoreGate.NotRestored.self, "ready before the participants were read") {
                try parts.gate.check()
            }
            world.start(parts)
            let opened = await eventually(timeout: .seconds(120), every: .milliseconds(100)) {
                !((try? await records(of: parts.ledger, tenant: "t-restore")) ?? []).isEmpty
            }
            try #require(opened, "the closed status opened no erasure")
            #expect(parts.gate.isOpen, "an erasure was opened before the state topics were read to their end")
            let record = try #require(try await records(of: parts.ledger, tenant: "t-restore").first)
            #expect(record.participants.map(\.participant) == ["early", "late"],
                    "the erasure was dispatched before the participants topic was read to its end")
            #expect(try await parts.ledger.participants() == ["early", "late"])
            try parts.gate.check()
        }
    }

    @Test("""
        while the ledger cannot be written the executor stays not ready and says why; the participant declared \
        meanwhile is not lost and the erasure waits for it
        """)
    func notReadyWhileStateCannotBeAppliedAndNothingLost() async throws {
        try await inWorld("ee15-locked") { world in
            let (topics, producer) = (world.topics, world.producer)
            try await producer.send(try OutgoingMessage(
                event: declared("locked-out"), topic: topics.erasureParticipants, key: "locked-out", source: "test"))
            try await producer.send(try OutgoingMessage(
                event: closedStatus("acc-locked", tenants: ["t-locked"]), topic: topics.pdrStatus,
                key: "app-1:acc-locked", source: "test"))
            let parts = try await world.build()
            // Another process holds the write lock of the executor's file: every write is SQLITE_BUSY after the
            // 10 s busy timeout.
            var lockConfiguration = Configuration()
            lockConfiguration.allowsUnsafeTransactions = true
            let lock = try DatabaseQueue(path: parts.ledger.database.path, configuration: lockConfiguration)
            try await lock.writeWithoutTransaction { db in try db.execute(sql: "BEGIN EXCLUSIVE") }
            world.start(parts)
            let saysWhy = await eventually(timeout: .seconds(60), every: .milliseconds(200)) {
                parts.gate.notReadyReason?.contains("database is locked") == true
            }
            #expect(saysWhy, "the readiness reason does not say the ledger is locked: \(parts.gate.notReadyReason ?? "ready")")
            #expect(!parts.gate.isOpen)
            #expect(try await records(of: parts.ledger, tenant: "t-locked").isEmpty, "intake ran before the restore")
            try await lock.writeWithoutTransaction { db in try db.execute(sql: "COMMIT") }
            try lock.close()

            let opened = await eventually(timeout: .seconds(60), every: .milliseconds(100)) {
                !((try? await records(of: parts.ledger, tenant: "t-locked")) ?? []).isEmpty
            }
            try #require(opened, "the closed status opened no erasure after the lock was released")
            #expect(parts.gate.isOpen)
            let record = try #require(try await records(of: parts.ledger, tenant: "t-locked").first)
            #expect(record.participants.map(\.participant) == ["locked-out"],
                    "the declaration read while the ledger was locked was lost")
        }
    }

    @Test("""
        a participant that declares while an erasure is open receives its command, and the erasure waits for its \
        ack as well as for the one that was declared before
        """)
    func lateParticipantReceivesOpenErasures() async throws {
        let accountId = "557058:late-\(UUID().uuidString.prefix(6))"
        let held: [String: TestParticipantHandler.Held] = ["t-late/\(accountId)": .init(name: "n", email: "e")]
        let newcomerHandler = TestParticipantHandler(held: held)
        let absentHandler = TestParticipantHandler(held: held)
        var running: [RunningGroup] = []
        try await inWorld("ee15-late") { world in
            let (topics, producer) = (world.topics, world.producer)
            try await producer.send(try OutgoingMessage(
                event: declared("absent"), topic: topics.erasureParticipants, key: "absent", source: "test"))
            let parts = try await world.build()
            world.start(parts)
            try await producer.send(try OutgoingMessage(
                event: closedStatus(accountId, tenants: ["t-late"]), topic: topics.pdrStatus,
                key: "app-1:\(accountId)", source: "test"))
            let dispatched = await eventually(timeout: .seconds(60), every: .milliseconds(100)) {
                (try? await records(of: parts.ledger, tenant: "t-late"))?.first?.status == .dispatched
            }
            try #require(dispatched, "the erasure was not dispatched")
            let id = try #require(try await records(of: parts.ledger, tenant: "t-late").first?.id)

            // A new participant comes up (it declares itself as it starts) while the erasure waits for "absent".
            try world.startParticipant("newcomer", handler: newcomerHandler)
            let joined = await eventually(timeout: .seconds(60), every: .milliseconds(100)) {
                let record = try? await parts.ledger.erasure(id)
                return record?.participants.first { $0.participant == "newcomer" }?.outcome == .erased
            }
            #expect(joined, "the newcomer was not made part of the open erasure, or never acknowledged it")
            let waiting = try #require(try await parts.ledger.erasure(id))
            #expect(waiting.participants.map(\.participant) == ["absent", "newcomer"])
            #expect(waiting.status == .dispatched, "it must still wait for the participant declared before")
            #expect(await newcomerHandler.applied.map(\.erasureId).contains(id))

            try world.startParticipant("absent", handler: absentHandler)
            let completed = await eventually(timeout: .seconds(60), every: .milliseconds(100)) {
                (try? await parts.ledger.erasure(id))?.status == .completed
            }
            #expect(completed, "the erasure did not complete once both had acknowledged")
            let entry = try #require(try await parts.ledger.auditEntries().first { $0.erasureId == id })
            #expect(entry.outcomes.map(\.participant) == ["absent", "newcomer"])
            #expect(entry.outcomes.map(\.outcome) == [.erased, .erased])
        }
    }
}
