import Contracts
import Crypto
import ErasureKit
import Foundation
import Logging
import Messaging
import Prometheus
import ServiceKit
import ServiceLifecycle
import Storage
import Testing
import TestSupport

@testable import erasure_executor

/// A participant's data and handler: it holds a name and an email per account (the personal data the executor must
/// never see) per tenant and account, applies the policy, and records each result under the erasure id as ErasureKit requires.
actor TestParticipantHandler: ErasureHandler {
    struct Held: Sendable {
        var name: String
        var email: String
    }

    private(set) var held: [String: Held]
    private var recorded: [String: ErasureResult] = [:]
    private(set) var applied: [EraseSubject] = []

    init(held: [String: Held]) { self.held = held }

    func recordedResult(of erasureId: String) -> ErasureResult? { recorded[erasureId] }

    func apply(_ command: EraseSubject) -> ErasureResult {
        let outcome: ErasureOutcome =
            if held.removeValue(forKey: "\(command.tenantId)/\(command.accountId)") == nil { .nothingHeld }
            else {
                switch command.policy {
                case .delete: .erased
                case .scrub: .scrubbed
                case .disassociate: .disassociated
                }
            }
        let result = ErasureResult(outcome: outcome)
        recorded[command.erasureId] = result
        applied.append(command)
        return result
    }
}

@Suite("erasure-executor against the dev broker, with ErasureKit participants in-process")
struct ErasureExecutorServiceTests {
    let kafka: KafkaFixture

    init() throws { kafka = try KafkaFixture("erasure-executor") }

    func participant(
        _ name: String, handler: TestParticipantHandler, namespace: String, topics: LetheTopics
    ) throws -> RunningGroup {
        try testParticipant(name, handler: handler, kafka: kafka, namespace: namespace, topics: topics)
    }

    @Test("""
        duplicate closed events make one erasure per tenant with its policy; it is re-sent to the participant that is \
        down and completes only when it comes back; audit verifies; no PII and no raw accountId is left
        """)
    func closedToCompletedWithALateParticipant() async throws {
        let directory = try TemporaryDirectory()
        let namespace = uniqueName("ee")
        let built = try await TestExecutor.build(kafka: kafka, namespace: namespace, directory: directory)
        let (topics, parts) = (built.topics, built.parts)
        let executor = RunningGroup(parts.group)
        let producer = try kafka.makeProducer()
        let producing = RunningGroup([producer], logger: kafka.logger)
        let ada = PlantedPersonalData(
            accountId: "557058:ada-\(UUID().uuidString.prefix(6))", name: "Ada Lovelace",
            email: "ada.lovelace@example.com")
        let heldData: [String: TestParticipantHandler.Held] = [
            "tenant-a/\(ada.accountId)": .init(name: ada.name, email: ada.email),
            "tenant-b/\(ada.accountId)": .init(name: ada.name, email: ada.email),
        ]
        let fastHandler = TestParticipantHandler(held: heldData)
        let lateHandler = TestParticipantHandler(held: heldData)
        var late: RunningGroup?
        let fast = try participant("fast", handler: fastHandler, namespace: namespace, topics: topics)
        do {
            try await configureTwoTenantsAndALateParticipant(ledger: parts.ledger, producer: producer, topics: topics)
            try await publishClosedStatuses(producer: producer, topics: topics, accountId: ada.accountId)
            try await expectOneErasurePerTenantWaitingForLate(ledger: parts.ledger)

            late = try participant("late", handler: lateHandler, namespace: namespace, topics: topics)
            try await expectBothCompletedAndAudited(ledger: parts.ledger, fast: fastHandler, late: lateHandler)
            try await expectNoPersonalDataInTheFile(ledger: parts.ledger, ada: ada)
            try await expectIdsOnlyOnTheTopics(topics: topics, ada: ada)
        } catch {
            Issue.record(error)
        }
        await late?.stop()
        await fast.stop()
        await producing.stop()
        await executor.stop()
    }
}

