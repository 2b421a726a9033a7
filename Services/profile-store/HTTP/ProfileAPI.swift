import Contracts
import Foundation
import Hummingbird
import ServiceKit
import ServiceRuntime

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
    /// Its place in the tenant's list: only in the answer to another replica, which merges its replicas' pages by it.
    var listKey: String?

    init(_ profile: StoredProfile, withListKey: Bool = false) {
        platformUserId = profile.platformUserId
        tenantId = profile.tenantId
        appId = profile.appId
        accountId = profile.accountId
        name = profile.name
        email = profile.email
        nickname = profile.nickname
        picture = profile.picture
        fetchedAt = profile.fetchedAt
        listKey = withListKey ? profile.listKey : nil
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
///   default 50; `cursor` from the previous page's `nextCursor`), ordered by app and accountId (unlinked profiles
///   last), the same on every replica.
///
/// With partition-owning replicas (`partitions`), every replica answers every route: one app's profile of an account
/// is answered by the owner of its partition (forwarded there), and a question about all apps or all profiles is
/// asked of every owner and the answers merged (``PartitionRouter``).
enum ProfileAPI {
    static let defaultLimit = 50
    static let maximumLimit = 500
    /// Cursors carry the last list key; `r` cursors (row ids, before replicas owned partitions) answer 400.
    static let cursor = PageCursor(kind: "k")

    static func addRoutes(
        to router: Router<LetheRequestContext>, database: ProfileDatabase, verifier: TenantTokenVerifier,
        partitions: PartitionRouter? = nil, changelog: ProfileChangelog? = nil
    ) {
        let tenants = router.group("/v1/tenants/:tenant/profiles")
        tenants.get(":accountId") { request, context -> Response in
            let tenant = try context.parameters.require("tenant")
            _ = try await verifier.authorize(request, tenant: tenant)
            let accountId = try context.parameters.require("accountId")
            guard AccountKey.isValidAccountId(accountId) else {
                throw HTTPError(.badRequest, message: "accountId must be 1 to 128 letters, digits, '-' or ':'")
            }
            let appId = FormFields(query: request)["appId"]
            var found: [ProfileResponse] = []
            if let partitions, let changelog {
                if let appId {
                    guard let key = try? AccountKey(appId: appId, accountId: accountId) else {
                        throw HTTPError(.badRequest, message: "appId must not be empty or contain ':'")
                    }
                    if let answer = try await partitions.forwardUnlessOwned(
                        request, context: context, partition: changelog.partition(of: key))
                    {
                        return answer
                    }
                } else {
                    for answer in try await partitions.gather(request, context: context) where answer.status != 404 {
                        found.append(try answer.decode(ProfileResponse.self))
                    }
                }
            }
            found += try await database.profiles(tenantId: tenant, accountId: accountId, appId: appId)
                .prefix(1).map { ProfileResponse($0) }
            // The most recently fetched of every replica's answer (they hold different apps' profiles).
            guard let newest = found.max(by: { $0.fetchedAt < $1.fetchedAt }) else { throw HTTPError(.notFound) }
            return try newest.response(from: request, context: context)
        }
        tenants.get { request, context -> ProfilePage in
            let tenant = try context.parameters.require("tenant")
            _ = try await verifier.authorize(request, tenant: tenant)
            let query = FormFields(query: request)
            let limit = try PageCursor.parseLimit(
                query["limit"], default: defaultLimit, maximum: maximumLimit)
            let afterKey = try cursor.parseKey(query["cursor"])
            let forwarded = PartitionRouter.isForwarded(request)
            let page = try await database.profilePage(tenantId: tenant, afterKey: afterKey, limit: limit)
            var profiles = page.profiles.map { ProfileResponse($0, withListKey: true) }
            var more = page.more
            for answer in try await partitions?.gather(request, context: context) ?? [] {
                let part = try answer.decode(ProfilePage.self)
                guard part.profiles.allSatisfy({ $0.listKey != nil }) else {
                    throw HTTPError(.badGateway, message: "replica \(answer.replica) answered a page without list keys")
                }
                profiles += part.profiles
                more = more || part.nextCursor != nil
            }
            // Every replica's page starts after the same key: the first `limit` of their union are the page.
            profiles.sort { $0.listKey! < $1.listKey! }
            more = more || profiles.count > limit
            profiles = Array(profiles.prefix(limit))
            let next = more ? profiles.last?.listKey.map(cursor.make(afterKey:)) : nil
            if !forwarded { for index in profiles.indices { profiles[index].listKey = nil } }
            return ProfilePage(profiles: profiles, nextCursor: next)
        }
    }
}
