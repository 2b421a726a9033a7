import Foundation

/// A tenant's current configuration, published on `lethe.tenants.v1` (compacted, keyed by tenantId).
///
/// Carries no secrets: client secrets stay encrypted in the gateway's database.
package struct TenantConfigured: LetheEvent {
    /// `lethe.TenantConfigured`.
    package static let eventType = "lethe.TenantConfigured"
    /// 1.0.
    package static let schemaVersion = SchemaVersion(major: 1, minor: 0)

    /// One Atlassian OAuth app the tenant signs users in with.
    package struct App: Codable, Sendable, Hashable {
        /// The app's OAuth client id; the `appId` of account keys.
        package var appId: String
        /// Whether this is the operator's shared app (used by many tenants) rather than the tenant's own.
        package var shared: Bool

        /// Makes an app entry.
        package init(appId: String, shared: Bool) {
            self.appId = appId
            self.shared = shared
        }
    }

    /// The tenant's id.
    package var tenantId: String
    /// The policy every erasure for this tenant applies.
    package var erasurePolicy: ErasurePolicy
    /// The apps the tenant uses.
    package var apps: [App]
    /// Days a participant has to apply an erasure before it is `overdue`, within ``deadlineDaysRange``.
    package var deadlineDays: Int

    /// The deadlines a tenant can set: the gateway refuses others (400); the executor caps a larger one that reaches
    /// it at 30 and dead-letters one below 1. At most 30 days, so that a tenant cannot give its participants more time
    /// than Lethe promises Atlassian's users.
    package static let deadlineDaysRange = 1...30

    /// Makes the event.
    package init(tenantId: String, erasurePolicy: ErasurePolicy, apps: [App], deadlineDays: Int) {
        self.tenantId = tenantId
        self.erasurePolicy = erasurePolicy
        self.apps = apps
        self.deadlineDays = deadlineDays
    }
}
