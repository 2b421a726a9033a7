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
    var random: SeededGenerator
    private var clockOffset: TimeInterval = 0
    private(set) var settings: SandboxSettings

    var apps: [String: SandboxApp] = [:]
    var users: [String: SandboxUser] = [:]
    var consentUser: String?
    var denyConsent = false
    var codes: [String: AuthorizationCode] = [:]
    var grants: [Int: Grant] = [:]
    var nextGrantId = 1
    var accessTokens: [String: AccessTokenRecord] = [:]
    var refreshTokens: [String: RefreshTokenRecord] = [:]
    private var faultRules: [FaultRule] = []
    private var calls: [PDRCall] = []
    var tokenCalls: [TokenCall] = []
    var rateWindows: [String: (start: Date, count: Int)] = [:]

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

    func revokeGrant(_ id: Int) {
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

    func record(clientId: String?, accounts: [PDRCall.Account], status: Int, fault: String? = nil) {
        calls.append(PDRCall(sequence: calls.count + 1, clientId: clientId, accounts: accounts, status: status,
                             time: RFC3339.string(from: now), fault: fault))
    }
}
