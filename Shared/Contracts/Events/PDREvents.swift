import Foundation

/// "The platform holds personal data of this account through this app", on `lethe.pdr.accounts.v1`
/// (compacted, keyed by `appId:accountId`). A tombstone (null value) replaces it once no tenant holds the account.
package struct AccountHeld: LetheEvent {
    /// `lethe.AccountHeld`.
    package static let eventType = "lethe.AccountHeld"
    /// 1.0.
    package static let schemaVersion = SchemaVersion(major: 1, minor: 0)

    /// The OAuth app.
    package var appId: String
    /// The Atlassian accountId.
    package var accountId: String
    /// The oldest retrieval time of the data held: what PDR reports as `updatedAt`.
    package var updatedAt: Date
    /// The tenants holding the account through this app (the shared app serves many tenants); never empty — an
    /// account no tenant holds is a tombstone instead.
    package var tenantIds: [String]

    /// Makes the event.
    package init(appId: String, accountId: String, updatedAt: Date, tenantIds: [String]) {
        self.appId = appId
        self.accountId = accountId
        self.updatedAt = updatedAt
        self.tenantIds = tenantIds
    }
}

/// The reporter's changelog on `lethe.pdr.reports.v1` (compacted, keyed by `appId:accountId`): an account was
/// reported and when it is next due. Restored into the local registry on partition assignment.
package struct AccountReported: LetheEvent {
    /// `lethe.AccountReported`.
    package static let eventType = "lethe.AccountReported"
    /// 1.0.
    package static let schemaVersion = SchemaVersion(major: 1, minor: 0)

    /// The OAuth app.
    package var appId: String
    /// The Atlassian accountId.
    package var accountId: String
    /// When the batch containing the account was accepted by Atlassian.
    package var reportedAt: Date
    /// The earliest time the account may be reported again (once per cycle, never more often).
    package var nextDueAt: Date

    /// Makes the event.
    package init(appId: String, accountId: String, reportedAt: Date, nextDueAt: Date) {
        self.appId = appId
        self.accountId = accountId
        self.reportedAt = reportedAt
        self.nextDueAt = nextDueAt
    }
}

/// Atlassian answered `closed` or `updated` for an account, on `lethe.pdr.status.v1` (keyed by `appId:accountId`).
/// `closed` drives the executor, `updated` the gateway's re-fetch.
package struct AccountStatusReported: LetheEvent {
    /// `lethe.AccountStatusReported`.
    package static let eventType = "lethe.AccountStatusReported"
    /// 1.0.
    package static let schemaVersion = SchemaVersion(major: 1, minor: 0)

    /// The OAuth app.
    package var appId: String
    /// The Atlassian accountId.
    package var accountId: String
    /// The tenants holding the account through this app when it was reported: one erasure per tenant on `closed`.
    package var tenantIds: [String]
    /// Atlassian's answer.
    package var status: AccountStatus
    /// When Atlassian answered.
    package var reportedAt: Date

    /// Makes the event.
    package init(appId: String, accountId: String, tenantIds: [String], status: AccountStatus, reportedAt: Date) {
        self.appId = appId
        self.accountId = accountId
        self.tenantIds = tenantIds
        self.status = status
        self.reportedAt = reportedAt
    }
}
