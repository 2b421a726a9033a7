import Contracts
import Crypto
import Foundation
import GRDB
import Messaging
import Storage
import Testing
import TestSupport

@testable import erasure_executor

@Suite("The erasure ledger on a real SQLite file")
struct ErasureLedgerTests {
    @Test("repeats of one (tenant, app, account) join the open erasure; a redelivered event changes nothing")
    func repeatsJoinTheOpenErasure() async throws {
        let directory = try TemporaryDirectory()
        let ledger = try makeLedger(in: directory)
        try await ledger.declareParticipant(declared("p1"))
        let first = try #require(try await ledger.intake([closed("t1", "acc-1")], eventId: "e1"))
        let again = try #require(try await ledger.intake([closed("t1", "acc-1")], eventId: "e2"))
        #expect(first == again)
        #expect(try await ledger.intake([closed("t1", "acc-1")], eventId: "e1") == nil)
        let other = try #require(try await ledger.intake([closed("t2", "acc-1")], eventId: "e3"))
        #expect(other != first)
        let record = try #require(try await ledger.erasure(first[0]))
        #expect(record.requests == 2 && record.status == .dispatched && record.accountId == "acc-1")
        #expect(try await ledger.commands().count == 2, "one command per erasure, none for the joining repeat")
    }

    @Test("policy comes from the tenant; requests only make it stricter; refresh-failed is at least scrub")
    func policyPerTenant() async throws {
        let directory = try TemporaryDirectory()
        let ledger = try makeLedger(in: directory)
        try await ledger.configureTenant(tenant("strict", .delete))
        try await ledger.configureTenant(tenant("lenient", .disassociate))
        func policy(_ request: IntakeRequest) async throws -> ErasurePolicy? {
            let ids = try await ledger.intake([request])
            return try await ledger.erasure(ids![0])?.policy
        }
        #expect(try await policy(closed("strict", "a1")) == .delete)
        #expect(try await policy(closed("lenient", "a2")) == .disassociate)
        #expect(try await policy(closed("lenient", "a3", cause: .refreshFailed)) == .scrub)
        #expect(try await policy(closed("lenient", "a4", cause: .refreshFailed, policy: .disassociate)) == .scrub)
        #expect(try await policy(closed("lenient", "a5", cause: .tenantRequest, policy: .delete)) == .delete)
        #expect(try await policy(closed("strict", "a6", cause: .tenantRequest, policy: .disassociate)) == .delete)
        #expect(try await policy(closed("unknown-tenant", "a7")) == .delete)
    }

    @Test("pending until a participant is declared; the sweep then dispatches with the participants of that moment")
    func pendingUntilParticipants() async throws {
        let directory = try TemporaryDirectory()
        let ledger = try makeLedger(in: directory)
        let id = try #require(try await ledger.intake([closed("t1", "acc-1")]))[0]
        #expect(try await ledger.erasure(id)?.status == .pending)
        #expect(try await ledger.commands().isEmpty)
        try await ledger.declareParticipant(declared("p1"))
        try await ledger.declareParticipant(declared("p2"))
        #expect(try await ledger.sweep().dispatched == 1)
        let record = try #require(try await ledger.erasure(id))
        #expect(record.status == .dispatched)
        #expect(record.participants.map(\.participant) == ["p1", "p2"])
        let commands = try await ledger.commands()
        #expect(commands.map(\.erasureId) == [id] && commands[0].accountId == "acc-1")
    }

    @Test("missing acks are re-sent with a doubling backoff; acked participants are not waited for")
    func resendBackoff() async throws {
        let directory = try TemporaryDirectory()
        let ledger = try makeLedger(in: directory, resendAfter: 10)
        try await ledger.declareParticipant(declared("fast"))
        try await ledger.declareParticipant(declared("slow"))
        let start = Date()
        let id = try #require(try await ledger.intake([closed("t1", "acc-1")], at: start))[0]
        _ = try await ledger.applyAck(ack(id, "fast", .erased), at: start)
        #expect(try await ledger.sweep(at: start.addingTimeInterval(9)).resent == 0)
        #expect(try await ledger.sweep(at: start.addingTimeInterval(10)).resent == 1)
        // Second wait is 2 × 10 s after the re-send.
        #expect(try await ledger.sweep(at: start.addingTimeInterval(29)).resent == 0)
        #expect(try await ledger.sweep(at: start.addingTimeInterval(30)).resent == 1)
        let record = try #require(try await ledger.erasure(id))
        #expect(record.participants.first { $0.participant == "slow" }?.sends == 3)
        #expect(record.participants.first { $0.participant == "fast" }?.sends == 1)
        #expect(try await ledger.commands().count == 3)
        #expect(record.status == .dispatched)
    }

