import Contracts
import Foundation

/// A successful answer of `POST /oauth/token` (ATLASSIAN.md §1.4).
///
/// `refreshToken` rotates (§1.5): every refresh returns a new one that replaces the old, and the caller must store it
/// before using the access token. The description redacts both tokens.
package struct TokenResponse: Sendable, Equatable, Decodable, CustomStringConvertible {
    package var accessToken: String
    /// Lifetime of the access token in seconds (3600 in practice, §1.5).
    package var expiresIn: Int
    package var tokenType: String
    /// Space-separated scopes actually granted (may lack `report:personal-data`, ECO-533 §1.3).
    package var scope: String?
    /// Present only with `offline_access` (§1.3).
    package var refreshToken: String?

    package init(accessToken: String, expiresIn: Int, tokenType: String, scope: String?, refreshToken: String?) {
        self.accessToken = accessToken
        self.expiresIn = expiresIn
        self.tokenType = tokenType
        self.scope = scope
        self.refreshToken = refreshToken
    }

    enum CodingKeys: String, CodingKey {
        case accessToken = "access_token", expiresIn = "expires_in", tokenType = "token_type", scope
        case refreshToken = "refresh_token"
    }

    package init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        accessToken = try c.decode(String.self, forKey: .accessToken)
        expiresIn = (try? c.decodeIfPresent(Int.self, forKey: .expiresIn)) ?? 3600
        tokenType = (try? c.decodeIfPresent(String.self, forKey: .tokenType)) ?? "Bearer"
        scope = try? c.decodeIfPresent(String.self, forKey: .scope)
        refreshToken = try? c.decodeIfPresent(String.self, forKey: .refreshToken)
    }

    /// The granted scopes as a set.
    package var scopes: Set<String> { Set((scope ?? "").split(separator: " ").map(String.init)) }

    package var description: String {
        "TokenResponse(accessToken: <redacted>, expiresIn: \(expiresIn), scope: \(scope ?? "-"), "
            + "refreshToken: \(refreshToken == nil ? "none" : "<redacted>"))"
    }
}

/// The signed-in user's profile from `GET /me` (§2), every documented field.
///
/// Only `accountId` is required: everything else may be hidden by profile visibility or missing, and a field of an
/// unexpected type is read as absent rather than failing the sign-in. Unknown fields are ignored. The description
/// shows the account id only — the rest is personal data and must never reach a log.
package struct AtlassianProfile: Sendable, Equatable, Codable, CustomStringConvertible {
    package var accountId: String
    /// `atlassian`, `app` or `customer`.
    package var accountType: String?
    package var email: String?
    package var emailVerified: Bool?
    package var name: String?
    package var nickname: String?
    package var picture: String?
    /// `active`, `inactive` or `closed`.
    package var accountStatus: String?
    package var zoneinfo: String?
    package var locale: String?
    package var extendedProfile: ExtendedProfile?
    /// Raw timestamp as sent; `lastUpdatedDate` parses it.
    package var lastUpdated: String?

    /// The optional `extended_profile` object (§2).
    package struct ExtendedProfile: Sendable, Equatable, Codable {
        package var jobTitle: String?
        package var organization: String?
        package var department: String?
        package var location: String?

        package init(jobTitle: String? = nil, organization: String? = nil, department: String? = nil,
                     location: String? = nil) {
            self.jobTitle = jobTitle
            self.organization = organization
            self.department = department
            self.location = location
        }

        enum CodingKeys: String, CodingKey {
            case jobTitle = "job_title", organization, department, location
        }

        package init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            jobTitle = c.lenient(.jobTitle)
            organization = c.lenient(.organization)
            department = c.lenient(.department)
            location = c.lenient(.location)
        }
    }

    package init(accountId: String, accountType: String? = nil, email: String? = nil, emailVerified: Bool? = nil,
                 name: String? = nil, nickname: String? = nil, picture: String? = nil, accountStatus: String? = nil,
                 zoneinfo: String? = nil, locale: String? = nil, extendedProfile: ExtendedProfile? = nil,
                 lastUpdated: String? = nil) {
        self.accountId = accountId
        self.accountType = accountType
        self.email = email
        self.emailVerified = emailVerified
        self.name = name
        self.nickname = nickname
        self.picture = picture
        self.accountStatus = accountStatus
        self.zoneinfo = zoneinfo
        self.locale = locale
        self.extendedProfile = extendedProfile
        self.lastUpdated = lastUpdated
    }

    enum CodingKeys: String, CodingKey {
        case accountId = "account_id", accountType = "account_type", email, emailVerified = "email_verified", name
        case nickname, picture, accountStatus = "account_status", zoneinfo, locale
        case extendedProfile = "extended_profile", lastUpdated = "last_updated"
    }

    package init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        accountId = try c.decode(String.self, forKey: .accountId)
        accountType = c.lenient(.accountType)
        email = c.lenient(.email)
        emailVerified = c.lenient(.emailVerified)
        name = c.lenient(.name)
        nickname = c.lenient(.nickname)
        picture = c.lenient(.picture)
        accountStatus = c.lenient(.accountStatus)
        zoneinfo = c.lenient(.zoneinfo)
        locale = c.lenient(.locale)
        extendedProfile = c.lenient(.extendedProfile)
        lastUpdated = c.lenient(.lastUpdated)
    }

    /// `last_updated` as a date, when it is an RFC 3339 timestamp.
    package var lastUpdatedDate: Date? { lastUpdated.flatMap(RFC3339.date(from:)) }

    package var description: String { "AtlassianProfile(accountId: \(accountId), <personal data redacted>)" }
}

