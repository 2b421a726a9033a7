import Contracts
import Foundation
import Hummingbird
import ServiceKit

/// A profile as the tenant-scoped HTTP API returns it.
struct ProfileResponse: ResponseCodable, Equatable {
    var platformUserId: String
    var tenantId: String
    var appId: String
    /// nil once the profile was disassociated from its Atlassian account.
    var accountId: String?
    var name: String?
    var email: String?
    var nickname: String?
    var picture: String?
    var fetchedAt: Date

    init(_ profile: StoredProfile) {
        platformUserId = profile.platformUserId
        tenantId = profile.tenantId
        appId = profile.appId
        accountId = profile.accountId
        name = profile.name
        email = profile.email
        nickname = profile.nickname
        picture = profile.picture
        fetchedAt = profile.fetchedAt
    }
}

/// A page of profiles; `nextCursor` is absent on the last page.
struct ProfilePage: ResponseCodable, Equatable {
    var profiles: [ProfileResponse]
    var nextCursor: String?
}

/// The tenant-scoped profile API. Every route needs the tenant's bearer token; a token of another tenant gets 404,
/// exactly as an unknown account does, so nothing about other tenants' users can be learned.
///
/// - `GET /v1/tenants/{tenant}/profiles/{accountId}[?appId=]` — the most recently fetched profile of the account.
/// - `GET /v1/tenants/{tenant}/profiles?limit=&cursor=` — all of the tenant's profiles, in pages (limit 1…500,
///   default 50; `cursor` from the previous page's `nextCursor`).
enum ProfileAPI {
    static let defaultLimit = 50
    static let maximumLimit = 500
    static let cursor = PageCursor(kind: "r")

    static func addRoutes(to router: Router<LetheRequestContext>, database: ProfileDatabase,
                          verifier: TenantTokenVerifier) {
        let tenants = router.group("/v1/tenants/:tenant/profiles")
        tenants.get(":accountId") { request, context -> ProfileResponse in
            let tenant = try context.parameters.require("tenant")
            _ = try await verifier.authorize(request, tenant: tenant)
            let accountId = try context.parameters.require("accountId")
            guard AccountKey.isValidAccountId(accountId) else {
                throw HTTPError(.badRequest, message: "accountId must be 1 to 128 letters, digits, '-' or ':'")
            }
            let appId = FormFields(query: request)["appId"]
            guard let profile = try await database.profiles(tenantId: tenant, accountId: accountId, appId: appId)
                .first
            else { throw HTTPError(.notFound) }
            return ProfileResponse(profile)
        }
        tenants.get { request, context -> ProfilePage in
            let tenant = try context.parameters.require("tenant")
            _ = try await verifier.authorize(request, tenant: tenant)
            let query = FormFields(query: request)
            let limit = try PageCursor.parseLimit(
                query["limit"], default: defaultLimit, maximum: maximumLimit)
            let afterRow = try cursor.parse(query["cursor"])
            let page = try await database.profilePage(tenantId: tenant, afterRow: afterRow, limit: limit)
            return ProfilePage(profiles: page.profiles.map(ProfileResponse.init),
                               nextCursor: page.lastRow.map(cursor.make(after:)))
        }
    }
}
