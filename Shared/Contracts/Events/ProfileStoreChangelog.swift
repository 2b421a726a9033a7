import Foundation

/// The profiles profile-store holds under one changelog key, on `lethe.profiles.state.v1` (compacted, private to
/// profile-store): every tenant's profile of one account (key `appId:accountId`), or one profile no longer linked to
/// an account (key `:unlinked:<id>`, after `disassociate`, or a closed account's `scrub`). Written in the transaction
/// of every change to them (through the outbox), to the key's partition of the profiles topic, and read back by the
/// replica its group assigns that partition: a replica that takes a partition over holds its profiles, and one that
/// lost its volume loses none. A tombstone on the key means nothing is held under it any more; with the topic's
/// `max.compaction.lag.ms`, the earlier values — personal data — are gone from the broker within that time.
package struct ProfilesHeld: LetheEvent {
    /// `lethe.ProfilesHeld`.
    package static let eventType = "lethe.ProfilesHeld"
    /// 1.0.
    package static let schemaVersion = SchemaVersion(major: 1, minor: 0)

    /// One stored profile.
    package struct Profile: Codable, Sendable, Hashable {
        /// The gateway's user the profile belongs to.
        package var platformUserId: String
        package var tenantId: String
        /// nil for a profile that holds no personal data any more (scrubbed).
        package var name: String?
        package var email: String?
        package var nickname: String?
        package var picture: String?
        /// Whether it still holds personal data (false once scrubbed or disassociated).
        package var holdsPersonalData: Bool
        package var fetchedAt: Date

        /// Makes the profile.
        package init(
            platformUserId: String, tenantId: String, name: String?, email: String?, nickname: String?,
            picture: String?, holdsPersonalData: Bool, fetchedAt: Date
        ) {
            self.platformUserId = platformUserId
            self.tenantId = tenantId
            self.name = name
            self.email = email
            self.nickname = nickname
            self.picture = picture
            self.holdsPersonalData = holdsPersonalData
            self.fetchedAt = fetchedAt
        }
    }

    /// The OAuth app.
    package var appId: String
    /// The Atlassian accountId; nil under an `:unlinked:<id>` key.
    package var accountId: String?
    /// The profiles under the key (one tenant's at most once); never empty: nothing held is a tombstone.
    package var profiles: [Profile]

    /// Makes the event.
    package init(appId: String, accountId: String?, profiles: [Profile]) {
        self.appId = appId
        self.accountId = accountId
        self.profiles = profiles
    }
}

/// An erasure command profile-store applied, on `lethe.profiles.state.v1` (key `:erasure:<erasureId>`, on the
/// partition of the command's subject): what a replica that takes the partition over needs to keep every promise
/// about it — the outcome (a re-sent command is answered from it), the watermark (a profile of the tenant fetched
/// before the erasure was issued is dropped) and, for a closed account, its suppression. The account appears only as
/// its digest (`SuppressionDigest`), as in profile-store's own file. The watermarks and suppressions of a file made
/// before the changelog are carried over once, onto every partition (their account's partition cannot be told from
/// a digest), keyed `:erasure:legacy:<tenantId>:<appId>:<digest>` and `:erasure:<erasureId>`.
package struct ProfileErasureRecorded: LetheEvent {
    /// `lethe.ProfileErasureRecorded`.
    package static let eventType = "lethe.ProfileErasureRecorded"
    /// 1.0.
    package static let schemaVersion = SchemaVersion(major: 1, minor: 0)

    /// The erasure's id; `legacy` for a watermark carried over from a file made before the changelog.
    package var erasureId: String
    /// The tenant whose profile the erasure concerned; nil for a suppression carried over from before the changelog.
    package var tenantId: String?
    package var appId: String
    /// `SuppressionDigest.of(accountId:)`: SHA-256 of `lethe.suppression.v1:<accountId>`, lower-case hex.
    package var accountDigest: String
    /// The command's `issuedAt`: a profile of the tenant fetched at or before it is dropped. nil with `tenantId`.
    package var erasedThrough: Date?
    /// The account was closed: none of its profiles is stored again through this app.
    package var suppressed: Bool
    /// What profile-store acknowledged; nil for what was carried over from before the changelog (its outcome was
    /// not kept with the account).
    package var outcome: ErasureOutcome?

    /// Makes the event.
    package init(
        erasureId: String, tenantId: String?, appId: String, accountDigest: String, erasedThrough: Date?,
        suppressed: Bool, outcome: ErasureOutcome?
    ) {
        self.erasureId = erasureId
        self.tenantId = tenantId
        self.appId = appId
        self.accountDigest = accountDigest
        self.erasedThrough = erasedThrough
        self.suppressed = suppressed
        self.outcome = outcome
    }
}
