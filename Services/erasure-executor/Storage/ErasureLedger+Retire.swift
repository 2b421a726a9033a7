import Contracts
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

    /// An operator retires participant `name` for `reason` at `now`: it is no longer declared (a declaration made
    /// before then is ignored when the topic is read again; a later one makes it take part again), and in every open
    /// erasure that waits for it its outcome becomes `waived` with the reason, which completes the erasures that
    /// waited for it alone — each audited with the waiver in its entry. One transaction.
    ///
    /// `recorded`: the retirement is recorded too, and published on the participants topic (``ParticipantRetired``,
    /// keyed by the participant, through the outbox) for every replica and every later start — by the replica that
    /// took the operator's request, with `elsewhere`, what the other replicas waived in their partitions' erasures
    /// (they retire with `recorded: false`, and record it when they read it on the topic).
    func retire(
        _ name: String, reason: String, at now: Date = Date(), recorded: Bool = true,
        elsewhere: (waived: [String], completed: [String]) = ([], [])
    ) async throws -> RetireEffect {
        try await write { [self] db in
            let declared = try Bool.fetchOne(
                db, sql: "SELECT 1 FROM participants WHERE name = ?", arguments: [name]) == true
            let (waiting, completed) = try waiveRetired(name, reason: reason, retiredAt: now, at: now, in: db)
            guard declared || !waiting.isEmpty || !elsewhere.waived.isEmpty else { return .notFound }
            try Self.endDeclaration(of: name, before: now, in: db)
            let retirement = Retirement(
                participant: name, reason: reason, retiredAt: now, waived: waiting + elsewhere.waived,
                completed: completed + elsewhere.completed)
            if recorded {
                let event = ParticipantRetired(
                    participant: name, reason: reason, retiredAt: now, waived: retirement.waived.count,
                    completed: retirement.completed.count)
                _ = try Self.recordRetirement(event, published: true, in: db)
            }
            return .retired(retirement)
        }
    }

    /// A retirement read on the participants topic: applied unless this replica recorded it already — its declaration
    /// ends, it is waived in the open erasures that still wait for it (those of this replica's partitions that the
    /// replica which took the request could not reach), and it is recorded with the counts it was published with,
    /// not published again. Inside the caller's transaction; whether it was new.
    func applyRetirement(_ event: ParticipantRetired, in db: GRDB.Database) throws -> Bool {
        guard try !Self.isRecorded(event, in: db) else { return false }
        _ = try waiveRetired(event.participant, reason: event.reason, retiredAt: event.retiredAt, in: db)
        try Self.endDeclaration(of: event.participant, before: event.retiredAt, in: db)
        return try Self.recordRetirement(event, published: false, in: db)
    }

    /// Whether this file recorded `event` (a retirement of its participant at its time, to the millisecond).
    private static func isRecorded(_ event: ParticipantRetired, in db: GRDB.Database) throws -> Bool {
        try Bool.fetchOne(db, sql: """
            SELECT 1 FROM participant_retirements WHERE participant = ? AND abs(retired_at - ?) < 0.001
            """, arguments: [event.participant, event.retiredAt.timeIntervalSince1970]) == true
    }

    /// Records `event` unless it is recorded already; whether it was new. `published`: its record goes out on the
    /// participants topic (a trigger lists it, ErasureLedger+Changelog publishes it); a retirement read from a topic
    /// is not published again.
    static func recordRetirement(_ event: ParticipantRetired, published: Bool, in db: GRDB.Database) throws -> Bool {
        guard try !isRecorded(event, in: db) else { return false }
        try db.execute(
            sql: """
                INSERT INTO participant_retirements (participant, reason, retired_at, waived, completed)
                VALUES (?, ?, ?, ?, ?)
                """,
            arguments: [
                event.participant, event.reason, event.retiredAt.timeIntervalSince1970, event.waived, event.completed,
            ])
        if !published {
            try db.execute(sql: "DELETE FROM retirement_changes WHERE retirement = ?", arguments: [db.lastInsertedRowID])
        }
        return true
    }

    /// Ends `name`'s declaration unless it declared again after `time`.
    private static func endDeclaration(of name: String, before time: Date, in db: GRDB.Database) throws {
        try db.execute(
            sql: "DELETE FROM participants WHERE name = ? AND declared_at <= ?",
            arguments: [name, time.timeIntervalSince1970])
    }

    /// Waives every retired participant in the open erasures that still wait for it (see `waiveRetired`): those read
    /// back from the changelog of a partition whose previous owner had not applied the retirement yet. Returns how
    /// many erasures it completed.
    func waiveRetiredInRestored() async throws -> Int {
        try await write { [self] db in
            let retirements = try Row.fetchAll(db, sql: """
                SELECT r.participant, r.reason, r.retired_at FROM participant_retirements r
                WHERE r.retired_at = (SELECT max(retired_at) FROM participant_retirements WHERE participant = r.participant)
                  AND EXISTS (SELECT 1 FROM erasure_participants p JOIN erasures e ON e.id = p.erasure_id
                      WHERE p.participant = r.participant AND (p.outcome IS NULL OR p.outcome = 'failed')
                        AND e.account_id IS NOT NULL)
                """)
            var completed = 0
            for row in retirements {
                completed += try waiveRetired(
                    row["participant"], reason: row["reason"],
                    retiredAt: Date(timeIntervalSince1970: row["retired_at"]), in: db
                ).completed.count
            }
            return completed
        }
    }

    /// Waives `name` with `reason` in the open erasures that wait for it — every one, unless it declared again after
    /// `retiredAt` (then only those opened by the retirement: it joined the others as a participant again) — and
    /// returns the erasures it waived and those that completed. Every one, not only those opened before the
    /// retirement, because a replica that learns of it late (from the topic, or a partition's changelog) opened
    /// erasures for the participant meanwhile, and nothing else would ever complete them.
    private func waiveRetired(
        _ name: String, reason: String, retiredAt: Date, at now: Date = Date(), in db: GRDB.Database
    ) throws
        -> (waived: [String], completed: [String])
    {
        let declaredAgain = try Bool.fetchOne(
            db, sql: "SELECT 1 FROM participants WHERE name = ? AND declared_at > ?",
            arguments: [name, retiredAt.timeIntervalSince1970]) == true
        let waiting = try String.fetchAll(
            db, sql: """
                SELECT e.id FROM erasure_participants p JOIN erasures e ON e.id = p.erasure_id
                WHERE p.participant = ? AND (p.outcome IS NULL OR p.outcome = 'failed')
                  AND e.account_id IS NOT NULL AND e.created_at <= ?
                ORDER BY e.row
                """, arguments: [name, declaredAgain ? retiredAt.timeIntervalSince1970 : Double.greatestFiniteMagnitude])
        let cache = TransactionCache()
        var completed: [String] = []
        for id in waiting where try waive(name, in: id, reason: reason, at: now, cache: cache, db: db) {
            completed.append(id)
        }
        return (waiting, completed)
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
