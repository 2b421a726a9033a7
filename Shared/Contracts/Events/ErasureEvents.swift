import Foundation

/// A request to erase an account's data, on `lethe.erasure.requests.v1` (keyed by `appId:accountId`).
///
/// The executor turns it into one ``EraseSubject`` per tenant: for `tenantId == nil` every tenant holding the
/// account through the app; `policy == nil` means each tenant's configured policy.
package struct ErasureRequested: LetheEvent {
    /// `lethe.ErasureRequested`.
    package static let eventType = "lethe.ErasureRequested"
    /// 1.0.
    package static let schemaVersion = SchemaVersion(major: 1, minor: 0)

    /// Idempotency id of the request: a redelivered request must not start a second erasure.
    package var requestId: String
    /// The OAuth app.
    package var appId: String
    /// The Atlassian accountId.
    package var accountId: String
    /// The one tenant concerned, or `nil` for all tenants holding the account through the app.
    package var tenantId: String?
    /// Why.
    package var cause: ErasureCause
    /// An explicit policy overriding the tenant's (e.g. `scrub` after a failed refresh), or `nil`.
    package var policy: ErasurePolicy?

    /// Makes the event.
    package init(
        requestId: String,
        appId: String,
        accountId: String,
        tenantId: String? = nil,
        cause: ErasureCause,
        policy: ErasurePolicy? = nil
    ) {
        self.requestId = requestId
        self.appId = appId
        self.accountId = accountId
        self.tenantId = tenantId
        self.cause = cause
        self.policy = policy
    }
}

/// The command every participant applies, on `lethe.erasure.commands.v1` (keyed by `appId:accountId`).
///
/// Ids only, no PII. It may be re-sent (missing acks are retried), so participants apply it idempotently by
/// `erasureId`.
package struct EraseSubject: LetheEvent {
    /// `lethe.EraseSubject`.
    package static let eventType = "lethe.EraseSubject"
    /// 1.0.
    package static let schemaVersion = SchemaVersion(major: 1, minor: 0)

    /// The erasure's id; the key of acks and of the completion.
    package var erasureId: String
    /// The tenant whose copy of the data is concerned; participants touch only that tenant's data.
    package var tenantId: String
    /// The OAuth app.
    package var appId: String
    /// The Atlassian accountId.
    package var accountId: String
    /// What to do with the data.
    package var policy: ErasurePolicy
    /// Why, for the participant's own audit. An open erasure's cause can be upgraded to `atlassian-closed` when
    /// Atlassian answers `closed` for the same tenant, app and account: the executor then sends a new command, with a
    /// new `erasureId` and the new cause, and waits for every participant's acknowledgement of that one (acks of the
    /// old id no longer count). Apply it like any command: being idempotent by `erasureId`, you apply it even if you
    /// applied the earlier one.
    package var cause: ErasureCause
    /// When the executor first issued the command (unchanged on re-sends).
    package var issuedAt: Date
    /// When the erasure becomes `overdue`.
    package var deadline: Date

    /// Makes the event.
    package init(
        erasureId: String,
        tenantId: String,
        appId: String,
        accountId: String,
        policy: ErasurePolicy,
        cause: ErasureCause,
        issuedAt: Date,
        deadline: Date
    ) {
        self.erasureId = erasureId
        self.tenantId = tenantId
        self.appId = appId
        self.accountId = accountId
        self.policy = policy
        self.cause = cause
        self.issuedAt = issuedAt
        self.deadline = deadline
    }
}

/// A participant's answer to an ``EraseSubject``, on `lethe.erasure.acks.v1` (keyed by erasureId).
package struct ErasureAcknowledged: LetheEvent {
    /// `lethe.ErasureAcknowledged`.
    package static let eventType = "lethe.ErasureAcknowledged"
    /// 1.0.
    package static let schemaVersion = SchemaVersion(major: 1, minor: 0)

    /// The erasure acknowledged.
    package var erasureId: String
    /// The participant's declared name (see ``ParticipantDeclared``).
    package var participant: String
    /// What the participant did.
    package var outcome: ErasureOutcome
    /// A PII-free explanation, typically for `failed`.
    package var detail: String?
    /// When the participant finished.
    package var at: Date

    /// Makes the event.
    package init(erasureId: String, participant: String, outcome: ErasureOutcome, detail: String? = nil, at: Date) {
        self.erasureId = erasureId
        self.participant = participant
        self.outcome = outcome
        self.detail = detail
        self.at = at
    }
}

/// A service declares that it holds Atlassian-sourced data and must acknowledge erasures, on
/// `lethe.erasure.participants.v1` (compacted, keyed by participant; a tombstone means it left).
package struct ParticipantDeclared: LetheEvent {
    /// `lethe.ParticipantDeclared`.
    package static let eventType = "lethe.ParticipantDeclared"
    /// 1.0.
    package static let schemaVersion = SchemaVersion(major: 1, minor: 0)

    /// The participant's stable name; acks must use the same name.
    package var participant: String
    /// Names of the personal-data fields it holds (e.g. `email`), for the audit record.
    package var holds: [String]
    /// When it declared itself. From the moment the executor reads the declaration, every new erasure waits for it,
    /// and so does every erasure still open then (it receives their commands).
    package var declaredAt: Date

    /// Makes the event.
    package init(participant: String, holds: [String], declaredAt: Date) {
        self.participant = participant
        self.holds = holds
        self.declaredAt = declaredAt
    }
}

