import Foundation
import GRDB

extension ErasureLedger {
    // MARK: Sweep: dispatch, re-send, deadlines

    /// What one sweep did.
    struct SweepResult: Sendable, Equatable {
        var dispatched = 0
        var resent = 0
        var newlyOverdue = 0
    }

    /// Dispatches pending erasures once participants exist, re-sends to participants that have not acked (or
    /// failed, below the limit) after `resendAfter × 2^(sends-1)` (capped at 64×), and flags erasures past their
    /// deadline as overdue. One transaction.
    func sweep(at now: Date = Date()) async throws -> SweepResult {
        try await write { [self] db in
            var result = SweepResult()
            let cache = TransactionCache()
            let t = now.timeIntervalSince1970
            for id in try String.fetchAll(db, sql: "SELECT id FROM erasures WHERE status = 'pending'") {
                if try dispatchIfPossible(id, at: now, cache: cache, in: db) { result.dispatched += 1 }
            }
            let due = try Row.fetchAll(
                db.cachedStatement(sql: """
                    SELECT p.erasure_id, p.participant FROM erasure_participants p
                    JOIN erasures e ON e.id = p.erasure_id
                    WHERE (p.outcome IS NULL OR p.outcome = 'failed') AND p.last_sent_at <= ?
                      AND e.status = 'dispatched'
                      AND (p.outcome IS NULL OR (p.outcome = 'failed' AND p.failed_attempts < ?))
                      AND p.last_sent_at + ? * (1 << min(max(p.sends - 1, 0), 6)) <= ?
                    """), arguments: [t - settings.resendAfter, settings.maxFailedAttempts, settings.resendAfter, t])
            var erasures: [String] = []
            var seen: Set<String> = []
            let resend = try db.cachedStatement(sql: """
                UPDATE erasure_participants SET sends = sends + 1, last_sent_at = ?
                WHERE erasure_id = ? AND participant = ?
                """)
            for row in due {
                let id: String = row["erasure_id"]
                try resend.execute(arguments: [t, id, row["participant"] as String])
                if seen.insert(id).inserted { erasures.append(id) }
            }
            for id in erasures { try enqueueCommand(id, in: db) }
            result.resent = erasures.count
            try db.cachedStatement(sql: """
                UPDATE erasures SET overdue = 1, updated_at = ?
                WHERE account_id IS NOT NULL AND overdue = 0 AND deadline <= ?
                """).execute(arguments: [t, t])
            result.newlyOverdue = db.changesCount
            return result
        }
    }

    // MARK: Retry

    /// Re-runs an open erasure for the participants not yet done: their failure count resets, the erasure is
    /// dispatched again and a command goes out now.
    func retry(_ id: String, at now: Date = Date()) async throws -> RetryEffect {
        try await write { [self] db in
            guard let status = try String.fetchOne(db, sql: "SELECT status FROM erasures WHERE id = ?", arguments: [id])
            else { return .notFound }
            if status == ErasureStatus.completed.rawValue { return .alreadyCompleted }
            if status == ErasureStatus.pending.rawValue {
                try dispatchIfPossible(id, at: now, cache: TransactionCache(), in: db)
                return .retried
            }
            try db.execute(
                sql: """
                    UPDATE erasure_participants SET failed_attempts = 0, outcome = NULL, sends = sends + 1,
                        last_sent_at = ? WHERE erasure_id = ? AND (outcome IS NULL OR outcome = 'failed')
                    """, arguments: [now.timeIntervalSince1970, id])
            try db.execute(
                sql: "UPDATE erasures SET status = 'dispatched', updated_at = ? WHERE id = ?",
                arguments: [now.timeIntervalSince1970, id])
            try enqueueCommand(id, in: db)
            return .retried
        }
    }
}
