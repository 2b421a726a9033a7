import Contracts
import Foundation
import GRDB
import Messaging
import Storage

extension ErasureLedger {
    // MARK: Acks

    /// Records a participant's ack; completes (and audits) the erasure when it was the last one missing.
    func applyAck(_ ack: ErasureAcknowledged, at now: Date = Date()) async throws -> AckEffect {
        try await write { [self] db in try applyAck(ack, at: now, cache: TransactionCache(), in: db) }
    }

    func applyAck(
        _ ack: ErasureAcknowledged, at now: Date, cache: TransactionCache, in db: GRDB.Database
    ) throws -> AckEffect {
        guard let row = try Row.fetchOne(
            db.cachedStatement(sql: """
                SELECT e.id, e.issued_at, p.outcome, p.failed_attempts
                FROM erasures e JOIN erasure_participants p ON p.erasure_id = e.id
                WHERE ((e.id = ? AND e.command_id IS NULL) OR e.command_id = ?) AND e.account_id IS NOT NULL
                  AND p.participant = ?
                """), arguments: [ack.erasureId, ack.erasureId, ack.participant])
        else { return .ignored }
        // The erasure's own id: an upgraded erasure's commands (and so its acks) carry another.
        let id: String = row["id"]
        let previous: String? = row["outcome"]
        // A recorded success (or a waiver) stands: re-sends make participants re-ack.
        if let previous, previous != ErasureOutcome.failed.rawValue { return .ignored }
        let issuedAt: Double? = row["issued_at"]
        let latency = issuedAt.map { ack.at.timeIntervalSince1970 - $0 }
        let detail = ack.detail.map { String($0.prefix(200)) }
        if ack.outcome == .failed {
            let attempts: Int = row["failed_attempts"] + 1
            try db.cachedStatement(sql: """
                UPDATE erasure_participants SET outcome = 'failed', detail = ?, failed_attempts = ?
                WHERE erasure_id = ? AND participant = ?
                """).execute(arguments: [detail, attempts, id, ack.participant])
            let status = attempts >= settings.maxFailedAttempts ? ErasureStatus.needsAttention : .dispatched
            try db.cachedStatement(sql: "UPDATE erasures SET status = ?, updated_at = ? WHERE id = ?")
                .execute(arguments: [status.rawValue, now.timeIntervalSince1970, id])
            return .recorded(latency: nil)
        }
        try db.cachedStatement(sql: """
            UPDATE erasure_participants SET outcome = ?, detail = ?, acked_at = ?
            WHERE erasure_id = ? AND participant = ?
            """).execute(arguments: [
                ack.outcome.rawValue, detail, Double(ack.at.milliseconds) / 1000, id, ack.participant,
            ])
        let missing = try Int.fetchOne(
            db.cachedStatement(sql: """
                SELECT count(*) FROM erasure_participants
                WHERE erasure_id = ? AND (outcome IS NULL OR outcome = 'failed')
                """), arguments: [id]) ?? 0
        guard missing == 0 else {
            try db.cachedStatement(sql: "UPDATE erasures SET updated_at = ? WHERE id = ?")
                .execute(arguments: [now.timeIntervalSince1970, id])
            return .recorded(latency: latency)
        }
        try complete(id, at: now, cache: cache, in: db)
        return .completed(latency: latency)
    }