    @Test("failed up to the limit needs attention and stops re-sends; retry re-runs it; then it completes")
    func failedThenRetry() async throws {
        let directory = try TemporaryDirectory()
        let ledger = try makeLedger(in: directory, resendAfter: 1, maxFailedAttempts: 2)
        try await ledger.declareParticipant(declared("flaky"))
        let start = Date()
        let id = try #require(try await ledger.intake([closed("t1", "acc-1")], at: start))[0]
        #expect(try await ledger.applyAck(ack(id, "flaky", .failed), at: start) == .recorded(latency: nil))
        #expect(try await ledger.erasure(id)?.status == .dispatched)
        #expect(try await ledger.sweep(at: start.addingTimeInterval(1)).resent == 1, "failed is re-sent")
        _ = try await ledger.applyAck(ack(id, "flaky", .failed), at: start.addingTimeInterval(2))
        #expect(try await ledger.erasure(id)?.status == .needsAttention)
        #expect(try await ledger.sweep(at: start.addingTimeInterval(1000)).resent == 0, "no re-sends once it needs attention")
        #expect(try await ledger.retry(id) == .retried)
        let retried = try #require(try await ledger.erasure(id))
        #expect(retried.status == .dispatched && retried.participants[0].failedAttempts == 0)
        #expect(try await ledger.commands().count == 3)
        if case .completed = try await ledger.applyAck(ack(id, "flaky", .erased)) {} else {
            Issue.record("the ack after the retry did not complete the erasure")
        }
        #expect(try await ledger.retry(id) == .alreadyCompleted)
        #expect(try await ledger.retry("nope") == .notFound)
    }

    @Test("past its deadline an open erasure is flagged overdue, once")
    func overdue() async throws {
        let directory = try TemporaryDirectory()
        let ledger = try makeLedger(in: directory, daySeconds: 1)
        try await ledger.configureTenant(tenant("t1", .scrub, days: 2))
        try await ledger.declareParticipant(declared("p1"))
        let start = Date()
        let id = try #require(try await ledger.intake([closed("t1", "acc-1")], at: start))[0]
        #expect(try await ledger.sweep(at: start.addingTimeInterval(1.9)).newlyOverdue == 0)
        #expect(try await ledger.sweep(at: start.addingTimeInterval(2)).newlyOverdue == 1)
        #expect(try await ledger.sweep(at: start.addingTimeInterval(3)).newlyOverdue == 0)
        #expect(try await ledger.erasure(id)?.overdue == true)
        #expect(try await ledger.counts().overdue == 1)
    }

    @Test("completion: audited with an HMAC subject, raw accountId gone (from the processed event id too), ErasureCompleted with the receipt")
    func completionAuditsAndForgets() async throws {
        let directory = try TemporaryDirectory()
        let ledger = try makeLedger(in: directory)
        try await ledger.declareParticipant(declared("p1"))
        try await ledger.declareParticipant(declared("p2"))
        // The reporter's status ids name the account.
        let eventId = "status:status:app-1:acc-secret-1:1790000000000"
        let id = try #require(try await ledger.intake([closed("t1", "acc-secret-1")], eventId: eventId))[0]
        #expect(try await ledger.intake([closed("t1", "acc-secret-1")], eventId: eventId) == nil, "a redelivery")
        #expect(try await ledger.applyAck(ack(id, "p1", .erased)) != .ignored)
        #expect(try await ledger.applyAck(ack(id, "p1", .failed)) == .ignored, "a recorded success stands")
        #expect(try await ledger.applyAck(ack(id, "stranger", .erased)) == .ignored)
        #expect(try await ledger.erasure(id)?.status == .dispatched)
        if case .completed = try await ledger.applyAck(ack(id, "p2", .nothingHeld)) {} else {
            Issue.record("the last ack did not complete the erasure")
        }
        let record = try #require(try await ledger.erasure(id))
        #expect(record.status == .completed && record.accountId == nil && record.completedAt != nil)
        let expectedSubject = HMAC<SHA256>.authenticationCode(
            for: Data("app-1:acc-secret-1".utf8), using: SymmetricKey(data: Data(testAuditKey.utf8))
        ).map { String(format: "%02x", $0) }.joined()
        let completed = try #require(try await ledger.completions().first)
        #expect(completed.subject == expectedSubject && completed.erasureId == id)
        #expect(completed.outcomes.map(\.outcome) == [.erased, .nothingHeld])
        #expect(completed.receipt.sequence == 1 && completed.receipt.previousHash == AuditEntry.genesisHash)
        let stored = try await ledger.allStoredText()
        #expect(!stored.contains("acc-secret-1"), "the raw accountId outlived the erasure")
        #expect(stored.contains(expectedSubject))
        #expect(try await ledger.verifyAudit().ok)
    }

