import Contracts
import Foundation
import GRDB
import Messaging
import Storage

/// The executor's changelog on `lethe.erasure.state.v1`: every change to an erasure that cannot be asked again —
/// opened, dispatched, upgraded to `atlassian-closed`, a participant added, removed or waived, needing attention or
/// retried, completed — is published as the erasure's whole state at that moment (`ErasureState`, keyed by its id,
/// with its audit entry once completed), through the outbox, in the transaction that made it. (A retirement is
/// published on the participants topic, as `ParticipantRetired` keyed by the participant, for every replica; before
/// issue 18 it was on this topic, keyed `retired:<participant>:<ms>`, and such records are still read back.) The topic
/// is compacted, so it holds the latest record of every erasure, and an executor that
/// lost its volume reads it back (``restore(_:)``) and goes on: open erasures keep their participants, waivers and
/// deadline, and the audit chain continues after the last entry.
///
/// Acknowledgements and re-sends are left out on purpose (they were most of the records, and doubled the executor's
/// CPU per erasure): what an erasure's record does not hold is asked again — a restored open erasure is re-sent at
/// once to every participant whose outcome it does not hold, and participants answer again (idempotent by
/// erasureId). The completion record holds every outcome, as the audit entry does.
///
/// Nothing has to remember to publish: SQLite triggers list every erasure a transaction changes in those ways
/// (`erasure_changes`), and ``write(_:)`` — the ledger's only way to write — publishes them before it commits.
extension ErasureLedger {
    /// Most erasures one transaction publishes; any more stay listed (durably) for the next write, such as the
    /// sweeper's, so a file upgraded with many erasures publishes them over a few transactions.
    static let changelogBatch = 2000

    /// One write transaction of the ledger, with the changelog of what it changed.
    func write<T: Sendable>(_ body: @escaping @Sendable (GRDB.Database) throws -> T) async throws -> T {
        try await database.write { [self] db in
            let result = try body(db)
            try publishChanges(in: db)
            return result
        }
    }

    /// Publishes the state of every erasure listed in `erasure_changes` (and every retirement recorded here). The erasure's
    /// earlier records leave the outbox, sent or not: only the latest state matters, and an earlier one carries the
    /// accountId a completion drops from the file.
    private func publishChanges(in db: GRDB.Database) throws {
        let ids = try String.fetchAll(
            db.cachedStatement(sql: "SELECT erasure_id FROM erasure_changes LIMIT ?"), arguments: [Self.changelogBatch])
        for id in ids {
            try db.cachedStatement(sql: "UPDATE erasures SET version = version + 1 WHERE id = ?").execute(arguments: [id])
            if let state = try Self.changelogState(of: id, in: db) {
                try Outbox.discard(topic: settings.stateTopic, key: id, in: db)
                try Outbox.enqueue(
                    try OutgoingMessage(event: state, topic: settings.stateTopic, key: id, source: settings.source),
                    in: db)
            }
            try db.cachedStatement(sql: "DELETE FROM erasure_changes WHERE erasure_id = ?").execute(arguments: [id])
        }
        // Every write transaction asks: a cached statement.
        let retirements = try Row.fetchAll(db.cachedStatement(sql: """
            SELECT r.* FROM retirement_changes c JOIN participant_retirements r ON r.row = c.retirement
            """))
        for row in retirements {
            let event = ParticipantRetired(
                participant: row["participant"], reason: row["reason"],
                retiredAt: Date(timeIntervalSince1970: row["retired_at"]), waived: row["waived"],
                completed: row["completed"])
            // Keyed by the participant: under compaction it supersedes the declaration, and a later one supersedes it.
            try Outbox.enqueue(
                try OutgoingMessage(
                    event: event, topic: settings.participantsTopic, key: event.participant, source: settings.source),
                in: db)
        }
        if !retirements.isEmpty { try db.execute(sql: "DELETE FROM retirement_changes") }
    }

    /// Erasure `id` as its changelog record says it.
    static func changelogState(of id: String, in db: GRDB.Database) throws -> ErasureState? {
        guard let row = try Row.fetchOne(db.cachedStatement(sql: "SELECT * FROM erasures WHERE id = ?"), arguments: [id])
        else { return nil }
        // What the API shows, plus the two columns it does not.
        let record = try Self.record(row, in: db)
        return ErasureState(
            erasureId: id, commandId: record.commandId, tenantId: record.tenantId, appId: record.appId,
            accountId: record.accountId, subject: record.subject, policy: record.policy, cause: record.cause,
            status: record.status.rawValue, overdue: record.overdue, deadline: record.deadline,
            requests: record.requests, issuedAt: (row["issued_at"] as Double?).map(Date.init(timeIntervalSince1970:)),
            createdAt: record.createdAt, updatedAt: record.updatedAt, completedAt: record.completedAt,
            version: row["version"],
            participants: record.participants.map {
                ErasureState.Participant(
                    participant: $0.participant, outcome: $0.outcome, detail: $0.detail,
                    failedAttempts: $0.failedAttempts, sends: $0.sends, lastSentAt: $0.lastSentAt, ackedAt: $0.ackedAt)
            },
            audit: try auditState(of: id, in: db))
    }

    private static func auditState(of id: String, in db: GRDB.Database) throws -> ErasureState.Audit? {
        guard let row = try Row.fetchOne(
            db.cachedStatement(sql: "SELECT * FROM audit_log WHERE erasure_id = ?"), arguments: [id])
        else { return nil }
        let entry = auditEntry(row)
        return ErasureState.Audit(
            receipt: entry.receipt, completedAtMs: entry.completedAtMs,
            outcomes: entry.outcomes.map {
                ErasureState.AuditOutcome(participant: $0.participant, outcome: $0.outcome, atMs: $0.atMs, reason: $0.reason)
            })
    }
}
