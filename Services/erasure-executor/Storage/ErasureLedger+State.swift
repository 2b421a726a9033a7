import Contracts
import Foundation
import GRDB

extension ErasureLedger {
    // MARK: State restored from compacted topics

    /// The longest deadline a tenant can configure, in days; a longer one is capped to it.
    static let maximumDeadlineDays = TenantConfigured.deadlineDaysRange.upperBound

    /// One record of a state topic, as the state reader hands it to the ledger.
    enum StateChange: Sendable {
        /// `TenantConfigured` (its `deadlineDays` already checked: ≥ 1, capped at 30).
        case tenant(TenantConfigured)
        /// A tenant tombstone.
        case removeTenant(String)
        /// `ParticipantDeclared`, with the record's time for the comparison with a retirement.
        case participant(ParticipantDeclared)
        /// A declaration that could not be read (dead-lettered): the participant named by the record key is kept
        /// (or entered) as declared, so that no erasure completes without it while the declaration is broken.
        case rejectedParticipant(name: String, reason: String, at: Date)
        /// A participant tombstone.
        case removeParticipant(String)
        /// `ParticipantRetired`: an operator retired the participant (through any replica).
        case retired(ParticipantRetired)
        /// A record of a state topic sent to its DLQ: remembered so that the re-read at the next start does not send
        /// it again.
        case deadLettered(topic: String, partition: Int32, offset: Int64, reason: String)
    }

    /// What applying state changes did.
    struct StateEffect: Sendable, Equatable {
        /// Commands enqueued for open erasures that a newly declared participant joined.
        var joined = 0
        /// Declarations ignored because the participant was retired after them.
        var ignoredRetired: [String] = []
        /// Retirements applied (not applied before on this replica).
        var retirements = 0
    }

    /// Applies state records in order, in one transaction. With `joinOpenErasures` (once the start-up restore is
    /// over), a declared participant also joins every open erasure that does not wait for it yet: it gets their
    /// command and they wait for its acknowledgement. During the restore it does not: a declaration read then may be
    /// followed by its tombstone, and ``finishRestore(participants:tenants:at:)`` joins the participants that are
    /// still declared at the end.
    func applyState(_ changes: [StateChange], joinOpenErasures: Bool, at now: Date = Date()) async throws -> StateEffect {
        try await write { [self] db in
            var effect = StateEffect()
            for change in changes {
                try apply(change, joinOpenErasures: joinOpenErasures, to: &effect, at: now, in: db)
            }
            return effect
        }
    }

    /// One record of ``applyState(_:joinOpenErasures:at:)``, inside its transaction.
    private func apply(
        _ change: StateChange, joinOpenErasures: Bool, to effect: inout StateEffect, at now: Date,
        in db: GRDB.Database
    ) throws {
        switch change {
        case .tenant(let event):
            try Self.upsertTenant(event, at: now, in: db)
        case .removeTenant(let tenantId):
            try db.execute(sql: "DELETE FROM tenants WHERE tenant_id = ?", arguments: [tenantId])
        case .participant(let event):
            if try Self.retiredSince(event.participant, before: event.declaredAt, in: db) {
                effect.ignoredRetired.append(event.participant)
                return
            }
            try db.execute(
                sql: """
                    INSERT INTO participants (name, holds, declared_at, rejected) VALUES (?, ?, ?, NULL)
                    ON CONFLICT (name) DO UPDATE SET holds = excluded.holds,
                        declared_at = excluded.declared_at, rejected = NULL
                    """,
                arguments: [
                    event.participant, event.holds.joined(separator: ","),
                    event.declaredAt.timeIntervalSince1970,
                ])
            if joinOpenErasures { effect.joined += try join(event.participant, at: now, in: db) }
        case .rejectedParticipant(let name, let reason, let at):
            if try Self.retiredSince(name, before: at, in: db) {
                effect.ignoredRetired.append(name)
                return
            }
            // The last readable declaration's holds and time stay; only the flag says it is broken now.
            try db.execute(
                sql: """
                    INSERT INTO participants (name, holds, declared_at, rejected) VALUES (?, '', ?, ?)
                    ON CONFLICT (name) DO UPDATE SET rejected = excluded.rejected
                    """,
                arguments: [name, at.timeIntervalSince1970, reason])
            if joinOpenErasures { effect.joined += try join(name, at: now, in: db) }
        case .removeParticipant(let name):
            try db.execute(sql: "DELETE FROM participants WHERE name = ?", arguments: [name])
        case .retired(let event):
            if try applyRetirement(event, in: db) { effect.retirements += 1 }
        case .deadLettered(let topic, let partition, let offset, let reason):
            try db.execute(
                sql: """
                    INSERT INTO state_dead_letters (topic, partition, "offset", reason, at) VALUES (?, ?, ?, ?, ?)
                    ON CONFLICT DO NOTHING
                    """,
                arguments: [topic, partition, offset, reason, now.timeIntervalSince1970])
        }
    }

