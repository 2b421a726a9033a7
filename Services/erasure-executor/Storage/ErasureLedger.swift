import Contracts
import Foundation
import GRDB
import Messaging
import Storage

/// Where an erasure stands. `overdue` is a separate flag: an erasure can be dispatched and overdue at once.
enum ErasureStatus: String, Codable, Sendable, CaseIterable {
    /// Recorded, but no participant is declared yet: dispatched as soon as one is.
    case pending
    /// `EraseSubject` is out (in the outbox or on the topic); waiting for acks.
    case dispatched
    /// Every participant declared at dispatch acked with a non-failed outcome; audited; raw accountId gone.
    case completed
    /// A participant failed `ERASURE_MAX_FAILED_ATTEMPTS` times: no more re-sends until the retry API.
    case needsAttention = "needs-attention"
}

extension ErasurePolicy {
    /// delete > scrub > disassociate.
    var strictness: Int {
        switch self {
        case .delete: 3
        case .scrub: 2
        case .disassociate: 1
        }
    }

    /// The stricter of the two.
    func atLeast(_ other: ErasurePolicy) -> ErasurePolicy { other.strictness > strictness ? other : self }
}

/// One erasure to open (or join): what intake turns a `closed` status, an `ErasureRequested` or an API call into.
struct IntakeRequest: Sendable, Equatable {
    var tenantId: String
    var appId: String
    var accountId: String
    var cause: ErasureCause
    /// An explicit policy from the request; it can only make the tenant's policy stricter.
    var requestedPolicy: ErasurePolicy?
}

/// Ledger behaviour that comes from configuration.
struct LedgerSettings: Sendable {
    var resendAfter: TimeInterval
    var maxFailedAttempts: Int
    var daySeconds: TimeInterval
    var commandsTopic: String
    var completedTopic: String
    /// Applied when a tenant never published `TenantConfigured`: the strictest policy, the architecture's default
    /// deadline. Erasing too much is recoverable by re-sign-in; keeping data of a closed account is not.
    var defaultPolicy: ErasurePolicy = .delete
    var defaultDeadlineDays = 30
    var source = "lethe/erasure-executor"
}

/// What applying an ack did.
enum AckEffect: Sendable, Equatable {
    /// Unknown erasure, not open, participant not required, or a repeat of a recorded outcome.
    case ignored
    /// Recorded; the erasure is still open. `latency` is the time from issue to this ack.
    case recorded(latency: TimeInterval?)
    /// Recorded, and it completed the erasure.
    case completed(latency: TimeInterval?)
}

/// What the retry API found.
enum RetryEffect: Sendable, Equatable {
    case retried
    case notFound
    case alreadyCompleted
}

/// A participant's state within one erasure, as the API shows it.
struct ParticipantState: Codable, Sendable, Equatable {
    var participant: String
    /// What it acknowledged, or `waived` (retired by an operator; `detail` is then the reason); nil while awaited.
    var outcome: CompletedOutcome?
    var detail: String?
    var failedAttempts: Int
    var sends: Int
    var lastSentAt: Date?
    var ackedAt: Date?
}

/// An erasure as the API shows it. `accountId` is present only while the erasure is open.
struct ErasureRecord: Codable, Sendable, Equatable {
    var id: String
    /// The `erasureId` its commands carry (and its acks must), when it is not `id`: an erasure upgraded to
    /// `atlassian-closed` after dispatch is commanded again under a new id.
    var commandId: String?
    var tenantId: String
    var appId: String
    var accountId: String?
    var subject: String
    var policy: ErasurePolicy
    var cause: ErasureCause
    var status: ErasureStatus
    var overdue: Bool
    var deadline: Date
    var requests: Int
    var createdAt: Date
    var updatedAt: Date
    var completedAt: Date?
    var participants: [ParticipantState]
}

/// The participants as the operator sees them (`GET /v1/participants`).
struct ParticipantsOverview: Codable, Sendable, Equatable {
    struct Declared: Codable, Sendable, Equatable {
        var participant: String
        var holds: [String]
        var declaredAt: Date
        /// Why its latest declaration was rejected (dead-lettered), if it was: erasures wait for it all the same.
        var rejectedDeclaration: String?
    }

    struct Retirement: Codable, Sendable, Equatable {
        var participant: String
        var reason: String
        var retiredAt: Date
        /// Open erasures in which it was waived.
        var waived: Int
        /// Of them, completed by the retirement.
        var completed: Int
    }

    var declared: [Declared]
    var retirements: [Retirement]
}

