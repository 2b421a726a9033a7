import Contracts
import Foundation
import Messaging
import Testing
import TestSupport

@testable import erasure_executor

/// The executor's changelog (ErasureLedger+Changelog): what a ledger publishes, read back into an empty one — the
/// executor that lost its volume — continues every erasure and the audit chain.
@Suite("The executor's changelog, read back into an empty ledger")
struct ChangelogRestoreTests {
    /// The changelog records waiting in `ledger`'s outbox, in order: what the compacted topic would hold (a ledger
    /// keeps only each erasure's latest record).
    static func changelog(of ledger: ErasureLedger) async throws -> [ErasureLedger.ChangelogRecord] {
        try await ledger.outbox().filter { $0.topic == ledger.settings.stateTopic }.map { message in
            .erasure(try EventCodec.decode(ErasureState.self, from: Data(message.value!)))
        }
    }

    /// The retirements waiting in `ledger`'s outbox: published on the participants topic, keyed by the participant.
    static func retirements(of ledger: ErasureLedger) async throws -> [ParticipantRetired] {
        try await ledger.outbox().filter { $0.topic == ledger.settings.participantsTopic }.map { message in
            let event = try EventCodec.decode(ParticipantRetired.self, from: Data(message.value!))
            #expect(message.key.map { String(decoding: $0, as: UTF8.self) } == event.participant)
            return event
        }
    }

    static func erasureStates(_ records: [ErasureLedger.ChangelogRecord]) -> [String: ErasureState] {
        var states: [String: ErasureState] = [:]
        for case .erasure(let state) in records { states[state.erasureId] = state }
        return states
    }

    /// Three erasures on ledger `a`: one completed (audited), two open with one participant waived by a retirement,
    /// one of them with one acknowledgement. Returns their ids.
    static func history(on a: ErasureLedger) async throws -> [String] {
        try await a.configureTenant(tenant("t1", .delete))
        try await a.declareParticipant(declared("p1"))
        try await a.declareParticipant(declared("p2"))
        let ids = try #require(try await a.intake([closed("t1", "acc-1"), closed("t1", "acc-2"), closed("t1", "acc-3")]))
        _ = try await a.sweep()
        _ = try await a.applyAck(ack(ids[0], "p1", .erased))
        _ = try await a.applyAck(ack(ids[0], "p2", .nothingHeld))
        try await a.declareParticipant(declared("gone"))
        _ = try await a.retire("gone", reason: "decommissioned")
        _ = try await a.applyAck(ack(ids[1], "p1", .erased))
        return ids
    }

