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

/// The rest of the ordering suite (``ErasureExecutorOrderingTests``): bad input, and a request that upgrades an open
/// erasure instead of opening a second one.
extension ErasureExecutorOrderingTests {
    // MARK: Bad input never loops and never stops a partition

    @Test("""
        every topic's unusable records go to its DLQ with a reason — headerless records of all five topics, an \
        undecodable declaration (its participant kept), deadlineDays 0, a request whose tenant cannot be found, an \
        ack claiming waived, and a status the ledger refuses by a constraint — and the records behind them are applied
        """)
    func badInputIsDeadLetteredAndThePartitionMovesOn() async throws {
        try await inWorld("ee15-bad") { world in
            let (topics, producer) = (world.topics, world.producer)
            let input = BadInput(producer: producer, topics: topics)
            let parts = try await world.build()
            try await refuseOneTenantByAConstraint(parts.ledger)
            try await sendTenantsAndParticipants(input)
            world.start(parts)
            try await sendStatusesAndRequests(input)

            let ok = try await expectTheRecordsBehindTheBadOnesApplied(parts.ledger)
            try await sendAcks(input, for: ok.id)
            try await expectEveryTopicsDeadLetterReasons(topics)
            let after = try #require(try await parts.ledger.erasure(ok.id))
            #expect(after.participants.allSatisfy { $0.outcome == nil }, "a dead-lettered ack was applied")
        }
    }

    /// A constraint the ledger enforces for good on one tenant's erasures: intake must dead-letter the record, not
    /// retry it for ever and stall its partition.
    private func refuseOneTenantByAConstraint(_ ledger: ErasureLedger) async throws {
        try await ledger.database.write { db in
            try db.execute(sql: """
                CREATE TRIGGER poison BEFORE INSERT ON erasures WHEN NEW.tenant_id = 't-poison'
                BEGIN SELECT RAISE(ABORT, 'CHECK constraint failed: poison tenant'); END
                """)
        }
    }

    /// Tenants: a good one, one without headers, one with deadlineDays 0, one with 45 (capped at 30). Participants: a
    /// good one, one without headers, one that is not JSON.
    private func sendTenantsAndParticipants(_ input: BadInput) async throws {
        let (producer, topics) = (input.producer, input.topics)
        try await producer.send(tenant("t-ok", .scrub, apps: ["app-1"]), topic: topics.tenants, key: "t-ok")
        try await input.sendHeaderless(tenant("t-nohdr", .scrub), topic: topics.tenants, key: "t-nohdr")
        try await producer.send(tenant("t-zero", .scrub, days: 0), topic: topics.tenants, key: "t-zero")
        try await producer.send(tenant("t-long", .scrub, days: 45), topic: topics.tenants, key: "t-long")
        try await producer.send(declared("p-ok"), topic: topics.erasureParticipants, key: "p-ok")
        try await input.sendHeaderless(declared("p-nohdr"), topic: topics.erasureParticipants, key: "p-nohdr")
        try await input.sendRaw(
            "{not json", type: ParticipantDeclared.eventType, topic: topics.erasureParticipants, key: "p-broken")
    }

    /// Statuses on one key (one partition): headerless, poison, then a good one behind them. Requests on one key:
    /// headerless, no tenant and no tenant with the app, an empty tenantId, then a good one.
    private func sendStatusesAndRequests(_ input: BadInput) async throws {
        let (producer, topics) = (input.producer, input.topics)
        let key = "app-1:acc-bad"
        try await input.sendHeaderless(closedStatus("acc-bad", tenants: ["t-ok"]), topic: topics.pdrStatus, key: key)
        try await producer.send(closedStatus("acc-bad", tenants: ["t-poison"]), topic: topics.pdrStatus, key: key)
        try await producer.send(closedStatus("acc-bad", tenants: ["t-ok"]), topic: topics.pdrStatus, key: key)
        let requestKey = "app-1:acc-req"
        try await input.sendHeaderless(
            ErasureRequested(requestId: "r-1", appId: "app-1", accountId: "acc-req", tenantId: "t-long", cause: .tenantRequest),
            topic: topics.erasureRequests, key: requestKey)
        try await producer.send(
            ErasureRequested(requestId: "r-2", appId: "app-nobody", accountId: "acc-req", cause: .tenantRequest),
            topic: topics.erasureRequests, key: "app-nobody:acc-req")
        try await producer.send(
            ErasureRequested(requestId: "r-3", appId: "app-1", accountId: "acc-req", tenantId: "", cause: .tenantRequest),
            topic: topics.erasureRequests, key: requestKey)
        try await producer.send(
            ErasureRequested(requestId: "r-4", appId: "app-1", accountId: "acc-req", tenantId: "t-long", cause: .tenantRequest),
            topic: topics.erasureRequests, key: requestKey)
    }