/// A participant's outcome as a completed erasure records it: what it acknowledged (every ``ErasureOutcome``), or
/// `waived` — an operator retired the participant while the erasure waited for it. Participants never
/// send `waived`: an acknowledgement carrying it is not an ``ErasureAcknowledged`` and goes to the acks DLQ.
package enum CompletedOutcome: String, Codable, Sendable, Hashable, CaseIterable {
    /// Applied `delete`.
    case erased
    /// Applied `scrub`.
    case scrubbed
    /// Applied `disassociate`.
    case disassociated
    /// The participant held nothing for the subject.
    case nothingHeld = "nothing-held"
    /// Never in a completion Lethe writes (an erasure completes only without failures); kept so that every
    /// ``ErasureOutcome`` has its completed counterpart.
    case failed
    /// The participant was retired by an operator (with a reason, in ``ParticipantOutcome/reason``) before it
    /// acknowledged: the erasure did not wait for it any longer. Recorded, never silent.
    case waived

    /// The completed counterpart of an acknowledged outcome.
    package init(_ outcome: ErasureOutcome) {
        switch outcome {
        case .erased: self = .erased
        case .scrubbed: self = .scrubbed
        case .disassociated: self = .disassociated
        case .nothingHeld: self = .nothingHeld
        case .failed: self = .failed
        }
    }
}

/// One participant's final outcome inside an ``ErasureCompleted``.
package struct ParticipantOutcome: Codable, Sendable, Hashable {
    /// The participant's declared name.
    package var participant: String
    /// What it did, or `waived`.
    package var outcome: CompletedOutcome
    /// Why the participant was waived: the operator's reason when it was retired (PII-free). Absent otherwise.
    package var reason: String?
    /// When it acknowledged, or when it was waived.
    package var at: Date

    /// Makes the outcome.
    package init(participant: String, outcome: CompletedOutcome, reason: String? = nil, at: Date) {
        self.participant = participant
        self.outcome = outcome
        self.reason = reason
        self.at = at
    }
}

/// The audit-chain entry proving an erasure, inside an ``ErasureCompleted``.
///
/// Entries are hash-chained: `entryHash` covers the entry including `previousHash`, so removing or altering any
/// entry breaks every later one; `signature` by key `keyId` makes the chain attributable.
package struct ErasureReceipt: Codable, Sendable, Hashable {
    /// The audit chain the entry is in: the erasure's partition (Kafka's murmur2 of its id among the erasure topics'
    /// partitions), one chain per partition, each verified on its own. Absent for an entry of the single chain the
    /// executor kept before (format `lethe-audit-v1`).
    package var chain: Int?
    /// Position in its chain, starting at 1, without gaps.
    package var sequence: Int
    /// Hex hash of this entry.
    package var entryHash: String
    /// Hex hash of the previous entry (a fixed genesis value for the first).
    package var previousHash: String
    /// Signature over `entryHash` (encoding defined by the executor's audit export).
    package var signature: String
    /// Id of the signing key, so verifiers can pick the right public key after rotation.
    package var keyId: String

    /// Makes the receipt.
    package init(
        chain: Int? = nil, sequence: Int, entryHash: String, previousHash: String, signature: String, keyId: String
    ) {
        self.chain = chain
        self.sequence = sequence
        self.entryHash = entryHash
        self.previousHash = previousHash
        self.signature = signature
        self.keyId = keyId
    }
}

/// An erasure is complete: every required participant acknowledged, or was waived (retired by an operator, with the
/// reason in its outcome). On `lethe.erasure.completed.v1` (compacted, keyed by erasureId), for tenants and auditors.
///
/// Contains no PII: the subject is an HMAC of `appId:accountId`, so the receipt can be kept for ever.
package struct ErasureCompleted: LetheEvent {
    /// `lethe.ErasureCompleted`.
    package static let eventType = "lethe.ErasureCompleted"
    /// 1.2: 1.0 plus the outcome `waived` and a participant outcome's optional `reason` (1.1), and the receipt's
    /// optional `chain` (1.2). A 1.0 reader that rejects unknown enum values must learn `waived` (see
    /// docs/erasure-executor.md); every other 1.0 body is unchanged.
    package static let schemaVersion = SchemaVersion(major: 1, minor: 2)

    /// The erasure's id.
    package var erasureId: String
    /// The tenant concerned.
    package var tenantId: String
    /// Hex HMAC of `appId:accountId`: lets whoever knows the account verify the receipt without publishing it.
    package var subject: String
    /// The policy applied.
    package var policy: ErasurePolicy
    /// Why the erasure happened.
    package var cause: ErasureCause
    /// Each participant's outcome.
    package var outcomes: [ParticipantOutcome]
    /// When the last required acknowledgement (or waiver) arrived.
    package var completedAt: Date
    /// The audit-chain entry for this erasure.
    package var receipt: ErasureReceipt

    /// Makes the event.
    package init(
        erasureId: String,
        tenantId: String,
        subject: String,
        policy: ErasurePolicy,
        cause: ErasureCause,
        outcomes: [ParticipantOutcome],
        completedAt: Date,
        receipt: ErasureReceipt
    ) {
        self.erasureId = erasureId
        self.tenantId = tenantId
        self.subject = subject
        self.policy = policy
        self.cause = cause
        self.outcomes = outcomes
        self.completedAt = completedAt
        self.receipt = receipt
    }
}
