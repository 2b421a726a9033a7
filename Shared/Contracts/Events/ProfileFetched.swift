import Foundation

/// An Atlassian profile as `/me` returned it, published on `lethe.profiles.v1` (keyed by `appId:accountId`).
///
/// This is the only event carrying personal data, which is why its topic has a short retention and why
/// ``description`` redacts it: printing or logging the event shows ids only.
package struct ProfileFetched: LetheEvent, CustomStringConvertible, CustomDebugStringConvertible {
    /// `lethe.ProfileFetched`.
    package static let eventType = "lethe.ProfileFetched"
    /// 1.1: 1.0 plus the optional `userId`.
    package static let schemaVersion = SchemaVersion(major: 1, minor: 1)

    /// The tenant whose user signed in.
    package var tenantId: String
    /// The OAuth app the profile was fetched through.
    package var appId: String
    /// The Atlassian accountId.
    package var accountId: String
    /// The platform user this account signed in as (the `sub` of the gateway's ID token), so every service files
    /// the profile under the same user. Added in 1.1; absent from 1.0 producers.
    package var userId: String?
    /// Display name (personal data), absent when Atlassian does not share it.
    package var name: String?
    /// Email (personal data), absent when the user hides it.
    package var email: String?
    /// Nickname (personal data).
    package var nickname: String?
    /// Avatar URL (personal data).
    package var picture: String?
    /// When `/me` answered. An older `fetchedAt` never overwrites a newer profile, and PDR's `updatedAt` derives
    /// from it.
    package var fetchedAt: Date

    /// Makes the event.
    package init(
        tenantId: String,
        appId: String,
        accountId: String,
        userId: String? = nil,
        name: String? = nil,
        email: String? = nil,
        nickname: String? = nil,
        picture: String? = nil,
        fetchedAt: Date
    ) {
        self.tenantId = tenantId
        self.appId = appId
        self.accountId = accountId
        self.userId = userId
        self.name = name
        self.email = email
        self.nickname = nickname
        self.picture = picture
        self.fetchedAt = fetchedAt
    }

    /// Ids and timestamp only; personal fields are shown as present or absent, never their values.
    package var description: String {
        func mark(_ value: String?) -> String { value == nil ? "nil" : "<redacted>" }
        return "ProfileFetched(tenantId: \(tenantId), appId: \(appId), accountId: \(accountId), userId: \(userId ?? "nil"), "
            + "name: \(mark(name)), email: \(mark(email)), nickname: \(mark(nickname)), "
            + "picture: \(mark(picture)), fetchedAt: \(RFC3339.string(from: fetchedAt)))"
    }

    /// Same as ``description``, so `debugPrint` and string interpolation in tests stay PII-free too.
    package var debugDescription: String { description }
}