    /// Acks: one without headers, one claiming `waived` (which only the executor records).
    private func sendAcks(_ input: BadInput, for erasureId: String) async throws {
        let topics = input.topics
        try await input.sendHeaderless(ack(erasureId, "p-ok", .erased), topic: topics.erasureAcks, key: erasureId)
        try await input.sendRaw(
            #"{"schemaVersion":"1.0","erasureId":"\#(erasureId)","participant":"p-broken","outcome":"waived","at":"2026-01-01T00:00:00.000Z"}"#,
            type: ErasureAcknowledged.eventType, topic: topics.erasureAcks, key: erasureId)
    }

    /// The good tenant's erasure is open with every participant, the poisoned tenant has none, deadlineDays above 30
    /// is capped, and the tenants without headers or with 0 days are unknown. Returns the good tenant's erasure.
    private func expectTheRecordsBehindTheBadOnesApplied(_ ledger: ErasureLedger) async throws -> ErasureRecord {
        let applied = await eventually(timeout: .seconds(90), every: .milliseconds(200)) {
            let ok = (try? await records(of: ledger, tenant: "t-ok")) ?? []
            let long = (try? await records(of: ledger, tenant: "t-long")) ?? []
            return ok.count == 1 && long.count == 1
        }
        try #require(applied, "the records behind the bad ones were not applied")
        let ok = try #require(try await records(of: ledger, tenant: "t-ok").first)
        #expect(ok.policy == .scrub)
        #expect(ok.participants.map(\.participant) == ["p-broken", "p-nohdr", "p-ok"],
                "a participant whose declaration could not be read was dropped")
        #expect(try await records(of: ledger, tenant: "t-poison").isEmpty)
        let long = try #require(try await records(of: ledger, tenant: "t-long").first)
        #expect(try await ledger.deadlineDays(ofTenant: "t-long") == 30)
        let days = long.deadline.timeIntervalSince(long.createdAt) / 86_400
        #expect(abs(days - 30) < 0.01, "deadlineDays above 30 was not capped: \(days)")
        #expect(try await ledger.apps(ofTenant: "t-nohdr") == nil)
        #expect(try await ledger.apps(ofTenant: "t-zero") == nil)
        return ok
    }

    /// Each topic's DLQ holds its bad records, each with the reason it was refused.
    private func expectEveryTopicsDeadLetterReasons(_ topics: LetheTopics) async throws {
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
    }

    // MARK: Upgrade instead of a second erasure

    @Test("""
        closed for a subject with an open refresh-failed erasure upgrades it: one erasure, re-sent with cause \
        atlassian-closed, completed once every participant acknowledged it, audited and published with the final cause
        """)
    func closedUpgradesTheOpenRefreshFailedErasure() async throws {
        let accountId = "557058:upgrade-\(UUID().uuidString.prefix(6))"
        let held: [String: TestParticipantHandler.Held] = ["t-up/\(accountId)": .init(name: "n", email: "e")]
        let fastHandler = TestParticipantHandler(held: held)
        let slowHandler = TestParticipantHandler(held: held)
        var running: [RunningGroup] = []
        try await inWorld("ee15-upgrade") { world in
            let (topics, producer) = (world.topics, world.producer)
            try await producer.send(tenant("t-up", .disassociate), topic: topics.tenants, key: "t-up")
            try await producer.send(declared("slow"), topic: topics.erasureParticipants, key: "slow")
            let parts = try await world.build()
            world.start(parts)
            try world.startParticipant("fast", handler: fastHandler)
            let id = try await openARefreshFailedErasure(
                ledger: parts.ledger, producer: producer, topics: topics, accountId: accountId)

            // Then Atlassian answers closed for the same account.
            try await producer.send(
                closedStatus(accountId, tenants: ["t-up"]), topic: topics.pdrStatus, key: "app-1:\(accountId)")
            let upgraded = await eventually(timeout: .seconds(60), every: .milliseconds(100)) {
                (try? await parts.ledger.erasure(id))?.cause == .atlassianClosed
            }
            #expect(upgraded, "the open erasure was not upgraded to atlassian-closed")
            try world.startParticipant("slow", handler: slowHandler)
            try await expectTheUpgradedErasureCompleted(
                id, ledger: parts.ledger, fast: fastHandler, slow: slowHandler)
            try await expectTheClosedCommandAndReceipt(id, ledger: parts.ledger, topics: topics)
        }
    }

    /// The gateway lost the grant: refresh-failed, scrub, for this tenant; "fast" scrubs. Returns the erasure's id.
    private func openARefreshFailedErasure(
        ledger: ErasureLedger, producer: KafkaProducer, topics: LetheTopics, accountId: String
    ) async throws -> String {
        try await producer.send(
            ErasureRequested(
                requestId: UUID().uuidString, appId: "app-1", accountId: accountId, tenantId: "t-up",
                cause: .refreshFailed, policy: .scrub),
            topic: topics.erasureRequests, key: "app-1:\(accountId)")
        let fastAcked = await eventually(timeout: .seconds(60), every: .milliseconds(100)) {
            let record = try? await records(of: ledger, tenant: "t-up").first
            return record?.participants.first { $0.participant == "fast" }?.outcome == .scrubbed
        }
        try #require(fastAcked, "the refresh-failed erasure did not reach the running participant")
        return try #require(try await records(of: ledger, tenant: "t-up").first?.id)
    }

    /// One erasure, requested twice, kept at scrub, completed once both participants applied the closed command;
    /// audited with the final cause.
    private func expectTheUpgradedErasureCompleted(
        _ id: String, ledger: ErasureLedger, fast: TestParticipantHandler, slow: TestParticipantHandler
    ) async throws {
        let completed = await eventually(timeout: .seconds(60), every: .milliseconds(100)) {
            (try? await ledger.erasure(id))?.status == .completed
        }
        #expect(completed, "the upgraded erasure did not complete")
        let all = try await records(of: ledger, tenant: "t-up")
        #expect(all.count == 1, "a second erasure was opened instead of the upgrade")
        #expect(all.first?.requests == 2 && all.first?.policy == .scrub)
        // The participant down until after the upgrade finds the refresh-failed command first on the topic: it
        // must still apply the closed one (a new command id), and only that ack counts.
        #expect(await slow.applied.map(\.cause).contains(.atlassianClosed),
                "the participant that came after the upgrade was not told the account is closed")
        #expect(await fast.applied.map(\.cause) == [.refreshFailed, .atlassianClosed],
                "the participant that acked the refresh-failed command did not apply the closed one")
        let entry = try #require(try await ledger.auditEntries().first { $0.erasureId == id })
        #expect(entry.cause == .atlassianClosed)
        #expect(try await ledger.verifyAudit().ok)
    }

    /// On the topics: the closed command under its new command id, and one receipt with the final cause.
    private func expectTheClosedCommandAndReceipt(
        _ id: String, ledger: ErasureLedger, topics: LetheTopics
    ) async throws {
        let commands = try await readUntil(kafka, topic: topics.erasureCommands) { messages in
            messages.contains { (try? $0.decodeEvent(EraseSubject.self))?.cause == .atlassianClosed }
        }.map { try $0.decodeEvent(EraseSubject.self) }
        let commandId = try #require(try await ledger.erasure(id)?.commandId)
        #expect(Set(commands.map(\.erasureId)) == [id, commandId])
        #expect(commands.filter { $0.erasureId == commandId }.allSatisfy { $0.cause == .atlassianClosed })
        let receipt = try await readUntil(kafka, topic: topics.erasureCompleted) { $0.count >= 1 }
            .map { try $0.decodeEvent(ErasureCompleted.self) }
        #expect(receipt.map(\.cause) == [.atlassianClosed])
    }
}

/// How ``ErasureExecutorOrderingTests/badInputIsDeadLetteredAndThePartitionMovesOn()`` puts its records on the
/// topics: as events (the producer's), as bodies without headers, as raw bodies with headers.
private struct BadInput {
    let producer: KafkaProducer
    let topics: LetheTopics

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
}
