import Foundation

/// An erasure as erasure-executor last recorded it, on `lethe.erasure.state.v1` (compacted, keyed by erasureId): the
/// executor's changelog. Written in the transaction of every change to the erasure (through its outbox) and read back
/// at every start, so an executor that lost its volume continues every open erasure — its participants, re-sends,
/// deadline — and keeps the audit chain of the completed ones. Only erasure-executor writes and reads it.
///
/// Carries the raw accountId while the erasure is open, as `EraseSubject` does; the record written at completion has
/// none (and compaction then drops the earlier ones of the key).
package struct ErasureState: LetheEvent {
    /// `lethe.ErasureState`.
    package static let eventType = "lethe.ErasureState"
    /// 1.1: 1.0 plus the audit receipt's optional `chain`.
    package static let schemaVersion = SchemaVersion(major: 1, minor: 1)

    /// One participant's part in the erasure.
    package struct Participant: Codable, Sendable, Hashable {
        package var participant: String
        /// What it acknowledged (`failed` included), or `waived`; nil while awaited.
        package var outcome: CompletedOutcome?
        /// A PII-free detail of its answer, or the reason it was waived.
        package var detail: String?
        package var failedAttempts: Int
        /// Commands sent to it so far.
        package var sends: Int
        package var lastSentAt: Date?
        package var ackedAt: Date?

        /// Makes the participant's state.
        package init(
            participant: String, outcome: CompletedOutcome?, detail: String?, failedAttempts: Int, sends: Int,
            lastSentAt: Date?, ackedAt: Date?
        ) {
            self.participant = participant
            self.outcome = outcome
            self.detail = detail
            self.failedAttempts = failedAttempts
            self.sends = sends
            self.lastSentAt = lastSentAt
            self.ackedAt = ackedAt
        }
    }

    /// One outcome as the audit entry hashed it.
    package struct AuditOutcome: Codable, Sendable, Hashable {
        package var participant: String
        package var outcome: CompletedOutcome
        /// Milliseconds since 1970, as hashed.
        package var atMs: Int64
        /// For `waived`: the operator's reason.
        package var reason: String?

        /// Makes the outcome.
        package init(participant: String, outcome: CompletedOutcome, atMs: Int64, reason: String?) {
            self.participant = participant
            self.outcome = outcome
            self.atMs = atMs
            self.reason = reason
        }
    }

    /// The completed erasure's audit-chain entry, exactly as hashed and signed.
    package struct Audit: Codable, Sendable, Hashable {
        package var receipt: ErasureReceipt
        /// Milliseconds since 1970, as hashed.
        package var completedAtMs: Int64
        package var outcomes: [AuditOutcome]

        /// Makes the entry.
        package init(receipt: ErasureReceipt, completedAtMs: Int64, outcomes: [AuditOutcome]) {
            self.receipt = receipt
            self.completedAtMs = completedAtMs
            self.outcomes = outcomes
        }
    }

    package var erasureId: String
    /// The id its commands carry when it is not `erasureId` (an erasure upgraded to `atlassian-closed` after dispatch).
    package var commandId: String?
    package var tenantId: String
    package var appId: String
    /// The raw accountId while the erasure is open; absent once it completed.
    package var accountId: String?
    /// Hex HMAC of `appId:accountId`, as in `ErasureCompleted`.
    package var subject: String
    package var policy: ErasurePolicy
    package var cause: ErasureCause
    /// `pending`, `dispatched`, `completed` or `needs-attention`.
    package var status: String
    package var overdue: Bool
    package var deadline: Date
    /// Causes that asked for it (a repeated cause joins the open erasure).
    package var requests: Int
    /// When its command first went out.
    package var issuedAt: Date?
    package var createdAt: Date
    package var updatedAt: Date
    package var completedAt: Date?
    /// Grows with every record of this erasure: a restore keeps the highest it has seen.
    package var version: Int
    package var participants: [Participant]
    /// Present once completed.
    package var audit: Audit?

    /// Makes the event; see the properties.
    package init(
        erasureId: String, commandId: String?, tenantId: String, appId: String, accountId: String?, subject: String,
        policy: ErasurePolicy, cause: ErasureCause, status: String, overdue: Bool, deadline: Date, requests: Int,
        issuedAt: Date?, createdAt: Date, updatedAt: Date, completedAt: Date?, version: Int,
        participants: [Participant], audit: Audit?
    ) {
        self.erasureId = erasureId
        self.commandId = commandId
        self.tenantId = tenantId
        self.appId = appId
        self.accountId = accountId
        self.subject = subject
        self.policy = policy
        self.cause = cause
        self.status = status
        self.overdue = overdue
        self.deadline = deadline
        self.requests = requests
        self.issuedAt = issuedAt
        self.createdAt = createdAt
        self.updatedAt = updatedAt
        self.completedAt = completedAt
        self.version = version
        self.participants = participants
        self.audit = audit
    }
}

/// An operator retired a participant (`POST /v1/participants/{participant}/retire`), on
/// `lethe.erasure.participants.v1`, keyed by the participant: under compaction it supersedes the participant's
/// declaration (a later declaration supersedes it), and every executor replica applies it to the open erasures of its
/// partitions and ignores declarations older than it — also after a replica lost its volume. Before issue 18 it was
/// written on `lethe.erasure.state.v1` (key `retired:<participant>:<retiredAt in ms>`); such records are still read.
package struct ParticipantRetired: LetheEvent {
    /// `lethe.ParticipantRetired`.
    package static let eventType = "lethe.ParticipantRetired"
    /// 1.0.
    package static let schemaVersion = SchemaVersion(major: 1, minor: 0)

    package var participant: String
    /// The operator's reason (PII-free: checked when given).
    package var reason: String
    package var retiredAt: Date
    /// Open erasures in which it was waived (on every replica that answered the operator's request).
    package var waived: Int
    /// Of them, completed by the retirement.
    package var completed: Int

    /// Makes the event; see the properties.
    package init(participant: String, reason: String, retiredAt: Date, waived: Int, completed: Int) {
        self.participant = participant
        self.reason = reason
        self.retiredAt = retiredAt
        self.waived = waived
        self.completed = completed
    }
}