extension KeyedDecodingContainer {
    /// A value of the expected type, or nil when it is absent, null or of another type.
    fileprivate func lenient<T: Decodable>(_ key: Key) -> T? { (try? decodeIfPresent(T.self, forKey: key)) ?? nil }
}

/// One entry of `GET /oauth/token/accessible-resources` (§1.6): a site the grant reaches; `id` is the cloudId.
package struct AccessibleResource: Sendable, Equatable, Codable {
    package var id: String
    package var url: String?
    package var name: String?
    package var scopes: [String]
    package var avatarUrl: String?

    package init(id: String, url: String?, name: String?, scopes: [String], avatarUrl: String?) {
        self.id = id
        self.url = url
        self.name = name
        self.scopes = scopes
        self.avatarUrl = avatarUrl
    }

    enum CodingKeys: String, CodingKey { case id, url, name, scopes, avatarUrl }

    package init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        id = try c.decode(String.self, forKey: .id)
        url = (try? c.decodeIfPresent(String.self, forKey: .url)) ?? nil
        name = (try? c.decodeIfPresent(String.self, forKey: .name)) ?? nil
        scopes = ((try? c.decodeIfPresent([String].self, forKey: .scopes)) ?? nil) ?? []
        avatarUrl = (try? c.decodeIfPresent(String.self, forKey: .avatarUrl)) ?? nil
    }
}

/// One account in a PDR request (§3.2).
package struct ReportedAccount: Sendable, Hashable, Codable {
    package var accountId: String
    /// When the app retrieved the personal data it holds (the oldest retrieval when several); sent as RFC 3339.
    package var updatedAt: Date

    package init(accountId: String, updatedAt: Date) {
        self.accountId = accountId
        self.updatedAt = updatedAt
    }
}

/// One account PDR says needs action (§3.4).
package struct AccountAction: Sendable, Hashable {
    package var accountId: String
    package var status: Status

    package init(accountId: String, status: Status) {
        self.accountId = accountId
        self.status = status
    }

    /// `closed` → erase; `updated` → the copy is stale, erase or refresh. An unknown status is kept so the caller
    /// can log it; Lethe treats it as neither.
    package enum Status: Sendable, Hashable {
        case closed
        case updated
        case other(String)

        package init(rawValue: String) {
            switch rawValue {
            case "closed": self = .closed
            case "updated": self = .updated
            default: self = .other(rawValue)
            }
        }
    }
}

/// What a PDR call decided: some accounts need action (only ever accounts that were sent), or none do.
package enum PDROutcome: Sendable, Equatable {
    case needsAction([AccountAction])
    case nothingToDo
}

/// A successful PDR answer plus the `Cycle-Period` it carried, which the reporter must follow (§3.5).
package struct PDRResult: Sendable, Equatable {
    package var outcome: PDROutcome
    /// The parsed `Cycle-Period` header; nil when absent or unparseable (the caller keeps its default, 7 days).
    package var cyclePeriod: Duration?

    package init(outcome: PDROutcome, cyclePeriod: Duration?) {
        self.outcome = outcome
        self.cyclePeriod = cyclePeriod
    }
}
