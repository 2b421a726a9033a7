import Contracts
import Foundation

/// The whole in-memory Atlassian: apps, users, grants, codes, tokens, faults, the PDR call log, and the clock.
///
/// An actor so every request sees a consistent state. Everything random comes from one seeded generator and every
/// time from `now` (wall clock plus what `/_sandbox/clock` advanced), so runs repeat and 90/365-day rules are testable
/// in milliseconds.
actor SandboxState {
    /// §1.5 and §1.4.
    static let accessTokenLifetime: TimeInterval = 3600
    static let codeLifetime: TimeInterval = 600
    static let reuseLeeway: TimeInterval = 600
    static let inactivityExpiry: TimeInterval = 90 * 86_400
    static let absoluteExpiry: TimeInterval = 365 * 86_400
    /// §3.2.
    static let maxAccountsPerReport = 90
    /// §1.3: what `/me` and the PDR endpoint need the token's grant to hold; without it they answer 403.
    static let meScope = "read:me"
    static let reportingScope = "report:personal-data"
    /// §3.7: Atlassian's fixed PDR test accounts.
    static let testActiveAccountId = "5be24ad8b1653240376955d2"
    static let testClosedAccountId = "5be24ba3f91c106033269289"

    private let config: SandboxConfig
    private var random: SeededGenerator
    private var clockOffset: TimeInterval = 0
    private(set) var settings: SandboxSettings

    private var apps: [String: SandboxApp] = [:]
    private var users: [String: SandboxUser] = [:]
    private var consentUser: String?
    private var denyConsent = false
    private var codes: [String: AuthorizationCode] = [:]
    private var grants: [Int: Grant] = [:]
    private var nextGrantId = 1
    private var accessTokens: [String: AccessTokenRecord] = [:]
    private var refreshTokens: [String: RefreshTokenRecord] = [:]
    private var faultRules: [FaultRule] = []
    private var calls: [PDRCall] = []
    private var tokenCalls: [TokenCall] = []
    private var rateWindows: [String: (start: Date, count: Int)] = [:]

    init(config: SandboxConfig) {
        self.config = config
        self.random = SeededGenerator(seed: config.seed)
        self.settings = config.settings
    }

    /// The sandbox clock.
    var now: Date { Date().addingTimeInterval(clockOffset) }

    // MARK: Control

    /// Forgets everything, as if freshly started with the same configuration.
    func reset() {
        random = SeededGenerator(seed: config.seed)
        clockOffset = 0
        settings = config.settings
        apps = [:]
        users = [:]
        consentUser = nil
        denyConsent = false
        codes = [:]
        grants = [:]
        nextGrantId = 1
        accessTokens = [:]
        refreshTokens = [:]
        faultRules = []
        calls = []
        tokenCalls = []
        rateWindows = [:]
    }

    func advanceClock(seconds: Double) -> Date {
        clockOffset += seconds
        return now
    }

    func updateSettings(_ patch: SettingsPatch) -> SandboxSettings {
        if let value = patch.cyclePeriodSeconds { settings.cyclePeriodSeconds = value }
        if let value = patch.cyclePeriodFormat { settings.cyclePeriodFormat = value }
        if let value = patch.cyclePeriodRaw { settings.cyclePeriodRaw = value }
        if let value = patch.rateLimitRequests { settings.rateLimitRequests = value }
        if let value = patch.rateLimitWindowSeconds { settings.rateLimitWindowSeconds = value }
        if let value = patch.retryAfterFormat { settings.retryAfterFormat = value }
        if let value = patch.deletionGraceSeconds { settings.deletionGraceSeconds = value }
        return settings
    }

    func addApp(_ app: SandboxApp) { apps[app.clientId] = app }

    func app(_ clientId: String) -> SandboxApp? { apps[clientId] }

    /// Adds (or replaces) a user; a missing account id is generated from the seed, Atlassian-style (24 hex chars),
    /// and a resource without an id gets a seeded cloud id.
    func addUser(_ request: CreateUserRequest) -> SandboxUser {
        let accountId = request.accountId ?? random.hex(24)
        let user = SandboxUser(
            accountId: accountId, accountType: request.accountType ?? "atlassian", name: request.name,
            email: request.email, emailVerified: request.emailVerified ?? true, nickname: request.nickname,
            picture: request.picture, zoneinfo: request.zoneinfo, locale: request.locale,
            extendedProfile: request.extendedProfile, lastUpdated: now,
            resources: (request.resources ?? []).map { resource in
                SandboxResource(id: resource.id ?? random.uuid(), url: resource.url, name: resource.name ?? "sandbox",
                                scopes: resource.scopes ?? [], avatarUrl: resource.avatarUrl ?? "")
            })
        users[accountId] = user
        return user
    }

    func user(_ accountId: String) -> SandboxUser? { users[accountId] }

    /// Closes an account at once, skipping the grace period a deletion has: PDR answers `closed` from now on, and
    /// its grants die (a closed account cannot use apps).
    func closeUser(_ accountId: String) -> Bool {
        guard users[accountId] != nil else { return false }
        users[accountId]!.closed = true
        users[accountId]!.lastUpdated = now
        revokeGrants { $0.accountId == accountId }
        return true
    }

    /// Deletes an account as Atlassian does (ATLASSIAN.md "Read first", §2): a grace period of
    /// `settings.deletionGraceSeconds` starts, during which it cannot sign in and its grants stop working, while PDR
    /// still answers nothing (or `updated` after a profile change); `closed` comes when the sandbox clock passes
    /// `closesAt`.
    ///
    /// The grants are revoked rather than suspended: the sandbox does not model cancelling a deletion, so nothing
    /// could bring them back. `lastUpdated` does not move, so the deletion alone never makes PDR say `updated`.
    /// Deleting again changes nothing (the grace period does not restart); nil for an unknown account.
    func deleteUser(_ accountId: String) -> SandboxUser? {
        guard var user = users[accountId] else { return nil }
        if user.closesAt == nil && !user.closed {
            let now = self.now
            user.deletedAt = now
            user.closesAt = now.addingTimeInterval(TimeInterval(settings.deletionGraceSeconds))
            users[accountId] = user
            revokeGrants { $0.accountId == accountId }
        }
        return user
    }

    /// Where the account is in its lifecycle now.
    func lifecycle(_ accountId: String) -> AccountLifecycle? { users[accountId]?.lifecycle(at: now) }

    /// Changes profile fields and moves `lastUpdated` to now, so PDR answers `updated` for older reports.
    func updateUser(_ accountId: String, _ patch: UpdateUserRequest) -> SandboxUser? {
        guard var user = users[accountId] else { return nil }
        if let value = patch.name { user.name = value }
        if let value = patch.email { user.email = value }
        if let value = patch.nickname { user.nickname = value }
        if let value = patch.picture { user.picture = value }
        if let value = patch.zoneinfo { user.zoneinfo = value }
        if let value = patch.locale { user.locale = value }
        if let value = patch.extendedProfile { user.extendedProfile = value }
        user.lastUpdated = now
        users[accountId] = user
        return user
    }

    /// Which user `/authorize` consents as when the query names none, and whether it declines instead.
    func setConsent(accountId: String?, deny: Bool) {
        consentUser = accountId
        denyConsent = deny
    }

    /// Revokes every grant of `accountId` with `clientId`; returns how many.
    func revokeGrants(clientId: String, accountId: String) -> Int {
        revokeGrants { $0.clientId == clientId && $0.accountId == accountId }
    }

    @discardableResult
    private func revokeGrants(where predicate: (Grant) -> Bool) -> Int {
        var count = 0
        for (id, grant) in grants where !grant.revoked && predicate(grant) {
            revokeGrant(id)
            count += 1
        }
        return count
    }

    private func revokeGrant(_ id: Int) {
        grants[id]?.revoked = true
        accessTokens = accessTokens.filter { $0.value.grantId != id }
        refreshTokens = refreshTokens.filter { $0.value.grantId != id }
    }

    func addFaultRule(_ rule: FaultRule) {
        faultRules.removeAll { $0.endpoint == rule.endpoint && $0.clientId == rule.clientId }
        faultRules.append(rule)
    }

    func clearFaults() { faultRules = [] }

    func listFaults() -> [FaultRule] { faultRules }

    func pdrCalls(clientId: String?) -> [PDRCall] {
        guard let clientId else { return calls }
        return calls.filter { $0.clientId == clientId }
    }

    /// The next fault for this request: the first matching rule's script first, then its random faults.
    func nextFault(endpoint: SandboxEndpoint, clientId: String?) -> FaultSpec? {
        for index in faultRules.indices {
            let rule = faultRules[index]
            guard rule.endpoint == nil || rule.endpoint == .any || rule.endpoint == endpoint else { continue }
            guard rule.clientId == nil || rule.clientId == clientId else { continue }
            if var script = rule.script, !script.isEmpty {
                let fault = script.removeFirst()
                faultRules[index].script = script
                return fault
            }
            for candidate in rule.random ?? [] {
                let roll = Double(random.next() >> 11) / Double(1 << 53)
                if roll < candidate.probability { return candidate.fault }
            }
        }
        return nil
    }

    /// Records a PDR request answered by an injected fault (or dropped).
    func recordFaultedCall(clientId: String?, body: Data, status: Int, fault: FaultSpec) {
        record(clientId: clientId, accounts: Self.bestEffortAccounts(body), status: status, fault: fault.kind.rawValue)
    }

    private func record(clientId: String?, accounts: [PDRCall.Account], status: Int, fault: String? = nil) {
        calls.append(PDRCall(sequence: calls.count + 1, clientId: clientId, accounts: accounts, status: status,
                             time: RFC3339.string(from: now), fault: fault))
    }

    // MARK: OAuth (ATLASSIAN.md §1)

    enum AuthorizeOutcome: Sendable {
        case redirect(String)
        case refused(SandboxAnswer)
    }

    /// `GET /authorize` (§1.2). Problems the browser's app cannot be told about safely (unknown client, a
    /// redirect_uri that isn't the Callback URL) are a 400 page, never a redirect; the rest follow OAuth and redirect.
    func authorize(_ query: [String: String]) -> AuthorizeOutcome {
        guard let clientId = query["client_id"], !clientId.isEmpty else {
            return .refused(.badRequest("client_id is required"))
        }
        guard let app = apps[clientId] else { return .refused(.badRequest("unknown client_id")) }
        guard let redirectUri = query["redirect_uri"] else { return .refused(.badRequest("redirect_uri is required")) }
        guard redirectUri == app.callbackUrl else {
            return .refused(.badRequest("redirect_uri does not match the app's callback URL"))
        }
        if let audience = query["audience"], audience != "api.atlassian.com" {
            return .refused(.badRequest("audience must be api.atlassian.com"))
        }
        let state = query["state"]
        guard query["response_type"] == "code" else {
            return .redirect(Self.redirect(redirectUri, ["error": "unsupported_response_type", "state": state]))
        }
        guard let scope = query["scope"], !scope.trimmingCharacters(in: .whitespaces).isEmpty else {
            return .redirect(Self.redirect(redirectUri, ["error": "invalid_scope",
                                                         "error_description": "scope is required", "state": state]))
        }
        if denyConsent {
            return .redirect(Self.redirect(redirectUri, [
                "error": "access_denied", "error_description": "The user declined consent", "state": state,
            ]))
        }
        guard let accountId = query["sandbox_user"] ?? consentUser else {
            return .refused(.badRequest(
                "no user to consent as: POST /_sandbox/consent {accountId} or add sandbox_user= to the query"))
        }
        guard let user = users[accountId] else { return .refused(.badRequest("unknown sandbox_user")) }
        switch user.lifecycle(at: now) {
        case .active: break
        case .deleting:
            // A deleted account cannot sign in during its grace period either ("Read first").
            return .redirect(Self.redirect(redirectUri, [
                "error": "access_denied", "error_description": "The account has been deleted", "state": state,
            ]))
        case .closed:
            return .redirect(Self.redirect(redirectUri, [
                "error": "access_denied", "error_description": "The account is closed", "state": state,
            ]))
        }
        let code = "sbx_code_" + random.hex(32)
        codes[code] = AuthorizationCode(clientId: clientId, redirectUri: redirectUri, accountId: accountId,
                                        scope: Self.normalizedScope(scope), issuedAt: now)
        return .redirect(Self.redirect(redirectUri, ["code": code, "state": state]))
    }

    /// Every `POST /oauth/token` the sandbox answered, optionally of one app: how tests prove that a client exchanged
    /// nothing (a refused sign-in) or refreshed exactly once (single-flight).
    func tokenCalls(clientId: String?) -> [TokenCall] {
        guard let clientId else { return tokenCalls }
        return tokenCalls.filter { $0.clientId == clientId }
    }

    /// `POST /oauth/token` (§1.4, §1.5), body already parsed from JSON or form; logged in the token call log.
    func token(_ body: [String: String]) -> SandboxAnswer {
        let answer = answerToken(body)
        tokenCalls.append(TokenCall(
            sequence: tokenCalls.count + 1, clientId: body["client_id"], grantType: body["grant_type"],
            status: answer.status, time: RFC3339.string(from: now)))
        return answer
    }

    private func answerToken(_ body: [String: String]) -> SandboxAnswer {
        guard let grantType = body["grant_type"] else {
            return .oauth(400, "invalid_request", "grant_type is required")
        }
        guard let clientId = body["client_id"], let secret = body["client_secret"] else {
            return .oauth(401, "access_denied", "client_id and client_secret are required in the body")
        }
        guard let app = apps[clientId] else { return .oauth(403, "unauthorized_client", "Unknown client") }
        // A wrong secret answers access_denied, as jira.js documents (ATLASSIAN.md §1.2, unverified).
        guard app.clientSecret == secret else { return .oauth(401, "access_denied", "Unauthorized") }

        switch grantType {
        case "authorization_code": return exchangeCode(body, clientId: clientId)
        case "refresh_token": return refresh(body, clientId: clientId)
        default: return .oauth(400, "unsupported_grant_type", "grant_type must be authorization_code or refresh_token")
        }
    }

    private func exchangeCode(_ body: [String: String], clientId: String) -> SandboxAnswer {
        guard let code = body["code"], let redirectUri = body["redirect_uri"] else {
            return .oauth(400, "invalid_request", "code and redirect_uri are required")
        }
        guard var record = codes[code], record.clientId == clientId else {
            return .oauth(403, "invalid_grant", "Invalid authorization code")
        }
        guard !record.used else { return .oauth(403, "invalid_grant", "Invalid authorization code") }
        // Marked used before the other checks: a code that was tried with the wrong redirect is burnt too.
        record.used = true
        codes[code] = record
        guard record.redirectUri == redirectUri else {
            return .oauth(403, "invalid_grant", "redirect_uri does not match the authorization request")
        }
        guard now.timeIntervalSince(record.issuedAt) < Self.codeLifetime else {
            return .oauth(403, "invalid_grant", "Authorization code has expired")
        }
        // A code issued before the account was deleted or closed is worthless after it.
        guard let user = users[record.accountId], user.lifecycle(at: now) == .active else {
            return .oauth(403, "invalid_grant", "Invalid authorization code")
        }
        let grantId = nextGrantId
        nextGrantId += 1
        grants[grantId] = Grant(clientId: clientId, accountId: record.accountId, scope: record.scope, createdAt: now)
        return issueTokens(grantId: grantId)
    }

    private func refresh(_ body: [String: String], clientId: String) -> SandboxAnswer {
        guard let token = body["refresh_token"] else {
            return .oauth(400, "invalid_request", "refresh_token is required")
        }
        guard var record = refreshTokens[token], let grant = grants[record.grantId], grant.clientId == clientId,
              !grant.revoked
        else { return .oauth(403, "invalid_grant", "Unknown or invalid refresh token.") }
        let now = self.now
        if now.timeIntervalSince(grant.createdAt) >= Self.absoluteExpiry
            || now.timeIntervalSince(record.issuedAt) >= Self.inactivityExpiry {
            revokeGrant(record.grantId)
            return .oauth(403, "invalid_grant", "Token has been expired or revoked.")
        }
        if let usedAt = record.usedAt {
            guard now.timeIntervalSince(usedAt) <= Self.reuseLeeway else {
                // Reuse outside the leeway: every token of the grant dies, the user must consent again (§1.5).
                revokeGrant(record.grantId)
                return .oauth(403, "invalid_grant", "Unknown or invalid refresh token.")
            }
        } else {
            record.usedAt = now
            refreshTokens[token] = record
        }
        return issueTokens(grantId: record.grantId)
    }

    private func issueTokens(grantId: Int) -> SandboxAnswer {
        let grant = grants[grantId]!
        let accessToken = "sbx_at_" + random.hex(40)
        accessTokens[accessToken] = AccessTokenRecord(
            grantId: grantId, expiresAt: now.addingTimeInterval(Self.accessTokenLifetime))
        var answer: [String: Any] = [
            "access_token": accessToken, "expires_in": Int(Self.accessTokenLifetime), "token_type": "Bearer",
            "scope": grant.scope,
        ]
        if grant.allows("offline_access") {
            let refreshToken = "sbx_rt_" + random.hex(40)
            refreshTokens[refreshToken] = RefreshTokenRecord(grantId: grantId, issuedAt: now)
            answer["refresh_token"] = refreshToken
        }
        return .json(200, answer)
    }

    /// The live grant behind a bearer token, or nil (missing, unknown, expired, revoked).
    private func grant(forBearer token: String?) -> Grant? {
        guard let token, let record = accessTokens[token], record.expiresAt > now,
              let grant = grants[record.grantId], !grant.revoked
        else { return nil }
        return grant
    }

    /// The app a bearer token belongs to, for the call log and per-app faults; nil when the token is not valid.
    func clientId(forBearer token: String?) -> String? { grant(forBearer: token)?.clientId }

    // MARK: API (§1.6, §2)

    func me(bearer: String?) -> SandboxAnswer {
        guard let grant = grant(forBearer: bearer), let user = users[grant.accountId] else {
            return .json(401, ["code": 401, "message": "Unauthorized"])
        }
        guard grant.allows(Self.meScope) else { return Self.missingScope(Self.meScope) }
        var body: [String: Any] = [
            "account_id": user.accountId, "account_type": user.accountType, "email": user.email,
            "email_verified": user.emailVerified, "name": user.name, "nickname": user.nickname,
            "picture": user.picture, "account_status": user.lifecycle(at: now) == .active ? "active" : "closed",
            "last_updated": RFC3339.string(from: user.lastUpdated),
        ]
        if let zoneinfo = user.zoneinfo { body["zoneinfo"] = zoneinfo }
        if let locale = user.locale { body["locale"] = locale }
        if let extended = user.extendedProfile { body["extended_profile"] = extended }
        return .json(200, body)
    }

    func accessibleResources(bearer: String?) -> SandboxAnswer {
        guard let grant = grant(forBearer: bearer), let user = users[grant.accountId] else {
            return .json(401, ["code": 401, "message": "Unauthorized"])
        }
        return .encoded(200, user.resources)
    }

    // MARK: PDR (§3)

    /// `POST /app/report-accounts/` after fault injection: auth, rate limit, validation, answer. Every request is
    /// logged with what it carried and what it got.
    func reportAccounts(bearer: String?, body: Data) -> SandboxAnswer {
        let grant = grant(forBearer: bearer)
        let accounts = Self.bestEffortAccounts(body)
        let answer = decideReport(grant: grant, body: body)
        record(clientId: grant?.clientId, accounts: accounts, status: answer.status)
        return answer
    }

    private func decideReport(grant: Grant?, body: Data) -> SandboxAnswer {
        guard let grant else { return .json(401, ["code": 401, "message": "Unauthorized"]) }
        // The real API may refuse such a token (ATLASSIAN.md "Read first", §3.3): refusing it always is what lets a
        // test catch a client that never asked for the scope.
        guard grant.allows(Self.reportingScope) else { return Self.missingScope(Self.reportingScope) }
        if let retryAfter = rateLimit(clientId: grant.clientId) {
            return .json(429, ["code": 429, "message": "Too Many Requests"],
                         headers: [("Retry-After", Self.retryAfterValue(retryAfter, format: settings.retryAfterFormat))])
        }
        guard let object = try? JSONSerialization.jsonObject(with: body) as? [String: Any],
              let entries = object["accounts"] as? [Any]
        else { return .pdr(400, "INVALID_REQUEST", "Body must be a JSON object {\"accounts\": [...]}") }
        guard !entries.isEmpty else { return .pdr(400, "INVALID_REQUEST", "accounts must not be empty") }
        guard entries.count <= Self.maxAccountsPerReport else {
            return .pdr(400, "INVALID_REQUEST",
                        "A maximum of \(Self.maxAccountsPerReport) accounts is allowed per request; got \(entries.count)")
        }
        var reported: [(accountId: String, updatedAt: Date)] = []
        for (index, entry) in entries.enumerated() {
            guard let entry = entry as? [String: Any], let accountId = entry["accountId"] as? String,
                  AccountKey.isValidAccountId(accountId)
            else { return .pdr(400, "INVALID_REQUEST", "accounts[\(index)].accountId is missing or invalid") }
            guard let raw = entry["updatedAt"] as? String, let updatedAt = RFC3339.date(from: raw) else {
                return .pdr(400, "INVALID_REQUEST", "accounts[\(index)].updatedAt is not an RFC 3339 date-time")
            }
            reported.append((accountId, updatedAt))
        }
        var seen = Set<String>()
        var actions: [[String: String]] = []
        let now = self.now
        for (accountId, updatedAt) in reported where seen.insert(accountId).inserted {
            if accountId == Self.testClosedAccountId {
                actions.append(["accountId": accountId, "status": "closed"])
            } else if accountId == Self.testActiveAccountId {
                continue
            } else if let user = users[accountId] {
                // A deleting account is not `closed` yet: until its grace period ends it answers like an active one.
                if user.lifecycle(at: now) == .closed {
                    actions.append(["accountId": accountId, "status": "closed"])
                } else if user.lastUpdated > updatedAt {
                    actions.append(["accountId": accountId, "status": "updated"])
                }
            }
        }
        var headers: [(String, String)] = []
        if let cycle = settings.cyclePeriodHeader { headers.append(("Cycle-Period", cycle)) }
        if actions.isEmpty { return SandboxAnswer(status: 204, json: nil, headers: headers) }
        return .json(200, ["accounts": actions], headers: headers)
    }

    /// Counts the request against the app's window; returns seconds to wait when over the limit.
    private func rateLimit(clientId: String) -> Int? {
        guard settings.rateLimitRequests > 0 else { return nil }
        let now = self.now
        let window = TimeInterval(settings.rateLimitWindowSeconds)
        var current = rateWindows[clientId] ?? (now, 0)
        if now.timeIntervalSince(current.start) >= window { current = (now, 0) }
        current.count += 1
        rateWindows[clientId] = current
        guard current.count > settings.rateLimitRequests else { return nil }
        return max(1, Int((current.start.addingTimeInterval(window).timeIntervalSince(now)).rounded(.up)))
    }

    // MARK: Helpers

    /// `Retry-After` as seconds or an HTTP-date. The date is measured from the real wall clock, not the sandbox
    /// clock: the client compares it with its own clock.
    static func retryAfterValue(_ seconds: Int, format: SandboxSettings.RetryAfterFormat) -> String {
        switch format {
        case .seconds: return String(seconds)
        case .httpDate:
            let formatter = DateFormatter()
            formatter.locale = Locale(identifier: "en_US_POSIX")
            formatter.timeZone = TimeZone(identifier: "GMT")
            formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss 'GMT'"
            return formatter.string(from: Date().addingTimeInterval(TimeInterval(seconds)))
        }
    }


    /// Whatever accounts a body carried, valid or not, for the call log.
    static func bestEffortAccounts(_ body: Data) -> [PDRCall.Account] {
        guard let object = try? JSONSerialization.jsonObject(with: body) as? [String: Any],
              let entries = object["accounts"] as? [Any]
        else { return [] }
        return entries.compactMap { entry in
            guard let entry = entry as? [String: Any] else { return nil }
            return PDRCall.Account(accountId: entry["accountId"] as? String ?? "",
                                   updatedAt: entry["updatedAt"] as? String ?? "")
        }
    }

    private static func missingScope(_ scope: String) -> SandboxAnswer {
        .json(403, ["code": 403, "message": "Forbidden: the token's grant lacks the scope \(scope)"])
    }

    private static func normalizedScope(_ scope: String) -> String {
        scope.split(separator: " ").joined(separator: " ")
    }

    private static func redirect(_ base: String, _ parameters: KeyValuePairs<String, String?>) -> String {
        let query = FormFields.queryString(parameters.map { ($0.key, $0.value) })
        return base + (base.contains("?") ? "&" : "?") + query
    }
}
