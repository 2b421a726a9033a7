import Contracts
import Foundation

extension SandboxState {
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
    func grant(forBearer token: String?) -> Grant? {
        guard let token, let record = accessTokens[token], record.expiresAt > now,
              let grant = grants[record.grantId], !grant.revoked
        else { return nil }
        return grant
    }

    /// The app a bearer token belongs to, for the call log and per-app faults; nil when the token is not valid.
    func clientId(forBearer token: String?) -> String? { grant(forBearer: token)?.clientId }

    // MARK: Helpers

    private static func normalizedScope(_ scope: String) -> String {
        scope.split(separator: " ").joined(separator: " ")
    }

    private static func redirect(_ base: String, _ parameters: KeyValuePairs<String, String?>) -> String {
        let query = FormFields.queryString(parameters.map { ($0.key, $0.value) })
        return base + (base.contains("?") ? "&" : "?") + query
    }
}