    @Test("a file with raw processed event ids (written before they were HMACs) is converted at open, and still recognises redeliveries")
    func rawEventIdsAreConvertedAtOpen() async throws {
        let directory = try TemporaryDirectory()
        let rawId = "status:status:app-1:acc-secret-2:1790000000000"
        do {
            let ledger = try makeLedger(in: directory)
            try await ledger.database.write { db in
                try db.execute(sql: """
                    INSERT INTO lethe_processed_events (consumer, event_id, outcome, processed_at)
                    VALUES ('intake', ?, '', 0)
                    """, arguments: [rawId])
            }
        }
        let reopened = try makeLedger(in: directory)
        #expect(!(try await reopened.allStoredText()).contains("acc-secret-2"), "the raw event id survived the open")
        try await reopened.declareParticipant(declared("p1"))
        #expect(try await reopened.intake([closed("t1", "acc-secret-2")], eventId: rawId) == nil,
                "the converted id no longer recognises the event")
    }

    @Test("one intake batch opens and completes several erasures: their audit entries chain in the order of the acks")
    func batchCompletionsChainInAckOrder() async throws {
        let directory = try TemporaryDirectory()
        let ledger = try makeLedger(in: directory)
        try await ledger.declareParticipant(declared("p1"))
        try await ledger.declareParticipant(declared("p2"))
        // A completion in an earlier transaction, so the batch must chain onto an existing tail.
        let first = try #require(try await ledger.intake([closed("t1", "acc-0")]))[0]
        _ = try await ledger.applyAck(ack(first, "p1", .erased))
        _ = try await ledger.applyAck(ack(first, "p2", .erased))
        let opened = try await ledger.apply((1...3).map {
            .open([closed("t1", "acc-\($0)")], eventId: "status-\($0)")
        })
        #expect(opened == [.opened(1), .opened(1), .opened(1)])
        let ids = try await ledger.commands().map(\.erasureId).filter { $0 != first }
        #expect(ids.count == 3)
        // Acks in one batch, completing the erasures in the order 3, 1, 2.
        let order = [ids[2], ids[0], ids[1]]
        var acks: [ErasureLedger.IntakeWork] = ids.map { .ack(ack($0, "p1", .erased)) }
        acks += order.map { .ack(ack($0, "p2", .nothingHeld)) }
        let effects = try await ledger.apply(acks)
        #expect(effects.suffix(3).allSatisfy { if case .ack(.completed) = $0 { true } else { false } })
        let entries = try await ledger.auditEntries()
        #expect(entries.map(\.sequence) == [1, 2, 3, 4])
        #expect(entries.map(\.erasureId) == [first] + order)
        for (previous, entry) in zip(entries, entries.dropFirst()) {
            #expect(entry.previousHash == previous.entryHash)
        }
        #expect(try await ledger.completions().map(\.receipt.sequence) == [1, 2, 3, 4])
        #expect(try await ledger.verifyAudit().ok)
    }

    @Test("erasure ids are version 7 UUIDs, ordered by the time they were opened")
    func erasureIdsAreTimeOrdered() async throws {
        let directory = try TemporaryDirectory()
        let ledger = try makeLedger(in: directory)
        let start = Date(timeIntervalSince1970: 1_800_000_000)
        var ids: [String] = []
        for index in 0..<20 {
            ids += try #require(try await ledger.intake(
                [closed("t1", "acc-\(index)")], at: start.addingTimeInterval(Double(index) * 0.002)))
        }
        #expect(ids == ids.sorted(), "ids of later erasures sort later")
        #expect(Set(ids).count == ids.count)
        for id in ids {
            let uuid = try #require(UUID(uuidString: id), "not a UUID: \(id)")
            #expect(id == uuid.uuidString.lowercased())
            #expect(Array(id)[14] == "7", "version 7")
            #expect("89ab".contains(Array(id)[19]), "RFC 9562 variant")
        }
        // The first 48 bits are the opening time in milliseconds.
        let millis = UInt64(ids[0].replacingOccurrences(of: "-", with: "").prefix(12), radix: 16)
        #expect(millis == 1_800_000_000_000)
    }

    @Test("""
        an erasure's id, and the command id of one upgraded to closed, land on its subject's partition under Kafka's \
        partitioner, so its acks and changelog records share the partition of its statuses and commands
        """)
    func erasureIdsLandOnTheirSubjectsPartition() async throws {
        let directory = try TemporaryDirectory()
        let ledger = try makeLedger(in: directory, partitions: 12)
        try await ledger.configureTenant(tenant("t1", .delete))
        try await ledger.declareParticipant(declared("p1"))
        var subjects: [String: String] = [:]  // erasure or command id → appId:accountId
        for index in 0..<60 {
            let id = try #require(try await ledger.intake(
                [closed("t1", "acc-\(index)", cause: .refreshFailed)], eventId: "r:\(index)"))[0]
            subjects[id] = "app-1:acc-\(index)"
        }
        for index in 0..<10 {
            let id = try #require(try await ledger.intake([closed("t1", "acc-\(index)")], eventId: "s:\(index)"))[0]
            subjects[try #require(try await ledger.erasure(id)?.commandId)] = "app-1:acc-\(index)"
        }
        #expect(subjects.count == 70)
        for (id, subject) in subjects {
            #expect(KeyPartitioner.partition(of: id, count: 12) == KeyPartitioner.partition(of: subject, count: 12))
        }
        #expect(Set(subjects.values.map { KeyPartitioner.partition(of: $0, count: 12) }).count > 6)
        #expect(try await ledger.commands().map(\.erasureId).sorted() == subjects.keys.sorted())
    }

    @Test("the audit chain verifies, and a tampered, removed or re-signed-elsewhere row is found as the first break")
    func auditChainDetectsTampering() async throws {
        let directory = try TemporaryDirectory()
        let ledger = try makeLedger(in: directory)
        try await ledger.declareParticipant(declared("p1"))
        for index in 1...4 {
            let id = try #require(try await ledger.intake([closed("t1", "acc-\(index)")]))[0]
            _ = try await ledger.applyAck(ack(id, "p1", .erased))
        }
        let good = try await ledger.verifyAudit()
        #expect(good.ok && good.entries == 4 && good.firstBrokenSequence == nil)
        let entries = try await ledger.auditEntries()
        #expect(zip(entries.dropFirst(), entries).allSatisfy { $0.previousHash == $1.entryHash })
        for entry in entries {
            #expect(try AuditKeys(auditKey: testAuditKey).isValid(signature: entry.signature, entryHash: entry.entryHash))
        }

        try await ledger.database.write { db in
            try db.execute(sql: "UPDATE audit_log SET policy = 'disassociate' WHERE sequence = 3")
        }
        let tampered = try await ledger.verifyAudit()
        #expect(!tampered.ok && tampered.firstBrokenSequence == 3)
        #expect(tampered.reason?.contains("entryHash") == true)

        // Re-hashing the altered row does not help: the signature no longer matches.
        try await ledger.database.write { db in
            let entry = try #require(try ledger.auditEntriesSync(db).first { $0.sequence == 3 })
            try db.execute(
                sql: "UPDATE audit_log SET entry_hash = ? WHERE sequence = 3", arguments: [entry.computedHash])
        }
        #expect(try await ledger.verifyAudit().firstBrokenSequence == 3)

        try await ledger.database.write { db in try db.execute(sql: "DELETE FROM audit_log WHERE sequence = 3") }
        let removed = try await ledger.verifyAudit()
        #expect(!removed.ok && removed.firstBrokenSequence == 4, "\(removed)")
    }

    @Test("""
        with several partitions each erasure's audit entry is in its partition's chain (from sequence 1, genesis \
        previousHash, lethe-audit-v2); every chain verifies on its own, the entries of the single chain written \
        before (lethe-audit-v1) too, and a break is named by its chain and sequence
        """)
    func oneAuditChainPerPartition() async throws {
        let directory = try TemporaryDirectory()
        let ledger = try makeLedger(in: directory, partitions: 4)
        let keys = try AuditKeys(auditKey: testAuditKey)
        // Two entries of the first format, as a file written before chains holds them.
        try await ledger.database.write { db in
            var previous = AuditEntry.genesisHash
            for sequence in 1...2 {
                var entry = AuditEntry(
                    sequence: sequence, erasureId: "old-\(sequence)", subject: "s\(sequence)", tenantId: "t1",
                    policy: .delete, cause: .atlassianClosed,
                    outcomes: [.init(participant: "p1", outcome: .erased, atMs: 1_700_000_000_000)],
                    completedAtMs: 1_700_000_000_000, previousHash: previous)
                entry.entryHash = entry.computedHash
                entry.signature = try keys.sign(entryHash: entry.entryHash)
                entry.keyId = keys.keyId
                try ErasureLedger.insert(entry, in: db)
                previous = entry.entryHash
            }
        }
        try await ledger.declareParticipant(declared("p1"))
        var ids: [String] = []
        for index in 1...24 {
            let id = try #require(try await ledger.intake([closed("t1", "acc-\(index)")]))[0]
            _ = try await ledger.applyAck(ack(id, "p1", .erased))
            ids.append(id)
        }
        let entries = try await ledger.auditEntries()
        let chained = entries.filter { $0.chain != nil }
        #expect(entries.count == 26 && chained.count == 24)
        for (chain, links) in Dictionary(grouping: chained, by: { $0.chain! }) {
            #expect(links.map(\.sequence) == Array(1...links.count), "chain \(chain)")
            #expect(links.first?.previousHash == AuditEntry.genesisHash)
            #expect(zip(links.dropFirst(), links).allSatisfy { $0.previousHash == $1.entryHash })
            #expect(links.allSatisfy {
                $0.format == "lethe-audit-v2" && Int(KeyPartitioner.partition(of: $0.erasureId, count: 4)) == chain
            })
        }
        let chains = Set(chained.compactMap(\.chain))
        #expect(chains.count > 1, "24 erasures over 4 partitions all in one chain: the test proves little")
        let receipts = try await ledger.completions().map(\.receipt)
        #expect(receipts.allSatisfy { $0.chain != nil })
        let good = try await ledger.verifyAudit()
        #expect(good.ok && good.entries == 26 && good.chains == chains.count + 1, "\(good)")

        let victim = try #require(chained.first { $0.sequence == 2 })
        try await ledger.database.write { db in
            try db.execute(
                sql: "UPDATE audit_log SET tenant_id = 'other' WHERE chain = ? AND sequence = 2",
                arguments: [victim.chain])
        }
        let broken = try await ledger.verifyAudit()
        #expect(!broken.ok && broken.firstBrokenChain == victim.chain && broken.firstBrokenSequence == 2, "\(broken)")
        try await ledger.database.write { db in
            try db.execute(sql: "UPDATE audit_log SET tenant_id = 'other' WHERE chain IS NULL AND sequence = 1")
        }
        let legacyBroken = try await ledger.verifyAudit()
        #expect(legacyBroken.firstBrokenChain == nil && legacyBroken.firstBrokenSequence == 1, "\(legacyBroken)")
    }
}

extension ErasureLedger {
    /// The entries, inside a transaction the test already holds.
    func auditEntriesSync(_ db: GRDB.Database) throws -> [AuditEntry] {
        try Row.fetchAll(db, sql: "SELECT * FROM audit_log ORDER BY ifnull(chain, -1), sequence").map(Self.auditEntry)
    }
}