/// The phases of ``ErasureExecutorServiceTests/closedToCompletedWithALateParticipant()``, in order.
extension ErasureExecutorServiceTests {
    /// tenant-a deletes, tenant-b scrubs, and "late" is declared; waits until the executor restored both
    /// participants and the tenants.
    private func configureTwoTenantsAndALateParticipant(
        ledger: ErasureLedger, producer: KafkaProducer, topics: LetheTopics
    ) async throws {
        try await producer.send(tenant("tenant-a", .delete), topic: topics.tenants, key: "tenant-a")
        try await producer.send(tenant("tenant-b", .scrub), topic: topics.tenants, key: "tenant-b")
        // "late" declared itself earlier and is down now.
        try await producer.send(declared("late"), topic: topics.erasureParticipants, key: "late")
        let ready = await eventually(timeout: .seconds(60)) {
            let participants = try? await ledger.participants()
            let apps = try? await ledger.apps(ofTenant: "tenant-b")
            return participants == ["fast", "late"] && apps != nil
        }
        try #require(ready, "participants and tenants were not restored")
    }

    /// A record that is not JSON, a closed status without headers, and the closed status twice.
    private func publishClosedStatuses(producer: KafkaProducer, topics: LetheTopics, accountId: String) async throws {
        let key = "app-1:\(accountId)"
        let status = AccountStatusReported(
            appId: "app-1", accountId: accountId, tenantIds: ["tenant-a", "tenant-b"], status: .closed,
            reportedAt: Date())
        try await producer.send(OutgoingMessage(topic: topics.pdrStatus, key: key, value: Array("{x".utf8)))
        // A well-formed closed status without the CloudEvents headers: not an event of the contract, so it opens
        // no erasure (tenant-a must end with one) and goes to the DLQ with its reason.
        let headerless = AccountStatusReported(
            appId: "app-1", accountId: "headerless-account", tenantIds: ["tenant-a"], status: .closed,
            reportedAt: Date())
        try await producer.send(OutgoingMessage(
            topic: topics.pdrStatus, key: "app-1:headerless-account", value: Array(try EventCodec.encode(headerless))))
        try await producer.send(status, topic: topics.pdrStatus, key: key)
        try await producer.send(status, topic: topics.pdrStatus, key: key)
    }

    /// Re-sends to "late" become visible while "fast" has acked; one erasure per tenant, with its policy, still open.
    private func expectOneErasurePerTenantWaitingForLate(ledger: ErasureLedger) async throws {
        let resent = await eventually(timeout: .seconds(60), every: .milliseconds(200)) {
            let page = try? await ledger.erasures(tenantId: "tenant-a", status: nil, after: nil, limit: 10)
            guard let record = page?.records.first else { return false }
            let lateState = record.participants.first { $0.participant == "late" }
            let fastState = record.participants.first { $0.participant == "fast" }
            return fastState?.outcome == .erased && (lateState?.sends ?? 0) >= 3
        }
        #expect(resent, "no re-sends to the missing participant")
        let a = try await ledger.erasures(tenantId: "tenant-a", status: nil, after: nil, limit: 10).records
        let b = try await ledger.erasures(tenantId: "tenant-b", status: nil, after: nil, limit: 10).records
        #expect(a.count == 1 && b.count == 1, "duplicate closed events must make one erasure per tenant")
        #expect(a.first?.policy == .delete && b.first?.policy == .scrub)
        #expect(a.first?.status == .dispatched, "it must not complete while a participant is missing")
        #expect(a.first?.requests == 2)
    }