    /// Records (or replaces) a tenant's settings.
    private static func upsertTenant(_ event: TenantConfigured, at now: Date, in db: GRDB.Database) throws {
        // The state reader dead-letters < 1 and caps > 30 already; the ledger holds the bounds for any other caller too.
        let days = min(max(event.deadlineDays, 1), Self.maximumDeadlineDays)
        try db.execute(
            sql: """
                INSERT INTO tenants (tenant_id, policy, deadline_days, app_ids, updated_at)
                VALUES (?, ?, ?, ?, ?)
                ON CONFLICT (tenant_id) DO UPDATE SET policy = excluded.policy,
                    deadline_days = excluded.deadline_days, app_ids = excluded.app_ids,
                    updated_at = excluded.updated_at
                """,
            arguments: [
                event.tenantId, event.erasurePolicy.rawValue, days,
                event.apps.map(\.appId).joined(separator: "\n"), now.timeIntervalSince1970,
            ])
    }

    /// Which of these state-topic records were dead-lettered already (by an earlier start).
    func deadLettered(_ positions: [(topic: String, partition: Int32, offset: Int64)]) async throws
        -> Set<String>
    {
        try await database.read { db in
            var found: Set<String> = []
            for position in positions where try Bool.fetchOne(
                db, sql: """
                    SELECT 1 FROM state_dead_letters WHERE topic = ? AND partition = ? AND "offset" = ?
                    """, arguments: [position.topic, position.partition, position.offset]) == true
            {
                found.insert("\(position.topic):\(position.partition):\(position.offset)")
            }
            return found
        }
    }

    /// Ends the start-up restore: the tenants and participants topics were read to their end, and `participants`
    /// and `tenants` are the keys whose last record there is not a tombstone. Rows for other keys go (their
    /// tombstones may have been compacted away while the executor was down). Every participant still declared joins
    /// the open erasures that do not wait for it yet (it declared while the executor was down, or while they were
    /// open). Returns the commands enqueued.
    func finishRestore(participants: Set<String>, tenants: Set<String>, at now: Date = Date()) async throws -> Int {
        try await write { [self] db in
            for name in try String.fetchAll(db, sql: "SELECT name FROM participants") where !participants.contains(name) {
                try db.execute(sql: "DELETE FROM participants WHERE name = ?", arguments: [name])
            }
            for tenant in try String.fetchAll(db, sql: "SELECT tenant_id FROM tenants") where !tenants.contains(tenant) {
                try db.execute(sql: "DELETE FROM tenants WHERE tenant_id = ?", arguments: [tenant])
            }
            var joined = 0
            for name in try String.fetchAll(db, sql: "SELECT name FROM participants ORDER BY name") {
                joined += try join(name, at: now, in: db)
            }
            return joined
        }
    }

    /// Whether `name` was retired at or after `time`: a declaration made before its retirement is ignored (the
    /// compacted topic still holds it); a later one is a new declaration and the participant takes part again.
    private static func retiredSince(_ name: String, before time: Date, in db: GRDB.Database) throws -> Bool {
        guard let retiredAt = try Double.fetchOne(
            db.cachedStatement(sql: "SELECT max(retired_at) FROM participant_retirements WHERE participant = ?"),
            arguments: [name])
        else { return false }
        return time.timeIntervalSince1970 <= retiredAt
    }

    /// Adds participant `name` to every open, dispatched erasure that does not wait for it yet, and enqueues each of
    /// those erasures' command (all participants read the same topic; the others re-ack what they recorded).
    private func join(_ name: String, at now: Date, in db: GRDB.Database) throws -> Int {
        let ids = try String.fetchAll(
            db.cachedStatement(sql: """
                SELECT e.id FROM erasures e
                WHERE e.status IN ('dispatched', 'needs-attention') AND e.account_id IS NOT NULL
                  AND NOT EXISTS (SELECT 1 FROM erasure_participants p WHERE p.erasure_id = e.id AND p.participant = ?)
                ORDER BY e.row
                """), arguments: [name])
        guard !ids.isEmpty else { return 0 }
        let t = now.timeIntervalSince1970
        for id in ids {
            try insertParticipants([name], of: id, at: t, in: db)
            try db.cachedStatement(sql: "UPDATE erasures SET updated_at = ? WHERE id = ?").execute(arguments: [t, id])
            try enqueueCommand(id, in: db)
        }
        return ids.count
    }