/// Counts for the gauges.
struct LedgerCounts: Sendable, Equatable {
    var byStatus: [ErasureStatus: Int]
    var open: Int
    var overdue: Int
    /// Declared participants whose latest declaration was rejected.
    var rejectedDeclarations = 0
}

/// The executor's SQLite file: tenants' settings and participants (restored from compacted topics), the erasure
/// ledger, per-participant state, the hash-chained audit and the outbox. Every write method is one transaction, and
/// every record it must announce (`EraseSubject`, `ErasureCompleted`) is enqueued in that same transaction.
///
/// No name, email, nickname or picture ever enters it: commands and acks carry ids only. The raw accountId lives in
/// `erasures.account_id` (and in the unsent commands) while the erasure is open and is set to NULL in the transaction
/// that appends its audit entry; only the HMAC subject stays. Processed event ids, which can contain an accountId,
/// are kept as HMACs.
final class ErasureLedger: Sendable {
    let database: SQLiteDatabase
    let settings: LedgerSettings
    let keys: AuditKeys

    init(path: String, settings: LedgerSettings, keys: AuditKeys) throws {
        // secure_delete: a forgotten accountId is overwritten with zeros in the file instead of lingering in a free page.
        database = try SQLiteDatabase(path: path, migrations: Self.migrations, secureDelete: true)
        // The writer's page cache at 64 MiB instead of SQLite's 2 MiB default: a burst of erasures touches index pages
        // all over the file, and with the small cache most of the writer's time went to re-reading them from the OS
        // (pread and its copies). Memory is only used as pages are touched.
        try database.pool.writeWithoutTransaction { db in try db.execute(sql: "PRAGMA cache_size = -65536") }
        self.settings = settings
        self.keys = keys
        try Self.digestRawEventIds(in: database, keys: keys)
    }

    /// Files written before event ids were recorded as ``AuditKeys/eventDigest(_:)`` hold raw ids, some with an
    /// accountId in them: replaced once, at open (secure_delete zeroes the old values).
    private static func digestRawEventIds(in database: SQLiteDatabase, keys: AuditKeys) throws {
        try database.pool.write { db in
            // Two range scans of the primary key (everything before and after the `h:` prefix), not a scan of every
            // event ever processed: once converted, this costs nothing at each start.
            let raw = try String.fetchAll(db, sql: """
                SELECT event_id FROM lethe_processed_events WHERE consumer = 'intake' AND event_id < 'h:'
                UNION ALL
                SELECT event_id FROM lethe_processed_events WHERE consumer = 'intake' AND event_id >= 'h;'
                """)
            for eventId in raw {
                try db.execute(
                    sql: "UPDATE lethe_processed_events SET event_id = ? WHERE consumer = 'intake' AND event_id = ?",
                    arguments: [keys.eventDigest(eventId), eventId])
            }
        }
    }

