import Contracts
import Foundation

extension SandboxState {
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
}