    @Test("an empty ledger fed the changelog has every erasure as it was, the audit chain and the retirement")
    func restoreRebuildsTheLedger() async throws {
        let (first, second) = (try TemporaryDirectory(), try TemporaryDirectory())
        let a = try makeLedger(in: first)
        let ids = try await Self.history(on: a)
        let records = try await Self.changelog(of: a)
        #expect(Self.erasureStates(records).count == 3)
        #expect(Self.erasureStates(records)[ids[0]]?.accountId == nil, "a completed erasure's record has no accountId")
        #expect(Self.erasureStates(records)[ids[0]]?.audit?.receipt.sequence == 1)
        // The waiver is in the open erasure's record; the acknowledgement that came after it is not (it is asked again).
        let open = try #require(Self.erasureStates(records)[ids[1]])
        #expect(open.participants.first { $0.participant == "gone" }?.outcome == .waived)
        #expect(open.participants.first { $0.participant == "p1" }?.outcome == nil)

        let b = try makeLedger(in: second)
        try await b.configureTenant(tenant("t1", .delete))
        try await b.declareParticipant(declared("p1"))
        try await b.declareParticipant(declared("p2"))
        let restored = try await b.restore(records)
        #expect(restored == ErasureLedger.ChangelogRestored(erasures: 3, retirements: 0, refused: 0))
        // The retirement comes from the participants topic, as every replica reads it: recorded, not published again.
        let retired = try await Self.retirements(of: a)
        #expect(retired.map(\.participant) == ["gone"] && retired.first?.waived == 2)
        #expect(try await b.applyState(retired.map { .retired($0) }, joinOpenErasures: true).retirements == 1)
        #expect(try await b.applyState(retired.map { .retired($0) }, joinOpenErasures: true).retirements == 0)
        for id in ids {
            let (was, now) = (try #require(try await a.erasure(id)), try #require(try await b.erasure(id)))
            Self.expectSame(was, now, open: id != ids[0])
        }
        #expect(try await b.auditEntries() == a.auditEntries())
        #expect(try await b.verifyAudit().ok)
        #expect(try await b.participantsOverview().retirements.map(\.reason) == ["decommissioned"])
        #expect(try await b.participantsOverview().retirements.map(\.waived) == [2])
        // Restored, not changed: nothing to publish again.
        #expect(try await Self.changelog(of: b).isEmpty)
        #expect(try await Self.retirements(of: b).isEmpty)
        // A retirement written on the changelog before issue 18 is still read back from there.
        let third = try TemporaryDirectory()
        let c = try makeLedger(in: third)
        #expect(try await c.restore(retired.map { .retired($0) }).retirements == 1)
        #expect(try await c.participantsOverview().retirements.map(\.participant) == ["gone"])
        // A declaration older than the retirement, still on the compacted participants topic, stays ignored.
        let old = ParticipantDeclared(participant: "gone", holds: ["email"], declaredAt: Date().addingTimeInterval(-3600))
        try await b.declareParticipant(old)
        #expect(try await !b.participants().contains("gone"))
    }

    @Test("the restored ledger goes on: the open erasure completes with the next acknowledgement, chained to the restored audit")
    func restoredErasuresContinue() async throws {
        let (first, second) = (try TemporaryDirectory(), try TemporaryDirectory())
        let a = try makeLedger(in: first)
        let ids = try await Self.history(on: a)
        let records = try await Self.changelog(of: a)
        let b = try makeLedger(in: second)
        try await b.configureTenant(tenant("t1", .delete))
        try await b.declareParticipant(declared("p1"))
        try await b.declareParticipant(declared("p2"))
        _ = try await b.restore(records)

        // What the records do not hold is asked again at once: both open erasures are re-sent.
        #expect(try await b.sweep().resent == 2)
        #expect(try await b.applyAck(ack(ids[1], "p1", .erased)) != .ignored)
        #expect(try await b.applyAck(ack(ids[1], "p2", .erased)) != .ignored)
        #expect(try await b.erasure(ids[1])?.status == .completed)
        let entries = try await b.auditEntries()
        #expect(entries.map(\.sequence) == [1, 2])
        #expect(entries[1].previousHash == entries[0].entryHash)
        #expect(try await b.verifyAudit().ok)
        // Its new record follows the restored one.
        let republished = try #require(Self.erasureStates(try await Self.changelog(of: b))[ids[1]])
        #expect(republished.version > Self.erasureStates(records)[ids[1]]!.version)
        #expect(republished.accountId == nil && republished.audit?.receipt.sequence == 2)
    }

    @Test("an intact ledger reading its own changelog back changes nothing; a forged audit entry is refused")
    func restoreIsIdempotentAndChecksTheAudit() async throws {
        let (first, second) = (try TemporaryDirectory(), try TemporaryDirectory())
        let a = try makeLedger(in: first)
        let ids = try await Self.history(on: a)
        let records = try await Self.changelog(of: a)
        let before = try await a.erasure(ids[2])
        #expect(try await a.restore(records) == ErasureLedger.ChangelogRestored(erasures: 0, retirements: 0, refused: 0))
        #expect(try await a.erasure(ids[2]) == before)

        var forged = try #require(Self.erasureStates(records)[ids[0]])
        forged.audit?.outcomes[0].outcome = .failed
        let b = try makeLedger(in: second)
        let restored = try await b.restore([.erasure(forged)])
        #expect(restored.refused == 1 && restored.erasures == 0)
        #expect(try await b.erasure(ids[0]) == nil)
        #expect(try await b.auditEntries().isEmpty)
    }

    /// Same erasure: every field equal, dates to the millisecond the changelog carries. For an `open` one, what its
    /// record holds: identity, status, deadline, participants and their waivers (acknowledgements are asked again).
    static func expectSame(
        _ was: ErasureRecord, _ now: ErasureRecord, open: Bool, sourceLocation: SourceLocation = #_sourceLocation
    ) {
        if open {
            var (left, right) = (was, now)
            #expect(abs(left.deadline.timeIntervalSince(right.deadline)) < 0.002, sourceLocation: sourceLocation)
            #expect(left.participants.map(\.participant) == right.participants.map(\.participant),
                    sourceLocation: sourceLocation)
            #expect(left.participants.filter { $0.outcome == .waived }.map(\.detail)
                    == right.participants.filter { $0.outcome == .waived }.map(\.detail), sourceLocation: sourceLocation)
            left.participants = []
            right.participants = []
            (right.deadline, right.createdAt, right.updatedAt) = (left.deadline, left.createdAt, left.updatedAt)
            #expect(left == right, sourceLocation: sourceLocation)
            return
        }
        func close(_ x: Date?, _ y: Date?) -> Bool {
            switch (x, y) {
            case (nil, nil): true
            case let (x?, y?): abs(x.timeIntervalSince(y)) < 0.002
            default: false
            }
        }
        var (left, right) = (was, now)
        #expect(close(left.deadline, right.deadline) && close(left.createdAt, right.createdAt)
                && close(left.updatedAt, right.updatedAt) && close(left.completedAt, right.completedAt),
                "\(was.id): dates", sourceLocation: sourceLocation)
        #expect(zip(left.participants, right.participants).allSatisfy {
            close($0.lastSentAt, $1.lastSentAt) && close($0.ackedAt, $1.ackedAt)
        }, "\(was.id): participants' dates", sourceLocation: sourceLocation)
        for record in [\ErasureRecord.deadline, \.createdAt, \.updatedAt] {
            right[keyPath: record] = left[keyPath: record]
        }
        right.completedAt = left.completedAt
        for index in right.participants.indices where index < left.participants.count {
            right.participants[index].lastSentAt = left.participants[index].lastSentAt
            right.participants[index].ackedAt = left.participants[index].ackedAt
        }
        left.participants.sort { $0.participant < $1.participant }
        right.participants.sort { $0.participant < $1.participant }
        #expect(left == right, sourceLocation: sourceLocation)
    }
}