    static let migrations: [Migration] = [
        Migration("erasure-executor.v1.schema") { db in
            try db.execute(sql: """
                CREATE TABLE tenants (
                    tenant_id TEXT PRIMARY KEY,
                    policy TEXT NOT NULL,
                    deadline_days INTEGER NOT NULL,
                    app_ids TEXT NOT NULL,
                    updated_at REAL NOT NULL
                );
                CREATE TABLE participants (
                    name TEXT PRIMARY KEY,
                    holds TEXT NOT NULL,
                    declared_at REAL NOT NULL
                );
                CREATE TABLE erasures (
                    row INTEGER PRIMARY KEY AUTOINCREMENT,
                    id TEXT NOT NULL UNIQUE,
                    tenant_id TEXT NOT NULL,
                    app_id TEXT NOT NULL,
                    account_id TEXT,
                    subject TEXT NOT NULL,
                    policy TEXT NOT NULL,
                    cause TEXT NOT NULL,
                    status TEXT NOT NULL,
                    overdue INTEGER NOT NULL DEFAULT 0,
                    deadline REAL NOT NULL,
                    requests INTEGER NOT NULL DEFAULT 1,
                    issued_at REAL,
                    created_at REAL NOT NULL,
                    updated_at REAL NOT NULL,
                    completed_at REAL
                );
                CREATE UNIQUE INDEX erasures_open_key ON erasures(tenant_id, app_id, account_id)
                    WHERE account_id IS NOT NULL;
                CREATE INDEX erasures_by_tenant ON erasures(tenant_id, row);
                CREATE INDEX erasures_open ON erasures(status) WHERE status != 'completed';
                CREATE TABLE erasure_participants (
                    erasure_id TEXT NOT NULL REFERENCES erasures(id),
                    participant TEXT NOT NULL,
                    outcome TEXT,
                    detail TEXT,
                    failed_attempts INTEGER NOT NULL DEFAULT 0,
                    sends INTEGER NOT NULL DEFAULT 0,
                    last_sent_at REAL,
                    acked_at REAL,
                    PRIMARY KEY (erasure_id, participant)
                ) WITHOUT ROWID;
                CREATE TABLE audit_log (
                    sequence INTEGER PRIMARY KEY,
                    erasure_id TEXT NOT NULL UNIQUE,
                    subject TEXT NOT NULL,
                    tenant_id TEXT NOT NULL,
                    policy TEXT NOT NULL,
                    cause TEXT NOT NULL,
                    outcomes TEXT NOT NULL,
                    completed_at_ms INTEGER NOT NULL,
                    previous_hash TEXT NOT NULL,
                    entry_hash TEXT NOT NULL,
                    signature TEXT NOT NULL,
                    key_id TEXT NOT NULL
                );
                CREATE INDEX audit_by_time ON audit_log(completed_at_ms);
                """)
        },
        // Every per-erasure statement must be an index lookup: without these, completing one erasure scanned the whole
        // outbox (DELETE … WHERE topic = ? AND key = ?: 13 ms at 10k rows) and every sweep scanned all erasures and
        // their participants, so throughput fell as the backlog grew.
        Migration("erasure-executor.v2.indexes") { db in
            // For the sweep (pending, waiting participants, deadlines) and for completion (other open erasures of
            // the same account); Storage indexes the outbox by key.
            try db.execute(sql: """
                CREATE INDEX erasures_open_account ON erasures(app_id, account_id) WHERE account_id IS NOT NULL;
                CREATE INDEX erasures_pending ON erasures(id) WHERE status = 'pending';
                CREATE INDEX erasures_open_deadline ON erasures(deadline) WHERE account_id IS NOT NULL AND overdue = 0;
                CREATE INDEX erasure_participants_waiting ON erasure_participants(last_sent_at)
                    WHERE outcome IS NULL OR outcome = 'failed';
                """)
        },
        // The overdue gauge counted by scanning every erasure ever recorded; open overdue ones are few.
        Migration("erasure-executor.v3.overdue-index") { db in
            try db.execute(sql: """
                CREATE INDEX erasures_open_overdue ON erasures(id) WHERE overdue = 1 AND account_id IS NOT NULL;
                """)
        },
        // Issue 15: a declaration that cannot be read keeps its participant (flagged), operators retire participants
        // (history kept; open erasures waiting for one are completed with it `waived`), and a state-topic record sent
        // to its DLQ is remembered so the re-read at each start does not send it again.
        Migration("erasure-executor.v4.participants-lifecycle") { db in
            try db.execute(sql: """
                ALTER TABLE participants ADD COLUMN rejected TEXT;
                ALTER TABLE erasures ADD COLUMN command_id TEXT;
                CREATE UNIQUE INDEX erasures_by_command ON erasures(command_id) WHERE command_id IS NOT NULL;
                CREATE TABLE participant_retirements (
                    row INTEGER PRIMARY KEY AUTOINCREMENT,
                    participant TEXT NOT NULL,
                    reason TEXT NOT NULL,
                    retired_at REAL NOT NULL,
                    waived INTEGER NOT NULL,
                    completed INTEGER NOT NULL
                );
                CREATE INDEX participant_retirements_by_name ON participant_retirements(participant, retired_at);
                CREATE TABLE state_dead_letters (
                    topic TEXT NOT NULL,
                    partition INTEGER NOT NULL,
                    "offset" INTEGER NOT NULL,
                    reason TEXT NOT NULL,
                    at REAL NOT NULL,
                    PRIMARY KEY (topic, partition, "offset")
                ) WITHOUT ROWID;
                CREATE INDEX erasure_participants_waiting_by_name ON erasure_participants(participant)
                    WHERE outcome IS NULL OR outcome = 'failed';
                """)
        },
    ]

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
    }

    /// Applies state records in order, in one transaction. With `joinOpenErasures` (once the start-up restore is
    /// over), a declared participant also joins every open erasure that does not wait for it yet: it gets their
    /// command and they wait for its acknowledgement. During the restore it does not: a declaration read then may be
    /// followed by its tombstone, and ``finishRestore(participants:tenants:at:)`` joins the participants that are
    /// still declared at the end.
    func applyState(_ changes: [StateChange], joinOpenErasures: Bool, at now: Date = Date()) async throws -> StateEffect {
        try await database.write { [self] db in
            var effect = StateEffect()
            for change in changes {
                switch change {
                case .tenant(let event):
                    // The state reader dead-letters < 1 and caps > 30 already; the ledger holds the bounds for any
                    // other caller too.
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
                case .removeTenant(let tenantId):
                    try db.execute(sql: "DELETE FROM tenants WHERE tenant_id = ?", arguments: [tenantId])
                case .participant(let event):
                    if try Self.retiredSince(event.participant, before: event.declaredAt, in: db) {
                        effect.ignoredRetired.append(event.participant)
                        continue
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
                        continue
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
                case .deadLettered(let topic, let partition, let offset, let reason):
                    try db.execute(
                        sql: """
                            INSERT INTO state_dead_letters (topic, partition, "offset", reason, at) VALUES (?, ?, ?, ?, ?)
                            ON CONFLICT DO NOTHING
                            """,
                        arguments: [topic, partition, offset, reason, now.timeIntervalSince1970])
                }
            }
            return effect
        }
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
        try await database.write { [self] db in
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
                db, sql: "SELECT name, holds, declared_at, rejected FROM participants ORDER BY name"
            ).map { row in
                let holds: String = row["holds"]
                return ParticipantsOverview.Declared(
                    participant: row["name"], holds: holds.split(separator: ",").map(String.init),
                    declaredAt: Date(timeIntervalSince1970: row["declared_at"]), rejectedDeclaration: row["rejected"])
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

    private static func tenants(usingApp appId: String, in db: GRDB.Database) throws -> [String] {
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
        try await database.write { [self] db in
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
            // Milliseconds, like acks: the audit keeps times to the millisecond.
            let at = Double(now.milliseconds) / 1000
            try db.execute(sql: "DELETE FROM participants WHERE name = ?", arguments: [name])
            let cache = TransactionCache()
            var completed: [String] = []
            for id in waiting {
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
                    completed.append(id)
                } else {
                    // It may have needed attention because of this participant alone.
                    let stuck = try Int.fetchOne(
                        db, sql: """
                            SELECT count(*) FROM erasure_participants
                            WHERE erasure_id = ? AND outcome = 'failed' AND failed_attempts >= ?
                            """, arguments: [id, settings.maxFailedAttempts]) ?? 0
                    let status = stuck > 0 ? ErasureStatus.needsAttention : .dispatched
                    try db.execute(
                        sql: "UPDATE erasures SET status = ?, updated_at = ? WHERE id = ?",
                        arguments: [status.rawValue, t, id])
                }
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

    // MARK: Intake

    /// What one write transaction reads once and reuses for every item of a batch: the declared participants and the
    /// audit chain's tail. It lives inside one transaction only, and the writer is
    /// serialized, so nothing outside can change what it caches while it is used.
    final class TransactionCache {
        private var participantNames: [String]?
        /// The last audit entry's sequence and hash once read; updated by every entry appended in this transaction.
        var auditTail: (sequence: Int, hash: String)?

        /// The declared participants, by name.
        func participants(in db: GRDB.Database) throws -> [String] {
            if let participantNames { return participantNames }
            let names = try String.fetchAll(db.cachedStatement(sql: "SELECT name FROM participants ORDER BY name"))
            participantNames = names
            return names
        }
    }

    /// Opens an erasure per request, or joins the open one of the same (tenant, app, account), and enqueues the
    /// commands, all in one transaction. With `eventId`, a redelivered event is recognised and changes nothing
    /// (returns nil). Returns the erasure ids, one per request.
    func intake(_ requests: [IntakeRequest], eventId: String? = nil, at now: Date = Date()) async throws -> [String]? {
        try await database.write { [self] db in
            try intake(requests, eventId: eventId, at: now, cache: TransactionCache(), in: db)
        }
    }

    private func intake(
        _ requests: [IntakeRequest], eventId: String?, at now: Date, cache: TransactionCache, in db: GRDB.Database
    ) throws -> [String]? {
        if let eventId, try !Self.recordProcessed(keys.eventDigest(eventId), at: now, in: db) { return nil }
        return try requests.map { try openOrJoin($0, at: now, cache: cache, in: db) }
    }

    /// `ProcessedEvents.record(_:consumer:"intake")` with a cached statement: intake records one event per status,
    /// and compiling the same INSERT for each was a visible share of a batch. Same table, same first-outcome-stands
    /// semantics; returns false when `digest` (the event id's ``AuditKeys/eventDigest(_:)``) was already recorded.
    private static func recordProcessed(_ digest: String, at now: Date, in db: GRDB.Database) throws -> Bool {
        try db.cachedStatement(sql: """
            INSERT INTO lethe_processed_events (consumer, event_id, outcome, processed_at) VALUES ('intake', ?, '', ?)
            ON CONFLICT (consumer, event_id) DO NOTHING
            """).execute(arguments: [digest, now.timeIntervalSince1970])
        return db.changesCount == 1
    }

    /// What intake hands the ledger for one record.
    enum IntakeWork: Sendable {
        /// A closed status or an API request: open or join these erasures (once per `eventId`).
        case open([IntakeRequest], eventId: String)
        /// An `ErasureRequested` without a tenant: every tenant configured with `appId`, read in the same transaction.
        case openForApp(appId: String, accountId: String, cause: ErasureCause, policy: ErasurePolicy?, eventId: String)
        case ack(ErasureAcknowledged)
    }

    enum IntakeEffect: Sendable, Equatable {
        case opened(Int)
        case repeated
        case ack(AckEffect)
        /// Nothing applied, nothing recorded: the record goes to the DLQ with this reason (a replay after the cause
        /// is fixed, e.g. the tenant configured, is applied then).
        case rejected(String)
    }

    /// Applies a batch of intake records in ONE transaction (one WAL append, one fsync at synchronous=FULL), in order,
    /// so intake can commit the batch's offsets once. Each item keeps its own idempotency (processed events, recorded
    /// acks), so a redelivered batch changes nothing. Completions within the batch are chained in the order of the
    /// acks that completed them.
    func apply(_ work: [IntakeWork], at now: Date = Date()) async throws -> [IntakeEffect] {
        try await database.write { [self] db in
            let cache = TransactionCache()
            return try work.map { item in
                switch item {
                case .open(let requests, let eventId):
                    return try intake(requests, eventId: eventId, at: now, cache: cache, in: db)
                        .map { .opened($0.count) } ?? .repeated
                case .openForApp(let appId, let accountId, let cause, let policy, let eventId):
                    let requests = try Self.tenants(usingApp: appId, in: db).map {
                        IntakeRequest(
                            tenantId: $0, appId: appId, accountId: accountId, cause: cause, requestedPolicy: policy)
                    }
                    // Without a tenant and with no tenant configured with the app, there is nobody to erase for:
                    // taking it as done would lose the request without a trace.
                    guard !requests.isEmpty else {
                        return .rejected("ErasureRequested without tenantId, and no configured tenant uses its appId")
                    }
                    return try intake(requests, eventId: eventId, at: now, cache: cache, in: db)
                        .map { .opened($0.count) } ?? .repeated
                case .ack(let ack):
                    return .ack(try applyAck(ack, at: now, cache: cache, in: db))
                }
            }
        }
    }

    private func openOrJoin(
        _ request: IntakeRequest, at now: Date, cache: TransactionCache, in db: GRDB.Database
    ) throws -> String {
        let t = now.timeIntervalSince1970
        if let existing = try Row.fetchOne(
            db.cachedStatement(sql: """
                SELECT id, cause, status FROM erasures WHERE tenant_id = ? AND app_id = ? AND account_id = ?
                """),
            arguments: [request.tenantId, request.appId, request.accountId])
        {
            let id: String = existing["id"]
            try db.cachedStatement(sql: "UPDATE erasures SET requests = requests + 1, updated_at = ? WHERE id = ?")
                .execute(arguments: [t, id])
            // Atlassian closed the account while another erasure of it was open (a failed refresh, the tenant's
            // request): the open one becomes the closed account's erasure, rather than a second erasure beside it.
            if request.cause == .atlassianClosed, existing["cause"] != ErasureCause.atlassianClosed.rawValue {
                try upgradeToClosed(id, status: existing["status"], at: t, in: db)
            }
            return id
        }
        let tenant = try Row.fetchOne(
            db.cachedStatement(sql: "SELECT policy, deadline_days FROM tenants WHERE tenant_id = ?"),
            arguments: [request.tenantId])
        var policy = tenant.flatMap { ErasurePolicy(rawValue: $0["policy"]) } ?? settings.defaultPolicy
        if let requested = request.requestedPolicy { policy = policy.atLeast(requested) }
        // A failed refresh means the data can no longer be kept current: it goes, at least scrubbed.
        if request.cause == .refreshFailed { policy = policy.atLeast(.scrub) }
        let days: Int = tenant?["deadline_days"] ?? settings.defaultDeadlineDays
        let deadline = now.addingTimeInterval(Double(days) * settings.daySeconds)
        let id = Self.makeErasureId(at: now)
        // With participants declared, the erasure is inserted already dispatched: one INSERT in its final state
        // instead of an insert as pending and an update, which touched every index of the table twice.
        let participants = try cache.participants(in: db)
        let dispatched = !participants.isEmpty
        try db.cachedStatement(sql: """
            INSERT INTO erasures (id, tenant_id, app_id, account_id, subject, policy, cause, status, deadline,
                issued_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """).execute(arguments: [
                id, request.tenantId, request.appId, request.accountId,
                keys.subject(appId: request.appId, accountId: request.accountId), policy.rawValue,
                request.cause.rawValue,
                dispatched ? ErasureStatus.dispatched.rawValue : ErasureStatus.pending.rawValue,
                deadline.timeIntervalSince1970, dispatched ? t : nil, t, t,
            ])
        if dispatched {
            try insertParticipants(participants, of: id, at: t, in: db)
            try enqueue(
                EraseSubject(
                    erasureId: id, tenantId: request.tenantId, appId: request.appId, accountId: request.accountId,
                    policy: policy, cause: request.cause, issuedAt: Date(timeIntervalSince1970: t),
                    deadline: deadline),
                in: db)
        }
        return id
    }

    /// Upgrades open erasure `id` to cause `atlassian-closed`. Its policy stays (a refresh-failed or requested
    /// erasure's policy is already at least the tenant's, which is what a closed status would get). A pending one is
    /// simply dispatched later with the new cause. A dispatched one gets a new command id: participants are idempotent
    /// by the command's `erasureId`, so a command re-sent under the old one would be answered from what they recorded
    /// under the old cause (and the old command is still on the topic, ahead of any re-send) — the closed account's
    /// extra duties (suppression, no accountId kept under any policy) would never be applied. Under the new id every
    /// participant applies the command with cause `atlassian-closed` and acknowledges it; acks of the old id no longer
    /// count, outcomes recorded under the old cause are cleared (a waived participant stays waived). The ledger, the
    /// API, the audit entry and `ErasureCompleted` keep the erasure's own id, with the final cause: one erasure.
    private func upgradeToClosed(_ id: String, status: String, at t: Double, in db: GRDB.Database) throws {
        guard status != ErasureStatus.pending.rawValue else {
            try db.cachedStatement(sql: "UPDATE erasures SET cause = ?, updated_at = ? WHERE id = ?")
                .execute(arguments: [ErasureCause.atlassianClosed.rawValue, t, id])
            return
        }
        let commandId = Self.makeErasureId(at: Date(timeIntervalSince1970: t))
        try db.cachedStatement(sql: "UPDATE erasures SET cause = ?, command_id = ?, updated_at = ? WHERE id = ?")
            .execute(arguments: [ErasureCause.atlassianClosed.rawValue, commandId, t, id])
        try db.cachedStatement(sql: """
            UPDATE erasure_participants SET outcome = NULL, detail = NULL, acked_at = NULL, failed_attempts = 0,
                sends = sends + 1, last_sent_at = ?
            WHERE erasure_id = ? AND (outcome IS NULL OR outcome != 'waived')
            """).execute(arguments: [t, id])
        try db.cachedStatement(sql: "UPDATE erasures SET status = 'dispatched' WHERE id = ?").execute(arguments: [id])
        try enqueueCommand(id, in: db)
    }

    /// A new erasure id: a version 7 UUID (RFC 9562), lower case — 48 bits of Unix milliseconds, then random bits.
    /// Time-ordered ids put each new erasure, its participants and its audit row at the end of their indexes
    /// instead of on a random page of each, so a burst writes a few pages rather than one per erasure per index.
    static func makeErasureId(at now: Date) -> String {
        // Two 64-bit draws rather than sixteen byte draws: each draw is a getrandom call.
        var generator = SystemRandomNumberGenerator()
        let random = [generator.next() as UInt64, generator.next() as UInt64]
        var bytes = random.flatMap { word in (0..<8).map { UInt8(truncatingIfNeeded: word >> (8 * $0)) } }
        let millis = UInt64(max(0, now.timeIntervalSince1970 * 1000))
        for index in 0..<6 { bytes[index] = UInt8(truncatingIfNeeded: millis >> (8 * (5 - index))) }
        bytes[6] = 0x70 | (bytes[6] & 0x0f)  // version 7
        bytes[8] = 0x80 | (bytes[8] & 0x3f)  // variant 10
        let hex = bytes.hex
        var id = ""
        id.reserveCapacity(36)
        for (index, character) in hex.enumerated() {
            if index == 8 || index == 12 || index == 16 || index == 20 { id.append("-") }
            id.append(character)
        }
        return id
    }

    /// The participant set of an erasure, fixed at dispatch: the ones declared then. Each counts as sent once now.
    private func insertParticipants(_ names: [String], of id: String, at t: Double, in db: GRDB.Database) throws {
        let statement = try db.cachedStatement(sql: """
            INSERT INTO erasure_participants (erasure_id, participant, sends, last_sent_at) VALUES (?, ?, 1, ?)
            """)
        for name in names { try statement.execute(arguments: [id, name, t]) }
    }

    /// Moves a pending erasure to dispatched when participants are declared: its participant set is fixed now (the
    /// ones declared at dispatch), and the first command is enqueued. Returns whether it did.
    @discardableResult
    private func dispatchIfPossible(_ id: String, at now: Date, cache: TransactionCache, in db: GRDB.Database) throws
        -> Bool
    {
        let names = try cache.participants(in: db)
        guard !names.isEmpty else { return false }
        let t = now.timeIntervalSince1970
        try insertParticipants(names, of: id, at: t, in: db)
        try db.cachedStatement(sql: """
            UPDATE erasures SET status = 'dispatched', issued_at = ?, updated_at = ? WHERE id = ?
            """).execute(arguments: [t, t, id])
        try enqueueCommand(id, in: db)
        return true
    }

    /// One `EraseSubject` for erasure `id` (all participants read the same topic; the ones done re-ack idempotently),
    /// under its command id (its own id unless it was upgraded).
    private func enqueueCommand(_ id: String, in db: GRDB.Database) throws {
        guard let row = try Row.fetchOne(
            db.cachedStatement(sql: """
                SELECT tenant_id, app_id, account_id, policy, cause, issued_at, deadline, command_id
                FROM erasures WHERE id = ?
                """), arguments: [id]),
            let accountId: String = row["account_id"]
        else { return }
        try enqueue(
            EraseSubject(
                erasureId: row["command_id"] ?? id, tenantId: row["tenant_id"], appId: row["app_id"], accountId: accountId,
                policy: ErasurePolicy(rawValue: row["policy"]) ?? .delete,
                cause: ErasureCause(rawValue: row["cause"]) ?? .atlassianClosed,
                issuedAt: Date(timeIntervalSince1970: row["issued_at"]),
                deadline: Date(timeIntervalSince1970: row["deadline"])),
            in: db)
    }

    /// Puts `command` in the outbox, keyed `appId:accountId` like every record about the account.
    private func enqueue(_ command: EraseSubject, in db: GRDB.Database) throws {
        try Outbox.enqueue(
            try OutgoingMessage(
                event: command, topic: settings.commandsTopic, key: "\(command.appId):\(command.accountId)",
                source: settings.source),
            in: db)
    }

    // MARK: Acks

    /// Records a participant's ack; completes (and audits) the erasure when it was the last one missing.
    func applyAck(_ ack: ErasureAcknowledged, at now: Date = Date()) async throws -> AckEffect {
        try await database.write { [self] db in try applyAck(ack, at: now, cache: TransactionCache(), in: db) }
    }

    private func applyAck(
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
    private func complete(_ id: String, at now: Date, cache: TransactionCache, in db: GRDB.Database) throws {
        guard let erasure = try Row.fetchOne(
            db.cachedStatement(sql: """
                SELECT tenant_id, app_id, account_id, subject, policy, cause FROM erasures WHERE id = ?
                """), arguments: [id])
        else { return }
        // The commands of this account carry its raw accountId (their key and payload): they go with it. Unsent ones
        // are pointless now, unless another tenant's erasure of the same account is still open and waits for them.
        if let accountId: String = erasure["account_id"] {
            let appId: String = erasure["app_id"]
            let others = try Int.fetchOne(
                db.cachedStatement(sql: """
                    SELECT count(*) FROM erasures WHERE app_id = ? AND account_id = ? AND id != ?
                    """),
                arguments: [appId, accountId, id]) ?? 0
            try db.cachedStatement(sql: """
                DELETE FROM lethe_outbox WHERE topic = ? AND key = ? AND (sent_at IS NOT NULL OR ? = 0)
                """).execute(arguments: [settings.commandsTopic, Data("\(appId):\(accountId)".utf8), others])
        }
        let outcomes = try Row.fetchAll(
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
        let tail: (sequence: Int, hash: String)
        if let cached = cache.auditTail {
            tail = cached
        } else if let last = try Row.fetchOne(
            db, sql: "SELECT sequence, entry_hash FROM audit_log ORDER BY sequence DESC LIMIT 1")
        {
            tail = (last["sequence"], last["entry_hash"])
        } else {
            tail = (0, AuditEntry.genesisHash)
        }
        var entry = AuditEntry(
            sequence: tail.sequence + 1, erasureId: id, subject: erasure["subject"],
            tenantId: erasure["tenant_id"], policy: ErasurePolicy(rawValue: erasure["policy"]) ?? .delete,
            cause: ErasureCause(rawValue: erasure["cause"]) ?? .atlassianClosed, outcomes: outcomes,
            completedAtMs: now.milliseconds, previousHash: tail.hash)
        entry.entryHash = entry.computedHash
        entry.signature = try keys.sign(entryHash: entry.entryHash)
        entry.keyId = keys.keyId
        try Self.insert(entry, in: db)
        cache.auditTail = (entry.sequence, entry.entryHash)
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

    private static func insert(_ entry: AuditEntry, in db: GRDB.Database) throws {
        let outcomes = CanonicalJSON.outcomes(entry.outcomes)
        try db.cachedStatement(sql: """
            INSERT INTO audit_log (sequence, erasure_id, subject, tenant_id, policy, cause, outcomes,
                completed_at_ms, previous_hash, entry_hash, signature, key_id)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """).execute(arguments: [
                entry.sequence, entry.erasureId, entry.subject, entry.tenantId, entry.policy.rawValue,
                entry.cause.rawValue, outcomes, entry.completedAtMs, entry.previousHash, entry.entryHash,
                entry.signature, entry.keyId,
            ])
    }

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
        try await database.write { [self] db in
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
        try await database.write { [self] db in
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

    // MARK: Queries

    /// One erasure with its participants, or nil.
    func erasure(_ id: String) async throws -> ErasureRecord? {
        try await database.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM erasures WHERE id = ?", arguments: [id])
                .map { try Self.record($0, in: db) }
        }
    }

    /// A page of a tenant's erasures, oldest first, after row `afterRow`, optionally of one status.
    func erasures(tenantId: String, status: ErasureStatus?, afterRow: Int64, limit: Int) async throws
        -> (records: [ErasureRecord], lastRow: Int64?)
    {
        try await database.read { db in
            var sql = "SELECT * FROM erasures WHERE tenant_id = ? AND row > ?"
            var arguments: StatementArguments = [tenantId, afterRow]
            if let status {
                sql += " AND status = ?"
                arguments += [status.rawValue]
            }
            sql += " ORDER BY row LIMIT ?"
            arguments += [limit + 1]
            let rows = try Row.fetchAll(db, sql: sql, arguments: arguments)
            let page = Array(rows.prefix(limit))
            let records = try page.map { try Self.record($0, in: db) }
            return (records, rows.count > limit ? page.last?["row"] : nil)
        }
    }

    private static func record(_ row: Row, in db: GRDB.Database) throws -> ErasureRecord {
        let id: String = row["id"]
        let participants = try Row.fetchAll(
            db, sql: "SELECT * FROM erasure_participants WHERE erasure_id = ? ORDER BY participant", arguments: [id]
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

    /// Audit entries in sequence order, optionally completed within [from, to).
    func auditEntries(from: Date? = nil, to: Date? = nil) async throws -> [AuditEntry] {
        try await database.read { db in
            try Row.fetchAll(
                db, sql: """
                    SELECT * FROM audit_log WHERE completed_at_ms >= ? AND completed_at_ms < ? ORDER BY sequence
                    """, arguments: [from?.milliseconds ?? Int64.min, to?.milliseconds ?? Int64.max]
            ).map { row in
                let outcomes: String = row["outcomes"]
                var entry = AuditEntry(
                    sequence: row["sequence"], erasureId: row["erasure_id"], subject: row["subject"],
                    tenantId: row["tenant_id"], policy: ErasurePolicy(rawValue: row["policy"]) ?? .delete,
                    cause: ErasureCause(rawValue: row["cause"]) ?? .atlassianClosed,
                    outcomes: (try? JSONDecoder().decode([AuditEntry.Outcome].self, from: Data(outcomes.utf8))) ?? [],
                    completedAtMs: row["completed_at_ms"], previousHash: row["previous_hash"])
                entry.entryHash = row["entry_hash"]
                entry.signature = row["signature"]
                entry.keyId = row["key_id"]
                return entry
            }
        }
    }

    /// Recomputes the whole chain.
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
