import Foundation
import GRDB

extension ErasureLedger {
    // MARK: Retiring a participant

    /// What retiring a participant did.
    enum RetireEffect: Sendable, Equatable {
        /// Neither declared nor awaited by any open erasure.
        case notFound
        /// Retired: `waived` open erasures no longer wait for it, `completed` of them completed by that.
        case retired(Retirement)
    }

    /// A retirement, as the API answers it.
    struct Retirement: Codable, Sendable, Equatable {
        var participant: String
        var reason: String
        var retiredAt: Date
        /// The open erasures that waited for it: its outcome in each is now `waived`, with the reason.
        var waived: [String]
        /// Those of them that completed because of it.
        var completed: [String]
    }

    /// An operator retires participant `name` for `reason`: it is no longer declared (a declaration made before now
    /// is ignored when the topic is read again; a later one makes it take part again), and in every open erasure
    /// that waits for it its outcome becomes `waived` with the reason, which completes the erasures that waited for
    /// it alone — each audited with the waiver in its entry. One transaction; the retirement is recorded too.
    func retire(_ name: String, reason: String, at now: Date = Date()) async throws -> RetireEffect {
        try await write { [self] db in
            let declared = try Bool.fetchOne(
                db, sql: "SELECT 1 FROM participants WHERE name = ?", arguments: [name]) == true
            let waiting = try String.fetchAll(
                db, sql: """
                    SELECT e.id FROM erasure_participants p JOIN erasures e ON e.id = p.erasure_id
                    WHERE p.participant = ? AND (p.outcome IS NULL OR p.outcome = 'failed')
                      AND e.account_id IS NOT NULL
                    ORDER BY e.row
                    """, arguments: [name])
            guard declared || !waiting.isEmpty else { return .notFound }
            let t = now.timeIntervalSince1970
            try db.execute(sql: "DELETE FROM participants WHERE name = ?", arguments: [name])
            let cache = TransactionCache()
            var completed: [String] = []
            for id in waiting where try waive(name, in: id, reason: reason, at: now, cache: cache, db: db) {
                completed.append(id)
            }
            try db.execute(
                sql: """
                    INSERT INTO participant_retirements (participant, reason, retired_at, waived, completed)
                    VALUES (?, ?, ?, ?, ?)
                    """, arguments: [name, reason, t, waiting.count, completed.count])
            return .retired(Retirement(
                participant: name, reason: reason, retiredAt: Date(timeIntervalSince1970: t), waived: waiting,
                completed: completed))
        }
    }

    // MARK: Waiving one participant of one erasure

    /// What waiving a participant in one erasure did.
    enum WaiveEffect: Sendable, Equatable {
        case notFound
        case alreadyCompleted
        /// The participant is not awaited by this erasure (it acknowledged, was waived, or never took part).
        case notAwaited
        /// Waived; `completed` when that was the last acknowledgement the erasure waited for.
        case waived(completed: Bool)
    }

    /// An operator waives participant `name` in erasure `id` for `reason`: its outcome becomes `waived` with the
    /// reason (in the erasure's audit entry when it completes), and the erasure completes if it waited for nothing
    /// else. The participant stays declared: other erasures, and new ones, still wait for it.
    func waive(_ name: String, inErasure id: String, reason: String, at now: Date = Date()) async throws -> WaiveEffect {
        try await write { [self] db in
            guard let open = try Row.fetchOne(
                db, sql: "SELECT account_id IS NOT NULL AS open FROM erasures WHERE id = ?", arguments: [id])
            else { return .notFound }
            guard open["open"] as Bool else { return .alreadyCompleted }
            let awaited = try Bool.fetchOne(
                db, sql: """
                    SELECT 1 FROM erasure_participants
                    WHERE erasure_id = ? AND participant = ? AND (outcome IS NULL OR outcome = 'failed')
                    """, arguments: [id, name]) == true
            guard awaited else { return .notAwaited }
            return .waived(completed: try waive(name, in: id, reason: reason, at: now, cache: TransactionCache(), db: db))
        }
    }

    /// Sets `name`'s outcome in open erasure `id` to `waived` with `reason`, then completes the erasure if nothing else
    /// is awaited, or sets its status from what still is; whether it completed. Inside the caller's transaction.
    private func waive(
        _ name: String, in id: String, reason: String, at now: Date, cache: TransactionCache, db: GRDB.Database
    ) throws -> Bool {
        // Milliseconds, like acks: the audit keeps times to the millisecond.
        let at = Double(now.milliseconds) / 1000
        try db.execute(
            sql: """
                UPDATE erasure_participants SET outcome = 'waived', detail = ?, acked_at = ?
                WHERE erasure_id = ? AND participant = ?
                """, arguments: [reason, at, id, name])
        let missing = try Int.fetchOne(
            db, sql: """
                SELECT count(*) FROM erasure_participants
                WHERE erasure_id = ? AND (outcome IS NULL OR outcome = 'failed')
                """, arguments: [id]) ?? 0
        if missing == 0 {
            try complete(id, at: now, cache: cache, in: db)
            return true
        }
        // It may have needed attention because of this participant alone.
        let stuck = try Int.fetchOne(
            db, sql: """
                SELECT count(*) FROM erasure_participants
                WHERE erasure_id = ? AND outcome = 'failed' AND failed_attempts >= ?
                """, arguments: [id, settings.maxFailedAttempts]) ?? 0
        let status = stuck > 0 ? ErasureStatus.needsAttention : .dispatched
        try db.execute(
            sql: "UPDATE erasures SET status = ?, updated_at = ? WHERE id = ?",
            arguments: [status.rawValue, now.timeIntervalSince1970, id])
        return false
    }
}
