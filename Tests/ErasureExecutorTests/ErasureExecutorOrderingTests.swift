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

    /// Builds the executor (topics created, file migrated) without running it.
    func build(namespace: String, directory: TemporaryDirectory, extra: [String: String] = [:]) async throws
        -> ErasureExecutorParts
    {
        try await TestExecutor.build(kafka: kafka, namespace: namespace, directory: directory, extra: extra).parts
    }

    /// Creates the executor's input topics with its partition count, for records produced before it starts.
    func makeTopics(_ topics: LetheTopics) async throws {
        let used: [KeyPath<LetheTopics, String>] = [
            \.tenants, \.pdrStatus, \.erasureRequests, \.erasureCommands, \.erasureAcks, \.erasureParticipants,
        ]
        try await KafkaAdmin(bootstrapServers: kafka.bootstrapServers, logger: kafka.logger).ensureTopics(used.map {
            TopicSpec(name: topics[keyPath: $0], partitions: 3, config: Topics.definition(of: $0).kafkaConfig)
        })
    }

    func records(of ledger: ErasureLedger, tenant: String) async throws -> [ErasureRecord] {
        try await ledger.erasures(tenantId: tenant, status: nil, afterRow: 0, limit: 50).records
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
        let directory = try TemporaryDirectory()
        let namespace = uniqueName("ee15-restore")
        let topics = LetheTopics(namespace: namespace)
        try await makeTopics(topics)
        let producer = try kafka.makeProducer()
        let producing = RunningGroup([producer], logger: kafka.logger)
        var executor: RunningGroup?
        do {
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

            let parts = try await build(
                namespace: namespace, directory: directory, extra: ["ERASURE_STATE_RESTORE_SECONDS": "1"])
            #expect(throws: RestoreGate.NotRestored.self, "ready before the participants were read") {
                try parts.gate.check()
            }
            executor = RunningGroup(parts.group)
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
        } catch {
            Issue.record(error)
        }
        await executor?.stop()
        await producing.stop()
    }

    @Test("""
        while the ledger cannot be written the executor stays not ready and says why; the participant declared \
        meanwhile is not lost and the erasure waits for it
        """)
    func notReadyWhileStateCannotBeAppliedAndNothingLost() async throws {
        let directory = try TemporaryDirectory()
        let namespace = uniqueName("ee15-locked")
        let topics = LetheTopics(namespace: namespace)
        try await makeTopics(topics)
        let producer = try kafka.makeProducer()
        let producing = RunningGroup([producer], logger: kafka.logger)
        var executor: RunningGroup?
        do {
            try await producer.send(try OutgoingMessage(
                event: declared("locked-out"), topic: topics.erasureParticipants, key: "locked-out", source: "test"))
            try await producer.send(try OutgoingMessage(
                event: closedStatus("acc-locked", tenants: ["t-locked"]), topic: topics.pdrStatus,
                key: "app-1:acc-locked", source: "test"))
            let parts = try await build(namespace: namespace, directory: directory)
            // Another process holds the write lock of the executor's file: every write is SQLITE_BUSY after the
            // 10 s busy timeout.
            var lockConfiguration = Configuration()
            lockConfiguration.allowsUnsafeTransactions = true
            let lock = try DatabaseQueue(path: parts.ledger.database.path, configuration: lockConfiguration)
            try await lock.writeWithoutTransaction { db in try db.execute(sql: "BEGIN EXCLUSIVE") }
            executor = RunningGroup(parts.group)
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
        } catch {
            Issue.record(error)
        }
        await executor?.stop()
        await producing.stop()
    }

    @Test("""
        a participant that declares while an erasure is open receives its command, and the erasure waits for its \
        ack as well as for the one that was declared before
        """)
    func lateParticipantReceivesOpenErasures() async throws {
        let directory = try TemporaryDirectory()
        let namespace = uniqueName("ee15-late")
        let topics = LetheTopics(namespace: namespace)
        try await makeTopics(topics)
        let producer = try kafka.makeProducer()
        let producing = RunningGroup([producer], logger: kafka.logger)
        let accountId = "557058:late-\(UUID().uuidString.prefix(6))"
        let held: [String: TestParticipantHandler.Held] = ["t-late/\(accountId)": .init(name: "n", email: "e")]
        let newcomerHandler = TestParticipantHandler(held: held)
        let absentHandler = TestParticipantHandler(held: held)
        var running: [RunningGroup] = []
        var executor: RunningGroup?
        do {
            try await producer.send(try OutgoingMessage(
                event: declared("absent"), topic: topics.erasureParticipants, key: "absent", source: "test"))
            let parts = try await build(namespace: namespace, directory: directory)
            executor = RunningGroup(parts.group)
            try await producer.send(try OutgoingMessage(
                event: closedStatus(accountId, tenants: ["t-late"]), topic: topics.pdrStatus,
                key: "app-1:\(accountId)", source: "test"))
            let dispatched = await eventually(timeout: .seconds(60), every: .milliseconds(100)) {
                (try? await records(of: parts.ledger, tenant: "t-late"))?.first?.status == .dispatched
            }
            try #require(dispatched, "the erasure was not dispatched")
            let id = try #require(try await records(of: parts.ledger, tenant: "t-late").first?.id)

            // A new participant comes up (it declares itself as it starts) while the erasure waits for "absent".
            running.append(try testParticipant(
                "newcomer", handler: newcomerHandler, kafka: kafka, namespace: namespace, topics: topics))
            let joined = await eventually(timeout: .seconds(60), every: .milliseconds(100)) {
                let record = try? await parts.ledger.erasure(id)
                return record?.participants.first { $0.participant == "newcomer" }?.outcome == .erased
            }
            #expect(joined, "the newcomer was not made part of the open erasure, or never acknowledged it")
            let waiting = try #require(try await parts.ledger.erasure(id))
            #expect(waiting.participants.map(\.participant) == ["absent", "newcomer"])
            #expect(waiting.status == .dispatched, "it must still wait for the participant declared before")
            #expect(await newcomerHandler.applied.map(\.erasureId).contains(id))

            running.append(try testParticipant(
                "absent", handler: absentHandler, kafka: kafka, namespace: namespace, topics: topics))
            let completed = await eventually(timeout: .seconds(60), every: .milliseconds(100)) {
                (try? await parts.ledger.erasure(id))?.status == .completed
            }
            #expect(completed, "the erasure did not complete once both had acknowledged")
            let entry = try #require(try await parts.ledger.auditEntries().first { $0.erasureId == id })
            #expect(entry.outcomes.map(\.participant) == ["absent", "newcomer"])
            #expect(entry.outcomes.map(\.outcome) == [.erased, .erased])
        } catch {
            Issue.record(error)
        }
        for group in running { await group.stop() }
        await executor?.stop()
        await producing.stop()
    }

    // MARK: Bad input never loops and never stops a partition

    @Test("""
        every topic's unusable records go to its DLQ with a reason — headerless records of all five topics, an \
        undecodable declaration (its participant kept), deadlineDays 0, a request whose tenant cannot be found, an \
        ack claiming waived, and a status the ledger refuses by a constraint — and the records behind them are applied
        """)
    func badInputIsDeadLetteredAndThePartitionMovesOn() async throws {
        let directory = try TemporaryDirectory()
        let namespace = uniqueName("ee15-bad")
        let topics = LetheTopics(namespace: namespace)
        try await makeTopics(topics)
        let producer = try kafka.makeProducer()
        let producing = RunningGroup([producer], logger: kafka.logger)
        var executor: RunningGroup?
        do {
            func send(_ event: some LetheEvent, topic: String, key: String) async throws {
                try await producer.send(try OutgoingMessage(event: event, topic: topic, key: key, source: "test"))
            }
            /// The event's body without any header.
            func sendHeaderless(_ event: some LetheEvent, topic: String, key: String) async throws {
                try await producer.send(OutgoingMessage(topic: topic, key: key, value: Array(try EventCodec.encode(event))))
            }
            /// A raw body with the CloudEvents headers of `type`.
            func sendRaw(_ body: String, type: String, topic: String, key: String) async throws {
                let headers = CloudEventAttributes(id: UUID().uuidString, type: type, source: "/test", time: Date())
                    .headers.map { KafkaHeader(name: $0.name, string: $0.value) }
                try await producer.send(OutgoingMessage(topic: topic, key: key, value: Array(body.utf8), headers: headers))
            }
            let parts = try await build(namespace: namespace, directory: directory)
            // A constraint the ledger enforces for good on one tenant's erasures: intake must dead-letter the record,
            // not retry it for ever and stall its partition.
            try await parts.ledger.database.write { db in
                try db.execute(sql: """
                    CREATE TRIGGER poison BEFORE INSERT ON erasures WHEN NEW.tenant_id = 't-poison'
                    BEGIN SELECT RAISE(ABORT, 'CHECK constraint failed: poison tenant'); END
                    """)
            }

            // Tenants: a good one, one without headers, one with deadlineDays 0, one with 45 (capped at 30).
            try await send(tenant("t-ok", .scrub, apps: ["app-1"]), topic: topics.tenants, key: "t-ok")
            try await sendHeaderless(tenant("t-nohdr", .scrub), topic: topics.tenants, key: "t-nohdr")
            try await send(tenant("t-zero", .scrub, days: 0), topic: topics.tenants, key: "t-zero")
            try await send(tenant("t-long", .scrub, days: 45), topic: topics.tenants, key: "t-long")
            // Participants: a good one, one without headers, one that is not JSON.
            try await send(declared("p-ok"), topic: topics.erasureParticipants, key: "p-ok")
            try await sendHeaderless(declared("p-nohdr"), topic: topics.erasureParticipants, key: "p-nohdr")
            try await sendRaw(
                "{not json", type: ParticipantDeclared.eventType, topic: topics.erasureParticipants, key: "p-broken")
            executor = RunningGroup(parts.group)

            // Statuses on one key (one partition): headerless, poison, then a good one behind them.
            let key = "app-1:acc-bad"
            try await sendHeaderless(closedStatus("acc-bad", tenants: ["t-ok"]), topic: topics.pdrStatus, key: key)
            try await send(closedStatus("acc-bad", tenants: ["t-poison"]), topic: topics.pdrStatus, key: key)
            try await send(closedStatus("acc-bad", tenants: ["t-ok"]), topic: topics.pdrStatus, key: key)
            // Requests on one key: headerless, no tenant and no tenant with the app, an empty tenantId, then a good one.
            let requestKey = "app-1:acc-req"
            try await sendHeaderless(
                ErasureRequested(requestId: "r-1", appId: "app-1", accountId: "acc-req", tenantId: "t-long", cause: .tenantRequest),
                topic: topics.erasureRequests, key: requestKey)
            try await send(
                ErasureRequested(requestId: "r-2", appId: "app-nobody", accountId: "acc-req", cause: .tenantRequest),
                topic: topics.erasureRequests, key: "app-nobody:acc-req")
            try await send(
                ErasureRequested(requestId: "r-3", appId: "app-1", accountId: "acc-req", tenantId: "", cause: .tenantRequest),
                topic: topics.erasureRequests, key: requestKey)
            try await send(
                ErasureRequested(requestId: "r-4", appId: "app-1", accountId: "acc-req", tenantId: "t-long", cause: .tenantRequest),
                topic: topics.erasureRequests, key: requestKey)

            let applied = await eventually(timeout: .seconds(90), every: .milliseconds(200)) {
                let ok = (try? await records(of: parts.ledger, tenant: "t-ok")) ?? []
                let long = (try? await records(of: parts.ledger, tenant: "t-long")) ?? []
                return ok.count == 1 && long.count == 1
            }
            try #require(applied, "the records behind the bad ones were not applied")
            let ok = try #require(try await records(of: parts.ledger, tenant: "t-ok").first)
            #expect(ok.policy == .scrub)
            #expect(ok.participants.map(\.participant) == ["p-broken", "p-nohdr", "p-ok"],
                    "a participant whose declaration could not be read was dropped")
            #expect(try await records(of: parts.ledger, tenant: "t-poison").isEmpty)
            let long = try #require(try await records(of: parts.ledger, tenant: "t-long").first)
            #expect(try await parts.ledger.deadlineDays(ofTenant: "t-long") == 30)
            let days = long.deadline.timeIntervalSince(long.createdAt) / 86_400
            #expect(abs(days - 30) < 0.01, "deadlineDays above 30 was not capped: \(days)")
            #expect(try await parts.ledger.apps(ofTenant: "t-nohdr") == nil)
            #expect(try await parts.ledger.apps(ofTenant: "t-zero") == nil)

            // Acks: one without headers, one claiming `waived` (which only the executor records).
            try await sendHeaderless(ack(ok.id, "p-ok", .erased), topic: topics.erasureAcks, key: ok.id)
            try await sendRaw(
                #"{"schemaVersion":"1.0","erasureId":"\#(ok.id)","participant":"p-broken","outcome":"waived","at":"2026-01-01T00:00:00.000Z"}"#,
                type: ErasureAcknowledged.eventType, topic: topics.erasureAcks, key: ok.id)

            func reasons(_ topic: String, count: Int) async throws -> [String] {
                try await readUntil(kafka, topic: DeadLetterQueue.topic(for: topic)) { $0.count >= count }
                    .map { $0.header(DeadLetterQueue.errorHeader)?.stringValue ?? "" }
            }
            let tenantReasons = try await reasons(topics.tenants, count: 2)
            #expect(tenantReasons.contains { $0.contains("ce_specversion") }, "\(tenantReasons)")
            #expect(tenantReasons.contains { $0.contains("deadlineDays") }, "\(tenantReasons)")
            let participantReasons = try await reasons(topics.erasureParticipants, count: 2)
            #expect(participantReasons.contains { $0.contains("ce_specversion") }, "\(participantReasons)")
            #expect(participantReasons.contains { $0.contains("JSON") }, "\(participantReasons)")
            let statusReasons = try await reasons(topics.pdrStatus, count: 2)
            #expect(statusReasons.contains { $0.contains("ce_specversion") }, "\(statusReasons)")
            #expect(statusReasons.contains { $0.contains("constraint") }, "\(statusReasons)")
            let requestReasons = try await reasons(topics.erasureRequests, count: 3)
            #expect(requestReasons.contains { $0.contains("ce_specversion") }, "\(requestReasons)")
            #expect(requestReasons.contains { $0.contains("no configured tenant") }, "\(requestReasons)")
            #expect(requestReasons.contains { $0.contains("tenantId is empty") }, "\(requestReasons)")
            let ackReasons = try await reasons(topics.erasureAcks, count: 2)
            #expect(ackReasons.contains { $0.contains("ce_specversion") }, "\(ackReasons)")
            #expect(ackReasons.contains { $0.contains("outcome") }, "\(ackReasons)")
            let after = try #require(try await parts.ledger.erasure(ok.id))
            #expect(after.participants.allSatisfy { $0.outcome == nil }, "a dead-lettered ack was applied")
        } catch {
            Issue.record(error)
        }
        await executor?.stop()
        await producing.stop()
    }

    // MARK: Upgrade instead of a second erasure

    @Test("""
        closed for a subject with an open refresh-failed erasure upgrades it: one erasure, re-sent with cause \
        atlassian-closed, completed once every participant acknowledged it, audited and published with the final cause
        """)
    func closedUpgradesTheOpenRefreshFailedErasure() async throws {
        let directory = try TemporaryDirectory()
        let namespace = uniqueName("ee15-upgrade")
        let topics = LetheTopics(namespace: namespace)
        try await makeTopics(topics)
        let producer = try kafka.makeProducer()
        let producing = RunningGroup([producer], logger: kafka.logger)
        let accountId = "557058:upgrade-\(UUID().uuidString.prefix(6))"
        let held: [String: TestParticipantHandler.Held] = ["t-up/\(accountId)": .init(name: "n", email: "e")]
        let fastHandler = TestParticipantHandler(held: held)
        let slowHandler = TestParticipantHandler(held: held)
        var running: [RunningGroup] = []
        var executor: RunningGroup?
        do {
            func send(_ event: some LetheEvent, topic: String, key: String) async throws {
                try await producer.send(try OutgoingMessage(event: event, topic: topic, key: key, source: "test"))
            }
            try await send(tenant("t-up", .disassociate), topic: topics.tenants, key: "t-up")
            try await send(declared("slow"), topic: topics.erasureParticipants, key: "slow")
            let parts = try await build(namespace: namespace, directory: directory)
            executor = RunningGroup(parts.group)
            running.append(try testParticipant(
                "fast", handler: fastHandler, kafka: kafka, namespace: namespace, topics: topics))
            let key = "app-1:\(accountId)"
            // The gateway lost the grant: refresh-failed, scrub, for this tenant.
            try await send(
                ErasureRequested(
                    requestId: UUID().uuidString, appId: "app-1", accountId: accountId, tenantId: "t-up",
                    cause: .refreshFailed, policy: .scrub),
                topic: topics.erasureRequests, key: key)
            let fastAcked = await eventually(timeout: .seconds(60), every: .milliseconds(100)) {
                let record = try? await records(of: parts.ledger, tenant: "t-up").first
                return record?.participants.first { $0.participant == "fast" }?.outcome == .scrubbed
            }
            try #require(fastAcked, "the refresh-failed erasure did not reach the running participant")
            let id = try #require(try await records(of: parts.ledger, tenant: "t-up").first?.id)

            // Then Atlassian answers closed for the same account.
            try await send(closedStatus(accountId, tenants: ["t-up"]), topic: topics.pdrStatus, key: key)
            let upgraded = await eventually(timeout: .seconds(60), every: .milliseconds(100)) {
                (try? await parts.ledger.erasure(id))?.cause == .atlassianClosed
            }
            #expect(upgraded, "the open erasure was not upgraded to atlassian-closed")
            running.append(try testParticipant(
                "slow", handler: slowHandler, kafka: kafka, namespace: namespace, topics: topics))
            let completed = await eventually(timeout: .seconds(60), every: .milliseconds(100)) {
                (try? await parts.ledger.erasure(id))?.status == .completed
            }
            #expect(completed, "the upgraded erasure did not complete")
            let all = try await records(of: parts.ledger, tenant: "t-up")
            #expect(all.count == 1, "a second erasure was opened instead of the upgrade")
            #expect(all.first?.requests == 2 && all.first?.policy == .scrub)
            // The participant down until after the upgrade finds the refresh-failed command first on the topic: it
            // must still apply the closed one (a new command id), and only that ack counts.
            #expect(await slowHandler.applied.map(\.cause).contains(.atlassianClosed),
                    "the participant that came after the upgrade was not told the account is closed")
            #expect(await fastHandler.applied.map(\.cause) == [.refreshFailed, .atlassianClosed],
                    "the participant that acked the refresh-failed command did not apply the closed one")
            let entry = try #require(try await parts.ledger.auditEntries().first { $0.erasureId == id })
            #expect(entry.cause == .atlassianClosed)
            #expect(try await parts.ledger.verifyAudit().ok)
            let commands = try await readUntil(kafka, topic: topics.erasureCommands) { messages in
                messages.contains { (try? $0.decodeEvent(EraseSubject.self))?.cause == .atlassianClosed }
            }.map { try $0.decodeEvent(EraseSubject.self) }
            let commandId = try #require(try await parts.ledger.erasure(id)?.commandId)
            #expect(Set(commands.map(\.erasureId)) == [id, commandId])
            #expect(commands.filter { $0.erasureId == commandId }.allSatisfy { $0.cause == .atlassianClosed })
            let receipt = try await readUntil(kafka, topic: topics.erasureCompleted) { $0.count >= 1 }
                .map { try $0.decodeEvent(ErasureCompleted.self) }
            #expect(receipt.map(\.cause) == [.atlassianClosed])
        } catch {
            Issue.record(error)
        }
        for group in running { await group.stop() }
        await executor?.stop()
        await producing.stop()
    }
}
