import Contracts
import Foundation
import GRDB
import Storage
import Testing
import TestSupport

@testable import erasure_executor

/// The ledger's side of issue 15: participants that declare late, retirements with waivers, the upgrade of an open
/// erasure to `atlassian-closed`, and requests that cannot be applied — on a real SQLite file.
@Suite("The erasure ledger: participants' lifecycle, upgrades and rejected intake")
struct ErasureLedgerParticipantLifecycleTests {
    @Test("a participant declared while an erasure is open joins it: it gets the command and the erasure waits for it")
    func lateDeclarationJoinsOpenErasures() async throws {
        let directory = try TemporaryDirectory()
        let ledger = try makeLedger(in: directory)
        try await ledger.declareParticipant(declared("first"))
        let id = try #require(try await ledger.intake([closed("t1", "acc-1")]))[0]
        let pending = try #require(try await ledger.intake([closed("t1", "acc-2")]))[0]
        _ = try await ledger.applyAck(ack(pending, "first", .erased))
        #expect(try await ledger.erasure(pending)?.status == .completed)

        let effect = try await ledger.declareParticipant(declared("late"))
        #expect(effect.joined == 1, "only the open erasure is joined, not the completed one")
        let record = try #require(try await ledger.erasure(id))
        #expect(record.participants.map(\.participant) == ["first", "late"])
        #expect(record.participants.last?.sends == 1)
        #expect(try await ledger.commands().filter { $0.erasureId == id }.count == 2, "the command went out again")
        _ = try await ledger.applyAck(ack(id, "first", .erased))
        #expect(try await ledger.erasure(id)?.status == .dispatched, "it waits for the late participant")
        if case .completed = try await ledger.applyAck(ack(id, "late", .nothingHeld)) {} else {
            Issue.record("the late participant's ack did not complete the erasure")
        }
        // A re-declaration (a restart, new holds) joins nothing twice.
        #expect(try await ledger.declareParticipant(declared("late")).joined == 0)
    }

    @Test("during the start-up restore declarations do not join; its end drops stale rows and joins who is declared")
    func restoreJoinsOnlyWhoIsStillDeclared() async throws {
        let directory = try TemporaryDirectory()
        let ledger = try makeLedger(in: directory)
        try await ledger.declareParticipant(declared("p1"))
        try await ledger.configureTenant(tenant("stale-tenant", .scrub))
        let id = try #require(try await ledger.intake([closed("t1", "acc-1")]))[0]
        // A restart: the topic holds p1, then "gone" declared and left again, then "newcomer" declared while the
        // executor was down; "stale-tenant" was tombstoned and compacted away.
        let effect = try await ledger.applyState(
            [.participant(declared("p1")), .participant(declared("gone")), .removeParticipant("gone"),
             .participant(declared("newcomer"))],
            joinOpenErasures: false)
        #expect(effect.joined == 0)
        #expect(try await ledger.erasure(id)?.participants.map(\.participant) == ["p1"])
        let joined = try await ledger.finishRestore(participants: ["p1", "newcomer"], tenants: [])
        #expect(joined == 1)
        #expect(try await ledger.erasure(id)?.participants.map(\.participant) == ["newcomer", "p1"])
        #expect(try await ledger.participants() == ["newcomer", "p1"])
        #expect(try await ledger.apps(ofTenant: "stale-tenant") == nil)
    }

    @Test("""
        a declaration that cannot be read keeps its participant declared (earlier holds kept) and flagged; a valid \
        one clears the flag
        """)
    func rejectedDeclarationKeepsItsParticipant() async throws {
        let directory = try TemporaryDirectory()
        let ledger = try makeLedger(in: directory)
        try await ledger.declareParticipant(ParticipantDeclared(participant: "crm", holds: ["email"], declaredAt: Date()))
        _ = try await ledger.applyState(
            [.rejectedParticipant(name: "crm", reason: "malformed JSON", at: Date()),
             .rejectedParticipant(name: "unknown-before", reason: "missing header ce_type", at: Date())],
            joinOpenErasures: true)
        let overview = try await ledger.participantsOverview()
        #expect(overview.declared.map(\.participant) == ["crm", "unknown-before"])
        #expect(overview.declared[0].holds == ["email"] && overview.declared[0].rejectedDeclaration == "malformed JSON")
        #expect(try await ledger.counts().rejectedDeclarations == 2)
        let id = try #require(try await ledger.intake([closed("t1", "acc-1")]))[0]
        #expect(try await ledger.erasure(id)?.participants.map(\.participant) == ["crm", "unknown-before"])
        try await ledger.declareParticipant(declared("crm"))
        #expect(try await ledger.counts().rejectedDeclarations == 1)
    }