    /// With "late" back both erasures complete; both participants hold nothing; the audit verifies.
    private func expectBothCompletedAndAudited(
        ledger: ErasureLedger, fast: TestParticipantHandler, late: TestParticipantHandler
    ) async throws {
        let completed = await eventually(timeout: .seconds(60), every: .milliseconds(200)) {
            (try? await ledger.counts().byStatus[.completed]) == 2
        }
        #expect(completed, "the erasures did not complete after the late participant came back")
        let lateHeld = await late.held
        let fastHeld = await fast.held
        #expect(lateHeld.isEmpty && fastHeld.isEmpty)

        let verification = try await ledger.verifyAudit()
        #expect(verification.ok && verification.entries == 2)
        let records = try await ledger.erasures(tenantId: "tenant-b", status: .completed, after: nil, limit: 5)
        #expect(records.records.first?.accountId == nil)
        #expect(records.records.first?.participants.map(\.outcome) == [.scrubbed, .scrubbed])
        let deleted = try await ledger.erasures(tenantId: "tenant-a", status: .completed, after: nil, limit: 5)
        #expect(deleted.records.first?.participants.map(\.outcome) == [.erased, .erased])
    }

    /// The executor's file: no name or email anywhere in the bytes, no raw accountId in any table.
    private func expectNoPersonalDataInTheFile(ledger: ErasureLedger, ada: PlantedPersonalData) async throws {
        let stored = try await ledger.allStoredText()
        #expect(!stored.contains(ada.accountId), "a raw accountId outlived its erasures")
        expectNoNameOrEmail(ada, inFilesOf: ledger)
        // Nor in the files' bytes: secure_delete zeroes it in the database file, and the checkpoint the
        // completions asked for empties the WAL of the page images from before them.
        let accountIdGone = await eventually(timeout: .seconds(10)) {
            !sqliteFilesContain(ledger.database.path, ada.accountId)
        }
        #expect(accountIdGone, "the raw accountId stayed in the executor's database or WAL file")
    }

    /// The topics: ids only; the completion carries the HMAC subject, not the accountId; both bad records are on the
    /// DLQ, the headerless one with its reason.
    private func expectIdsOnlyOnTheTopics(topics: LetheTopics, ada: PlantedPersonalData) async throws {
        let commands = try await readUntil(kafka, topic: topics.erasureCommands) { $0.count >= 4 }
        let acks = try await readUntil(kafka, topic: topics.erasureAcks) { $0.count >= 4 }
        let completions = try await readUntil(kafka, topic: topics.erasureCompleted) { $0.count >= 2 }
        for message in commands + acks + completions {
            let text = String(decoding: message.value ?? [], as: UTF8.self)
            #expect(!text.contains(ada.name) && !text.contains(ada.email))
        }
        #expect(Set(try commands.map { try $0.decodeEvent(EraseSubject.self).erasureId }).count == 2)
        // Each erasure's id is drawn for its subject's partition: its acks land where its command did.
        var commandPartitions: [String: Int32] = [:]
        for command in commands { commandPartitions[try command.decodeEvent(EraseSubject.self).erasureId] = command.partition }
        for ack in acks {
            #expect(commandPartitions[try ack.decodeEvent(ErasureAcknowledged.self).erasureId] == ack.partition)
        }
        let receipts = try completions.map { try $0.decodeEvent(ErasureCompleted.self) }
        #expect(Set(receipts.map(\.tenantId)) == ["tenant-a", "tenant-b"])
        #expect(receipts.allSatisfy { $0.subject == AuditKeysFixture.subject("app-1:\(ada.accountId)") })
        #expect(completions.allSatisfy { !String(decoding: $0.value ?? [], as: UTF8.self).contains(ada.accountId) })
        let dead = try await readUntil(kafka, topic: DeadLetterQueue.topic(for: topics.pdrStatus)) { $0.count >= 2 }
        #expect(dead.first?.header(DeadLetterQueue.errorHeader) != nil)
        #expect(dead.contains { $0.header(DeadLetterQueue.errorHeader)?.stringValue?.contains("ce_specversion") == true },
                "the headerless closed status is not on the DLQ with its reason")
    }
}

