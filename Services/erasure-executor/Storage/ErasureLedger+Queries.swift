import Contracts
import Foundation
import GRDB

extension ErasureLedger {
    // MARK: Queries

    /// One erasure with its participants, or nil.
    func erasure(_ id: String) async throws -> ErasureRecord? {
        try await database.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM erasures WHERE id = ?", arguments: [id])
                .map { try Self.record($0, in: db) }
        }
    }

    /// Where a list of erasures resumes: after the erasure opened in `second` (since the epoch, as the API shows it)
    /// with id `id`. Lists are ordered by it, oldest first, so pages gathered from several replicas merge into one.
    struct ListPosition: Sendable, Equatable, Comparable {
        var second: Int64
        var id: String

        init(second: Int64, id: String) {
            self.second = second
            self.id = id
        }

        /// The position of `record`.
        init(of record: ErasureRecord) {
            self.init(second: Int64(record.createdAt.timeIntervalSince1970.rounded(.down)), id: record.id)
        }

        /// From a cursor's key (`<second>|<id>`); nil when it is not one.
        init?(key: String) {
            let parts = key.split(separator: "|", maxSplits: 1)
            guard parts.count == 2, let second = Int64(parts[0]), !parts[1].isEmpty else { return nil }
            self.init(second: second, id: String(parts[1]))
        }

        var key: String { "\(second)|\(id)" }

        static func < (a: Self, b: Self) -> Bool { (a.second, a.id) < (b.second, b.id) }
    }

    /// A page of erasures, of one tenant or (nil) of all, oldest first (``ListPosition``), after `after`, optionally
    /// of one status; `more` when erasures follow.
    func erasures(tenantId: String?, status: ErasureStatus?, after: ListPosition?, limit: Int) async throws
        -> (records: [ErasureRecord], more: Bool)
    {
        try await database.read { db in
            var sql = "SELECT * FROM erasures WHERE (created_second, id) > (?, ?)"
            var arguments: StatementArguments = [after?.second ?? Int64.min, after?.id ?? ""]
            if let tenantId {
                sql += " AND tenant_id = ?"
                arguments += [tenantId]
            }
            if let status {
                sql += " AND status = ?"
                arguments += [status.rawValue]
            }
            sql += " ORDER BY created_second, id LIMIT ?"
            arguments += [limit + 1]
            let rows = try Row.fetchAll(db, sql: sql, arguments: arguments)
            let records = try rows.prefix(limit).map { try Self.record($0, in: db) }
            return (records, rows.count > limit)
        }
    }

    /// The erasure of `row` (a row of `erasures`) with its participants, as the API shows it.
    static func record(_ row: Row, in db: GRDB.Database) throws -> ErasureRecord {
        let id: String = row["id"]
        let participants = try Row.fetchAll(
            db.cachedStatement(sql: "SELECT * FROM erasure_participants WHERE erasure_id = ? ORDER BY participant"),
            arguments: [id]
        ).map { p in
            ParticipantState(
                participant: p["participant"], outcome: (p["outcome"] as String?).flatMap(CompletedOutcome.init),
                detail: p["detail"], failedAttempts: p["failed_attempts"], sends: p["sends"],
                lastSentAt: (p["last_sent_at"] as Double?).map(Date.init(timeIntervalSince1970:)),
                ackedAt: (p["acked_at"] as Double?).map(Date.init(timeIntervalSince1970:)))
        }
        return ErasureRecord(
            id: id, commandId: row["command_id"], tenantId: row["tenant_id"], appId: row["app_id"],
            accountId: row["account_id"],
            subject: row["subject"], policy: ErasurePolicy(rawValue: row["policy"]) ?? .delete,
            cause: ErasureCause(rawValue: row["cause"]) ?? .atlassianClosed,
            status: ErasureStatus(rawValue: row["status"]) ?? .pending, overdue: row["overdue"] as Int != 0,
            deadline: Date(timeIntervalSince1970: row["deadline"]), requests: row["requests"],
            createdAt: Date(timeIntervalSince1970: row["created_at"]),
            updatedAt: Date(timeIntervalSince1970: row["updated_at"]),
            completedAt: (row["completed_at"] as Double?).map(Date.init(timeIntervalSince1970:)),
            participants: participants)
    }

    /// Audit entries chain by chain (the lethe-audit-v1 chain first), each in sequence order, optionally completed
    /// within [from, to).
    func auditEntries(from: Date? = nil, to: Date? = nil) async throws -> [AuditEntry] {
        try await database.read { db in
            try Row.fetchAll(
                db, sql: """
                    SELECT * FROM audit_log WHERE completed_at_ms >= ? AND completed_at_ms < ?
                    ORDER BY ifnull(chain, -1), sequence
                    """, arguments: [from?.milliseconds ?? Int64.min, to?.milliseconds ?? Int64.max]
            ).map(Self.auditEntry)
        }
    }

    /// The entry of `row` (a row of `audit_log`); outcomes that do not decode come back empty, so the entry fails
    /// verification rather than hiding.
    static func auditEntry(_ row: Row) -> AuditEntry {
        let outcomes: String = row["outcomes"]
        let chain: Int? = row["chain"]
        var entry = AuditEntry(
            format: AuditEntry.format(ofChain: chain), chain: chain, sequence: row["sequence"], erasureId: row["erasure_id"], subject: row["subject"],
            tenantId: row["tenant_id"], policy: ErasurePolicy(rawValue: row["policy"]) ?? .delete,
            cause: ErasureCause(rawValue: row["cause"]) ?? .atlassianClosed,
            outcomes: (try? JSONDecoder().decode([AuditEntry.Outcome].self, from: Data(outcomes.utf8))) ?? [],
            completedAtMs: row["completed_at_ms"], previousHash: row["previous_hash"])
        entry.entryHash = row["entry_hash"]
        entry.signature = row["signature"]
        entry.keyId = row["key_id"]
        return entry
    }

    /// Recomputes every chain.
    func verifyAudit() async throws -> AuditVerification {
        AuditVerification.verify(try await auditEntries(), keys: keys)
    }

    /// Counts by status, open and overdue, for the gauges. Open erasures are counted through the partial indexes of
    /// open rows, and completed ones as the rest of the table, so a ledger with years of completed erasures does not
    /// make every refresh scan them.
    func counts() async throws -> LedgerCounts {
        try await database.read { db in
            var byStatus: [ErasureStatus: Int] = [:]
            for status in ErasureStatus.allCases { byStatus[status] = 0 }
            for row in try Row.fetchAll(
                db, sql: "SELECT status, count(*) AS n FROM erasures WHERE status != 'completed' GROUP BY status")
            {
                if let status = ErasureStatus(rawValue: row["status"]) { byStatus[status] = row["n"] }
            }
            // Completion sets the status and forgets the accountId in one statement: open = not completed.
            let open = byStatus.filter { $0.key != .completed }.values.reduce(0, +)
            let total = try Int.fetchOne(db, sql: "SELECT count(*) FROM erasures") ?? 0
            byStatus[.completed] = total - open
            let overdue = try Int.fetchOne(
                db, sql: "SELECT count(*) FROM erasures WHERE overdue = 1 AND account_id IS NOT NULL") ?? 0
            let rejected = try Int.fetchOne(
                db, sql: "SELECT count(*) FROM participants WHERE rejected IS NOT NULL") ?? 0
            return LedgerCounts(byStatus: byStatus, open: open, overdue: overdue, rejectedDeclarations: rejected)
        }
    }
}