    /// Appends the audit entry, forgets the raw accountId and enqueues `ErasureCompleted` — one transaction, so the
    /// proof exists exactly when the accountId is gone. Entries appended in one transaction chain to each other in
    /// the order of the calls, through the cached tail.
    func complete(_ id: String, at now: Date, cache: TransactionCache, in db: GRDB.Database) throws {
        guard let erasure = try Row.fetchOne(
            db.cachedStatement(sql: """
                SELECT tenant_id, app_id, account_id, subject, policy, cause FROM erasures WHERE id = ?
                """), arguments: [id])
        else { return }
        if let accountId: String = erasure["account_id"] {
            try forgetCommands(appId: erasure["app_id"], accountId: accountId, completing: id, in: db)
        }
        let outcomes = try Self.auditOutcomes(of: id, in: db)
        let chain = Int(partition(of: id))
        let tail = try Self.auditTail(of: chain, cache: cache, in: db)
        var entry = AuditEntry(
            format: AuditEntry.format(ofChain: chain), chain: chain,
            sequence: tail.sequence + 1, erasureId: id, subject: erasure["subject"],
            tenantId: erasure["tenant_id"], policy: ErasurePolicy(rawValue: erasure["policy"]) ?? .delete,
            cause: ErasureCause(rawValue: erasure["cause"]) ?? .atlassianClosed, outcomes: outcomes,
            completedAtMs: now.milliseconds, previousHash: tail.hash)
        entry.entryHash = entry.computedHash
        entry.signature = try keys.sign(entryHash: entry.entryHash)
        entry.keyId = keys.keyId
        try Self.insert(entry, in: db)
        cache.auditTails[chain] = (entry.sequence, entry.entryHash)
        try db.cachedStatement(sql: """
            UPDATE erasures SET status = 'completed', account_id = NULL, completed_at = ?, updated_at = ? WHERE id = ?
            """).execute(arguments: [Double(entry.completedAtMs) / 1000, now.timeIntervalSince1970, id])
        let completed = ErasureCompleted(
            erasureId: id, tenantId: entry.tenantId, subject: entry.subject, policy: entry.policy, cause: entry.cause,
            outcomes: outcomes.map {
                ParticipantOutcome(
                    participant: $0.participant, outcome: $0.outcome, reason: $0.reason,
                    at: Date(milliseconds: $0.atMs))
            },
            completedAt: Date(milliseconds: entry.completedAtMs), receipt: entry.receipt)
        try Outbox.enqueue(
            try OutgoingMessage(event: completed, topic: settings.completedTopic, key: id, source: settings.source),
            in: db)
    }

    /// The commands of this account carry its raw accountId (their key and payload): they go with it. Unsent ones
    /// are pointless now, unless another tenant's erasure of the same account is still open and waits for them.
    private func forgetCommands(appId: String, accountId: String, completing id: String, in db: GRDB.Database) throws {
        let others = try Int.fetchOne(
            db.cachedStatement(sql: """
                SELECT count(*) FROM erasures WHERE app_id = ? AND account_id = ? AND id != ?
                """),
            arguments: [appId, accountId, id]) ?? 0
        try db.cachedStatement(sql: """
            DELETE FROM lethe_outbox WHERE topic = ? AND key = ? AND (sent_at IS NOT NULL OR ? = 0)
            """).execute(arguments: [settings.commandsTopic, Data("\(appId):\(accountId)".utf8), others])
    }

    /// Each participant's outcome in erasure `id`, by name, as its audit entry records them.
    private static func auditOutcomes(of id: String, in db: GRDB.Database) throws -> [AuditEntry.Outcome] {
        try Row.fetchAll(
            db.cachedStatement(sql: """
                SELECT participant, outcome, detail, acked_at FROM erasure_participants WHERE erasure_id = ?
                ORDER BY participant
                """), arguments: [id]
        ).map { row in
            let outcome = CompletedOutcome(rawValue: row["outcome"]) ?? .failed
            return AuditEntry.Outcome(
                participant: row["participant"], outcome: outcome,
                atMs: Int64(((row["acked_at"] as Double? ?? 0) * 1000).rounded()),
                reason: outcome == .waived ? row["detail"] as String? : nil)
        }
    }

    /// The last entry (sequence and hash) of audit chain `chain`: the transaction's cached one, else the table's, else
    /// genesis.
    private static func auditTail(of chain: Int, cache: TransactionCache, in db: GRDB.Database) throws
        -> (sequence: Int, hash: String)
    {
        if let cached = cache.auditTails[chain] { return cached }
        if let last = try Row.fetchOne(
            db.cachedStatement(sql: """
                SELECT sequence, entry_hash FROM audit_log WHERE ifnull(chain, -1) = ? ORDER BY sequence DESC LIMIT 1
                """), arguments: [chain])
        {
            return (last["sequence"], last["entry_hash"])
        }
        return (0, AuditEntry.genesisHash)
    }

    /// Appends `entry` to `audit_log`; `ifAbsent` leaves an entry already there (a changelog restore).
    static func insert(_ entry: AuditEntry, ifAbsent: Bool = false, in db: GRDB.Database) throws {
        let outcomes = CanonicalJSON.outcomes(entry.outcomes)
        try db.cachedStatement(sql: """
            INSERT \(ifAbsent ? "OR IGNORE " : "")INTO audit_log (chain, sequence, erasure_id, subject, tenant_id, policy,
                cause, outcomes, completed_at_ms, previous_hash, entry_hash, signature, key_id)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """).execute(arguments: [
                entry.chain, entry.sequence, entry.erasureId, entry.subject, entry.tenantId, entry.policy.rawValue,
                entry.cause.rawValue, outcomes, entry.completedAtMs, entry.previousHash, entry.entryHash,
                entry.signature, entry.keyId,
            ])
    }
}