    @Test("""
        retiring a participant waives it in every open erasure that waits for it, with the reason in the audit and \
        the receipt; the chain verifies; an old declaration is then ignored, a newer one takes part again
        """)
    func retireWaivesAndAudits() async throws {
        let directory = try TemporaryDirectory()
        let ledger = try makeLedger(in: directory, maxFailedAttempts: 1)
        for name in ["crm", "steady"] { try await ledger.declareParticipant(declared(name)) }
        let before = Date()
        let alone = try #require(try await ledger.intake([closed("t1", "acc-1")]))[0]
        let both = try #require(try await ledger.intake([closed("t1", "acc-2")]))[0]
        let stuck = try #require(try await ledger.intake([closed("t1", "acc-3")]))[0]
        _ = try await ledger.applyAck(ack(alone, "steady", .erased))
        _ = try await ledger.applyAck(ack(stuck, "steady", .erased))
        _ = try await ledger.applyAck(ack(stuck, "crm", .failed))
        #expect(try await ledger.erasure(stuck)?.status == .needsAttention)

        #expect(try await ledger.retire("nobody", reason: "typo") == .notFound)
        guard case .retired(let retirement) = try await ledger.retire("crm", reason: "CRM decommissioned, ticket OPS-12")
        else { Issue.record("crm was not retired"); return }
        #expect(retirement.waived == [alone, both, stuck])
        #expect(retirement.completed == [alone, stuck])
        let waitingStill = try #require(try await ledger.erasure(both))
        #expect(waitingStill.status == .dispatched)
        #expect(waitingStill.participants.first { $0.participant == "crm" }?.outcome == .waived)
        #expect(waitingStill.participants.first { $0.participant == "crm" }?.detail == "CRM decommissioned, ticket OPS-12")
        #expect(try await ledger.participants() == ["steady"])
        // A late ack from the retired participant changes nothing.
        #expect(try await ledger.applyAck(ack(both, "crm", .erased)) == .ignored)
        if case .completed = try await ledger.applyAck(ack(both, "steady", .scrubbed)) {} else {
            Issue.record("the erasure did not complete on its last awaited ack")
        }

        let entries = try await ledger.auditEntries()
        #expect(entries.count == 3)
        for entry in entries {
            let crm = try #require(entry.outcomes.first { $0.participant == "crm" })
            #expect(crm.outcome == .waived && crm.reason == "CRM decommissioned, ticket OPS-12")
            #expect(entry.outcomes.first { $0.participant == "steady" }?.reason == nil)
        }
        #expect(try await ledger.verifyAudit().ok)
        let receipts = try await ledger.completions()
        #expect(receipts.count == 3)
        #expect(receipts.allSatisfy { receipt in
            receipt.outcomes.contains { $0.participant == "crm" && $0.outcome == .waived && $0.reason != nil }
        })
        #expect(try await ledger.participantsOverview().retirements.map(\.participant) == ["crm"])
        // Retiring it again: not declared, nothing waits for it.
        #expect(try await ledger.retire("crm", reason: "again") == .notFound)

        // Its declaration from before the retirement, read again (a restart), is ignored; a new one counts.
        let ignored = try await ledger.declareParticipant(
            ParticipantDeclared(participant: "crm", holds: ["email"], declaredAt: before))
        #expect(ignored.ignoredRetired == ["crm"])
        #expect(try await ledger.participants() == ["steady"])
        try await ledger.declareParticipant(
            ParticipantDeclared(participant: "crm", holds: ["email"], declaredAt: Date().addingTimeInterval(1)))
        #expect(try await ledger.participants() == ["crm", "steady"])
    }

    @Test("""
        a closed status for an open refresh-failed erasure upgrades it to atlassian-closed: same erasure, command \
        re-sent with the new cause, every participant acknowledges again, the audit shows the final cause
        """)
    func closedUpgradesAnOpenRefreshFailedErasure() async throws {
        let directory = try TemporaryDirectory()
        let ledger = try makeLedger(in: directory)
        try await ledger.configureTenant(tenant("t1", .disassociate))
        for name in ["fast", "slow"] { try await ledger.declareParticipant(declared(name)) }
        let start = Date()
        let id = try #require(try await ledger.intake(
            [closed("t1", "acc-1", cause: .refreshFailed, policy: .scrub)], eventId: "request:r1", at: start))[0]
        _ = try await ledger.applyAck(ack(id, "fast", .scrubbed, at: start.addingTimeInterval(1)), at: start)
        let upgradeTime = start.addingTimeInterval(2)
        let again = try #require(try await ledger.intake(
            [closed("t1", "acc-1")], eventId: "status:s1", at: upgradeTime))[0]
        #expect(again == id, "no second erasure")
        let record = try #require(try await ledger.erasure(id))
        #expect(record.cause == .atlassianClosed && record.policy == .scrub && record.requests == 2)
        #expect(record.participants.allSatisfy { $0.outcome == nil }, "acks under the old cause are cleared")
        // Participants are idempotent by the command's erasureId: the upgraded command carries a new one, so each
        // applies it with the closed cause even if it applied the first.
        let commandId = try #require(record.commandId)
        #expect(commandId != id)
        let commands = try await ledger.commands()
        #expect(commands.map(\.erasureId) == [id, commandId])
        #expect(commands.map(\.cause) == [.refreshFailed, .atlassianClosed])
        // An ack of the old command (in flight, or a participant reading the old command first) no longer counts.
        #expect(try await ledger.applyAck(ack(id, "slow", .scrubbed, at: upgradeTime)) == .ignored)
        _ = try await ledger.applyAck(ack(commandId, "fast", .scrubbed, at: upgradeTime.addingTimeInterval(1)))
        // A re-send goes out under the new id too.
        _ = try await ledger.sweep(at: upgradeTime.addingTimeInterval(3600))
        #expect(try await ledger.commands().last?.erasureId == commandId)
        if case .completed = try await ledger.applyAck(
            ack(commandId, "slow", .scrubbed, at: upgradeTime.addingTimeInterval(2)))
        {} else {
            Issue.record("the acks after the upgrade did not complete the erasure")
        }
        #expect(try await ledger.completions().map(\.erasureId) == [id], "the completion keeps the erasure's id")
        #expect(try await ledger.auditEntries().map(\.cause) == [.atlassianClosed])
        #expect(try await ledger.completions().map(\.cause) == [.atlassianClosed])
        #expect(try await ledger.verifyAudit().ok)

        // A refresh-failed request for an open closed erasure joins it without a downgrade.
        let closedId = try #require(try await ledger.intake([closed("t1", "acc-2")]))[0]
        let joined = try #require(try await ledger.intake([closed("t1", "acc-2", cause: .refreshFailed)]))[0]
        #expect(joined == closedId)
        #expect(try await ledger.erasure(closedId)?.cause == .atlassianClosed)
    }

    @Test("""
        an ErasureRequested without a tenant whose app no tenant uses is rejected, not recorded: a replay once the \
        tenant is configured opens the erasure
        """)
    func tenantlessRequestWithoutTenantIsRejected() async throws {
        let directory = try TemporaryDirectory()
        let ledger = try makeLedger(in: directory)
        let work = ErasureLedger.IntakeWork.openForApp(
            appId: "app-9", accountId: "acc-1", cause: .tenantRequest, policy: nil, eventId: "request:r9")
        let effects = try await ledger.apply([work])
        guard case .rejected(let reason) = effects.first else { Issue.record("not rejected: \(effects)"); return }
        #expect(reason.contains("tenant"))
        try await ledger.configureTenant(tenant("t9", .delete, apps: ["app-9"]))
        #expect(try await ledger.apply([work]) == [.opened(1)])
    }

    @Test("a tenant's deadline is between 1 and 30 days in the ledger whatever reaches it")
    func deadlineDaysAreBounded() async throws {
        let directory = try TemporaryDirectory()
        let ledger = try makeLedger(in: directory)
        try await ledger.configureTenant(tenant("long", .delete, days: 45))
        try await ledger.configureTenant(tenant("short", .delete, days: -3))
        #expect(try await ledger.deadlineDays(ofTenant: "long") == 30)
        #expect(try await ledger.deadlineDays(ofTenant: "short") == 1)
    }
}