    /// Records (or replaces) a tenant's settings from `TenantConfigured`.
    func configureTenant(_ event: TenantConfigured, at now: Date = Date()) async throws {
        _ = try await applyState([.tenant(event)], joinOpenErasures: true, at: now)
    }

    /// A tenant tombstone: its erasures fall back to the defaults.
    func removeTenant(_ tenantId: String) async throws {
        _ = try await applyState([.removeTenant(tenantId)], joinOpenErasures: true)
    }

    /// Records a participant from `ParticipantDeclared`: open erasures wait for it from now on (they are re-sent to
    /// it), pending erasures are dispatched by the next sweep.
    @discardableResult
    func declareParticipant(_ event: ParticipantDeclared, at now: Date = Date()) async throws -> StateEffect {
        try await applyState([.participant(event)], joinOpenErasures: true, at: now)
    }

    /// A participant tombstone: later erasures do not wait for it (open ones still do: they were promised to it; an
    /// operator who knows it is gone for good retires it, see ``retire(_:reason:at:)``).
    func removeParticipant(_ name: String) async throws {
        _ = try await applyState([.removeParticipant(name)], joinOpenErasures: true)
    }

    /// The declared participants' names.
    func participants() async throws -> [String] {
        try await database.read { db in try String.fetchAll(db, sql: "SELECT name FROM participants ORDER BY name") }
    }

    /// The declared participants and every retirement, for the operator.
    func participantsOverview() async throws -> ParticipantsOverview {
        try await database.read { db in
            let declared = try Row.fetchAll(
                db, sql: """
                    SELECT name, holds, declared_at, rejected,
                        (SELECT max(acked_at) FROM erasure_participants WHERE participant = name) AS last_ack,
                        (SELECT count(*) FROM erasure_participants p JOIN erasures e ON e.id = p.erasure_id
                            WHERE p.participant = name AND (p.outcome IS NULL OR p.outcome = 'failed')
                                AND e.status != 'completed') AS awaited
                    FROM participants ORDER BY name
                    """
            ).map { row in
                let holds: String = row["holds"]
                return ParticipantsOverview.Declared(
                    participant: row["name"], holds: holds.split(separator: ",").map(String.init),
                    declaredAt: Date(timeIntervalSince1970: row["declared_at"]), rejectedDeclaration: row["rejected"],
                    lastAckAt: (row["last_ack"] as Double?).map(Date.init(timeIntervalSince1970:)),
                    awaited: row["awaited"])
            }
            let retired = try Row.fetchAll(
                db, sql: """
                    SELECT participant, reason, retired_at, waived, completed FROM participant_retirements ORDER BY row
                    """
            ).map { row in
                ParticipantsOverview.Retirement(
                    participant: row["participant"], reason: row["reason"],
                    retiredAt: Date(timeIntervalSince1970: row["retired_at"]), waived: row["waived"],
                    completed: row["completed"])
            }
            return ParticipantsOverview(declared: declared, retirements: retired)
        }
    }

    /// The tenants whose configured apps include `appId` (for an `ErasureRequested` without a tenant).
    func tenants(usingApp appId: String) async throws -> [String] {
        try await database.read { db in try Self.tenants(usingApp: appId, in: db) }
    }

    static func tenants(usingApp appId: String, in db: GRDB.Database) throws -> [String] {
        try Row.fetchAll(db, sql: "SELECT tenant_id, app_ids FROM tenants ORDER BY tenant_id").compactMap { row in
            let apps: String = row["app_ids"]
            return apps.split(separator: "\n").contains(Substring(appId)) ? row["tenant_id"] : nil
        }
    }

    /// The app ids a tenant configured, or nil for an unknown tenant.
    func apps(ofTenant tenantId: String) async throws -> [String]? {
        try await database.read { db in
            try String.fetchOne(db, sql: "SELECT app_ids FROM tenants WHERE tenant_id = ?", arguments: [tenantId])
                .map { $0.split(separator: "\n").map(String.init) }
        }
    }

    /// A tenant's configured deadline in days, or nil for an unknown tenant.
    func deadlineDays(ofTenant tenantId: String) async throws -> Int? {
        try await database.read { db in
            try Int.fetchOne(db, sql: "SELECT deadline_days FROM tenants WHERE tenant_id = ?", arguments: [tenantId])
        }
    }
}
