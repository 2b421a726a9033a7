import Contracts
import Foundation
import GRDB
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

    /// `appId:accountId`: the key of the account's records on every erasure topic.
    var subjectKey: String { "\(appId):\(accountId)" }
}

/// Ledger behaviour that comes from configuration.
struct LedgerSettings: Sendable {
    var resendAfter: TimeInterval
    var maxFailedAttempts: Int
    var daySeconds: TimeInterval
    var commandsTopic: String
    var completedTopic: String
    /// The executor's changelog (`ErasureState`): see ErasureLedger+Changelog.
    var stateTopic: String = Topics.erasureState.name
    /// Where a retirement is published (`ParticipantRetired`, keyed by the participant).
    var participantsTopic: String = Topics.erasureParticipants.name
    /// `KAFKA_TOPIC_PARTITIONS`: erasure ids are drawn so that Kafka's partitioner puts them on their subject's
    /// partition (``ErasureLedger/makeErasureId(at:forSubject:partitions:)``).
    var partitions = 1
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
        /// When its latest acknowledgement of a still-recorded erasure arrived; nil before its first.
        var lastAckAt: Date?
        /// Open erasures still waiting for its acknowledgement.
        var awaited: Int
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
}
