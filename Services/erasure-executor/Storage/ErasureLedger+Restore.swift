import Contracts
import Foundation
import GRDB
import Storage

/// Reading the changelog back (see ErasureLedger+Changelog).
extension ErasureLedger {
    /// One record of `lethe.erasure.state.v1`.
    enum ChangelogRecord: Sendable {
        case erasure(ErasureState)
        case retired(ParticipantRetired)
    }

    /// What a restore applied.
    struct ChangelogRestored: Sendable, Equatable {
        /// Erasures whose record replaced the ledger's copy (or was missing from it).
        var erasures = 0
        var retirements = 0
        /// Records that contradict the ledger (an audit entry whose hash does not check out, an open erasure of an
        /// account that has another one open here): left out, counted and logged by the caller.
        var refused = 0
    }

    /// Applies changelog records read back at start, in the order read. An erasure's record replaces the ledger's
    /// copy when the ledger has none or an older version — so on an intact file nothing changes — with its
    /// participants and, once completed, its audit entry. A retirement is recorded unless it already is. What is
    /// restored is not published again (it came from the changelog).
    func restore(_ records: [ChangelogRecord]) async throws -> ChangelogRestored {
        try await database.write { db in
            var restored = ChangelogRestored()
            for record in records {
                switch record {
                case .erasure(let state):
                    let local = try Int.fetchOne(
                        db.cachedStatement(sql: "SELECT version FROM erasures WHERE id = ?"), arguments: [state.erasureId])
                    if let local, local >= state.version { continue }
                    do {
                        try Self.restore(state, in: db)
                        restored.erasures += 1
                    } catch let error as DatabaseError where error.resultCode == .SQLITE_CONSTRAINT {
                        restored.refused += 1
                    } catch is AuditMismatch {
                        restored.refused += 1
                    }
                    try db.cachedStatement(sql: "DELETE FROM erasure_changes WHERE erasure_id = ?")
                        .execute(arguments: [state.erasureId])
                case .retired(let event):
                    guard try Self.recordRetirement(event, published: false, in: db) else { continue }
                    restored.retirements += 1
                }
            }
            return restored
        }
    }

    private struct AuditMismatch: Error {}

    /// Per changelog partition, where the last read-back ended (the records before it are in this file); empty for a
    /// new file, which reads the changelog from its beginning.
    func changelogPositions() async throws -> [Int32: Int64] {
        try await database.read { db in
            var positions: [Int32: Int64] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT partition, next_offset FROM changelog_positions") {
                positions[row["partition"]] = row["next_offset"]
            }
            return positions
        }
    }

    /// Records where a read-back ended, after everything before it was restored.
    func recordChangelogPositions(_ positions: [Int32: Int64]) async throws {
        try await database.write { db in
            for (partition, offset) in positions {
                try db.execute(
                    sql: """
                        INSERT INTO changelog_positions (partition, next_offset) VALUES (?, ?)
                        ON CONFLICT(partition) DO UPDATE SET next_offset = excluded.next_offset
                        """, arguments: [partition, offset])
            }
        }
    }

    /// Writes `state` over the ledger's copy of the erasure, in a savepoint: a record refused half-way leaves nothing.
    private static func restore(_ state: ErasureState, in db: GRDB.Database) throws {
        try db.inSavepoint {
            try restoreRows(state, in: db)
            return .commit
        }
    }

    private static func restoreRows(_ state: ErasureState, in db: GRDB.Database) throws {
        func seconds(_ date: Date?) -> Double? { date?.timeIntervalSince1970 }
        try db.cachedStatement(sql: """
            INSERT INTO erasures (id, command_id, tenant_id, app_id, account_id, subject, policy, cause, status, overdue,
                deadline, requests, issued_at, created_at, updated_at, completed_at, version)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT(id) DO UPDATE SET command_id = excluded.command_id, tenant_id = excluded.tenant_id,
                app_id = excluded.app_id, account_id = excluded.account_id, subject = excluded.subject,
                policy = excluded.policy, cause = excluded.cause, status = excluded.status, overdue = excluded.overdue,
                deadline = excluded.deadline, requests = excluded.requests, issued_at = excluded.issued_at,
                created_at = excluded.created_at, updated_at = excluded.updated_at,
                completed_at = excluded.completed_at, version = excluded.version
            """).execute(arguments: [
                state.erasureId, state.commandId, state.tenantId, state.appId, state.accountId, state.subject,
                state.policy.rawValue, state.cause.rawValue, state.status, state.overdue ? 1 : 0,
                state.deadline.timeIntervalSince1970, state.requests, seconds(state.issuedAt),
                state.createdAt.timeIntervalSince1970, state.updatedAt.timeIntervalSince1970, seconds(state.completedAt),
                state.version,
            ])
        try db.cachedStatement(sql: "DELETE FROM erasure_participants WHERE erasure_id = ?")
            .execute(arguments: [state.erasureId])
        for participant in state.participants {
            // Acknowledgements after the record are not in it: every participant it holds no outcome for (or a
            // failure) is due for a re-send at once (the record's time of the last send would wait a re-send period).
            let awaited = participant.outcome == nil || participant.outcome == .failed
            try db.cachedStatement(sql: """
                INSERT INTO erasure_participants (erasure_id, participant, outcome, detail, failed_attempts, sends,
                    last_sent_at, acked_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                """).execute(arguments: [
                    state.erasureId, participant.participant, participant.outcome?.rawValue, participant.detail,
                    participant.failedAttempts, participant.sends,
                    awaited && state.status == "dispatched" ? 0 : seconds(participant.lastSentAt),
                    seconds(participant.ackedAt),
                ])
        }
        guard let audit = state.audit else { return }
        var entry = AuditEntry(
            format: AuditEntry.format(ofChain: audit.receipt.chain), chain: audit.receipt.chain,
            sequence: audit.receipt.sequence, erasureId: state.erasureId, subject: state.subject,
            tenantId: state.tenantId, policy: state.policy, cause: state.cause,
            outcomes: audit.outcomes.map {
                AuditEntry.Outcome(participant: $0.participant, outcome: $0.outcome, atMs: $0.atMs, reason: $0.reason)
            },
            completedAtMs: audit.completedAtMs, previousHash: audit.receipt.previousHash)
        entry.entryHash = audit.receipt.entryHash
        entry.signature = audit.receipt.signature
        entry.keyId = audit.receipt.keyId
        guard entry.computedHash == entry.entryHash else { throw AuditMismatch() }
        try insert(entry, ifAbsent: true, in: db)
    }
}
