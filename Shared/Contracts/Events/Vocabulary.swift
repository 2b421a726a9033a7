import Foundation

/// What a participant does to a subject's data when an erasure is commanded. Chosen per tenant.
///
/// After any policy, no Atlassian-sourced personal data stays linked to the accountId for that tenant.
package enum ErasurePolicy: String, Codable, Sendable, Hashable, CaseIterable {
    /// Remove the paired account and all data linked to the Atlassian account.
    case delete
    /// Remove the personal data synced from Atlassian; keep the account usable.
    case scrub
    /// Unlink the account from the Atlassian accountId; keep the rest.
    case disassociate
}

/// Why an erasure was requested. Carried through to the command and the completion receipt for audit.
package enum ErasureCause: String, Codable, Sendable, Hashable, CaseIterable {
    /// Atlassian's PDR API answered `closed` for the account.
    case atlassianClosed = "atlassian-closed"
    /// The gateway could no longer refresh the connection (`invalid_grant`): the data would go stale, so it goes.
    case refreshFailed = "refresh-failed"
    /// The tenant asked for the erasure through the API.
    case tenantRequest = "tenant-request"
}

/// What one participant reports having done for one erasure.
package enum ErasureOutcome: String, Codable, Sendable, Hashable, CaseIterable {
    /// Applied `delete`.
    case erased
    /// Applied `scrub`.
    case scrubbed
    /// Applied `disassociate`.
    case disassociated
    /// The participant held nothing for the subject; counts as done.
    case nothingHeld = "nothing-held"
    /// The participant could not apply the policy; the executor keeps the erasure open and re-sends.
    case failed
}

/// Atlassian's PDR answer for an account. Accounts with no change are not reported at all.
package enum AccountStatus: String, Codable, Sendable, Hashable, CaseIterable {
    /// The account was closed: its personal data must be erased.
    case closed
    /// The profile changed: it must be re-fetched.
    case updated
}