extension ErasureExecutorServiceTests {
    @Test("""
        ErasureRequested without a tenant reaches every tenant using the app; refresh-failed is at least scrub; a \
        redelivered request changes nothing; a request without an id goes to the DLQ
        """)
    func requestsFromTheTopic() async throws {
        let directory = try TemporaryDirectory()
        let namespace = uniqueName("ee-req")
        let built = try await TestExecutor.build(kafka: kafka, namespace: namespace, directory: directory)
        let (topics, parts) = (built.topics, built.parts)
        let executor = RunningGroup(parts.group)
        let producer = try kafka.makeProducer()
        let producing = RunningGroup([producer], logger: kafka.logger)
        do {
            func send(_ event: some LetheEvent, topic: String, key: String) async throws {
                try await producer.send(try OutgoingMessage(event: event, topic: topic, key: key, source: "test"))
            }
            try await send(tenant("tenant-c", .disassociate, apps: ["app-1"]), topic: topics.tenants, key: "tenant-c")
            try await send(tenant("tenant-d", .delete, apps: ["app-2"]), topic: topics.tenants, key: "tenant-d")
            let ready = await eventually(timeout: .seconds(60)) {
                let apps = try? await parts.ledger.apps(ofTenant: "tenant-d")
                return apps == ["app-2"]
            }
            try #require(ready, "tenants were not restored")
            let request = ErasureRequested(
                requestId: "req-1", appId: "app-1", accountId: "acc-r", cause: .refreshFailed)
            try await send(request, topic: topics.erasureRequests, key: "app-1:acc-r")
            try await send(request, topic: topics.erasureRequests, key: "app-1:acc-r")
            var bad = request
            bad.requestId = ""
            try await send(bad, topic: topics.erasureRequests, key: "app-1:acc-r")
            let dead = try await readUntil(kafka, topic: DeadLetterQueue.topic(for: topics.erasureRequests)) {
                $0.count >= 1
            }
            #expect(dead.first?.header(DeadLetterQueue.errorHeader)?.stringValue?.contains("requestId") == true)
            // The DLQ record comes after both copies on the same partition: both were processed by now.
            let c = try await parts.ledger.erasures(tenantId: "tenant-c", status: nil, after: nil, limit: 10).records
            let d = try await parts.ledger.erasures(tenantId: "tenant-d", status: nil, after: nil, limit: 10).records
            #expect(c.count == 1 && d.isEmpty)
            #expect(c.first?.policy == .scrub && c.first?.cause == .refreshFailed)
            #expect(c.first?.requests == 1, "the redelivered request must not count again")
            #expect(c.first?.status == .pending, "no participant declared: pending")
        } catch {
            Issue.record(error)
        }
        await producing.stop()
        await executor.stop()
    }
}

/// The subject the executor must compute, from the test's audit key.
enum AuditKeysFixture {
    static func subject(_ key: String) -> String {
        HMAC<SHA256>.authenticationCode(for: Data(key.utf8), using: SymmetricKey(data: Data(testAuditKey.utf8)))
            .map { String(format: "%02x", $0) }.joined()
    }
}

/// An in-process ErasureKit participant with its own producer, in its own consumer group, running until stopped.
func testParticipant(
    _ name: String, handler: any ErasureHandler, kafka: KafkaFixture, namespace: String, topics: LetheTopics,
    holds: [String] = ["name", "email"]
) throws -> RunningGroup {
    let producer = try kafka.makeProducer()
    let participant = try ErasureParticipant(
        config: ErasureParticipantConfig(
            participant: name, holds: holds, groupId: "\(namespace).erasure.\(name)",
            commandsTopic: topics.erasureCommands, acksTopic: topics.erasureAcks,
            participantsTopic: topics.erasureParticipants, sessionTimeout: .seconds(6)),
        handler: handler, producer: producer, bootstrapServers: kafka.bootstrapServers, logger: kafka.logger)
    return RunningGroup([producer, participant], logger: kafka.logger)
}
