import AtlassianClient
import Foundation
import Testing

/// ATLASSIAN.md §1.2 (authorize), §1.4 (token endpoint), §1.5 (rotation) — the client against the sandbox.
@Suite("OAuth 3LO against the sandbox")
struct OAuthTests {
    @Test("the authorize URL carries every documented parameter, scopes joined by %20")
    func authorizeURLParameters() async throws {
        try await Sandbox.run { sandbox in
            let url = sandbox.client.authorizeURL(
                clientId: sandbox.app.clientId, redirectURI: sandbox.app.redirectURI, scopes: ["read:me", "offline_access"],
                state: "a+b/c d")
            #expect(url.absoluteString.hasPrefix(sandbox.baseURL + "/authorize?"))
            #expect(url.absoluteString.contains("scope=read%3Ame%20offline_access"))
            let items = URLComponents(url: url, resolvingAgainstBaseURL: false)?.queryItems ?? []
            var query: [String: String] = [:]
            for item in items { query[item.name] = item.value }
            #expect(query == [
                "audience": "api.atlassian.com", "client_id": sandbox.app.clientId,
                "scope": "read:me offline_access", "redirect_uri": sandbox.app.redirectURI, "state": "a+b/c d",
                "response_type": "code", "prompt": "consent",
            ])

            // The sandbox accepts it and redirects to the callback with a code and the state echoed verbatim.
            try await sandbox.addUser("ada")
            try await sandbox.control("/consent", ["accountId": "ada"])
            let answer = try await sandbox.authorize(url)
            #expect(answer.status == 302)
            #expect(answer.locationBase == sandbox.app.redirectURI)
            #expect(answer.location["state"] == "a+b/c d")
            #expect(answer.location["code"]?.isEmpty == false)
        }
    }

    @Test("authorize reads its query as a form: scope=read:me+offline_access is two scopes and yields a refresh token")
    func authorizeQueryIsFormEncoded() async throws {
        try await Sandbox.run { sandbox in
            try await sandbox.addUser("ada")
            // What Python's urlencode, a browser's form and most OAuth libraries send: spaces as `+` (issue 21).
            let query = "client_id=\(sandbox.app.clientId)&scope=read%3Ame+offline_access&response_type=code"
                + "&redirect_uri=\(Self.encode(sandbox.app.redirectURI))&state=a+b%2Bc%25d&sandbox_user=ada"
            let answer = try await sandbox.authorize(URL(string: sandbox.baseURL + "/authorize?" + query)!)
            #expect(answer.status == 302)
            #expect(answer.location["state"] == "a b+c%d")
            let code = try AtlassianClient.parseCallback(query: answer.location).code
            let tokens = try await sandbox.client.exchangeCode(code, credentials: sandbox.app)
            #expect(tokens.scopes == ["read:me", "offline_access"])
            #expect(tokens.refreshToken != nil)
        }
    }

    @Test("authorize tolerates a missing audience but refuses a redirect_uri that is not the callback URL")
    func authorizeValidation() async throws {
        try await Sandbox.run { sandbox in
            try await sandbox.addUser("ada")
            let base = "/authorize?client_id=\(sandbox.app.clientId)&scope=read%3Ame&response_type=code&sandbox_user=ada"
            let good = base + "&redirect_uri=" + Self.encode(sandbox.app.redirectURI)
            let noAudience = try await sandbox.authorize(URL(string: sandbox.baseURL + good)!)
            #expect(noAudience.status == 302)
            #expect(noAudience.location["code"] != nil)

            let wrong = base + "&redirect_uri=" + Self.encode(sandbox.app.redirectURI + "/other")
            let refused = try await sandbox.raw(.GET, wrong)
            #expect(refused.status == 400)
            #expect(refused.headers["location"] == nil)
            #expect(try refused.json()["reason"] as? String == "redirect_uri does not match the app's callback URL")

            let unknown = try await sandbox.raw(.GET, "/authorize?client_id=nope&response_type=code")
            #expect(unknown.status == 400)
        }
    }

    @Test("deny mode redirects with error=access_denied and the state; the client types it")
    func denyMode() async throws {
        try await Sandbox.run { sandbox in
            try await sandbox.addUser("ada")
            try await sandbox.control("/consent", ["accountId": "ada", "decision": "deny"])
            let url = sandbox.client.authorizeURL(
                clientId: sandbox.app.clientId, redirectURI: sandbox.app.redirectURI, scopes: Sandbox.scopes,
                state: "s-42")
            let answer = try await sandbox.authorize(url)
            #expect(answer.status == 302)
            #expect(answer.locationBase == sandbox.app.redirectURI)
            #expect(answer.location["error"] == "access_denied")
            #expect(answer.location["state"] == "s-42")
            #expect(answer.location["code"] == nil)
            #expect(throws: AtlassianError.oauth(.accessDenied, description: "The user declined consent", status: 302)) {
                try AtlassianClient.parseCallback(query: answer.location)
            }
        }
    }

    @Test("a code exchange returns a Bearer token for 3600 s, the granted scopes and a refresh token")
    func codeExchange() async throws {
        try await Sandbox.run { sandbox in
            try await sandbox.addUser("ada")
            let tokens = try await sandbox.signIn("ada")
            #expect(tokens.expiresIn == 3600)
            #expect(tokens.tokenType == "Bearer")
            #expect(tokens.scopes == Set(Sandbox.scopes))
            #expect(tokens.refreshToken != nil)
            #expect(!tokens.description.contains(tokens.accessToken))

            let withoutOffline = try await sandbox.signIn("ada", scopes: ["read:me"])
            #expect(withoutOffline.refreshToken == nil)
        }
    }

    @Test("a code is single-use")
    func codeSingleUse() async throws {
        try await Sandbox.run { sandbox in
            try await sandbox.addUser("ada")
            let code = try await Self.code(sandbox, for: "ada")
            _ = try await sandbox.client.exchangeCode(code, credentials: sandbox.app)
            await expectAtlassianError(.oauth(.invalidGrant, description: "Invalid authorization code", status: 403)) {
                try await sandbox.client.exchangeCode(code, credentials: sandbox.app)
            }
        }
    }

    @Test("a code is bound to the redirect_uri it was issued for")
    func codeBoundToRedirect() async throws {
        try await Sandbox.run { sandbox in
            try await sandbox.addUser("ada")
            let code = try await Self.code(sandbox, for: "ada")
            var other = sandbox.app
            other.redirectURI += "/elsewhere"
            let error = await atlassianError { try await sandbox.client.exchangeCode(code, credentials: other) }
            guard case .oauth(.invalidGrant, _, 403)? = error else {
                Issue.record("expected invalid_grant, got \(String(describing: error))")
                return
            }
        }
    }

    @Test("a code expires after 10 minutes")
    func codeTTL() async throws {
        try await Sandbox.run { sandbox in
            try await sandbox.addUser("ada")
            let code = try await Self.code(sandbox, for: "ada")
            try await sandbox.advanceClock(seconds: 601)
            await expectAtlassianError(.oauth(.invalidGrant, description: "Authorization code has expired", status: 403)) {
                try await sandbox.client.exchangeCode(code, credentials: sandbox.app)
            }
        }
    }

    @Test("a wrong secret is access_denied, an unknown client unauthorized_client — typed from the error field")
    func clientAuthentication() async throws {
        try await Sandbox.run { sandbox in
            try await sandbox.addUser("ada")
            let code = try await Self.code(sandbox, for: "ada")
            var wrongSecret = sandbox.app
            wrongSecret.clientSecret = "not-the-secret"
            await expectAtlassianError(.oauth(.accessDenied, description: "Unauthorized", status: 401)) {
                try await sandbox.client.exchangeCode(code, credentials: wrongSecret)
            }
            var unknown = sandbox.app
            unknown.clientId = "who"
            await expectAtlassianError(.oauth(.unauthorizedClient, description: "Unknown client", status: 403)) {
                try await sandbox.client.exchangeCode(code, credentials: unknown)
            }
        }
    }

    @Test("the token endpoint also accepts a form-encoded body")
    func formBody() async throws {
        try await Sandbox.run { sandbox in
            try await sandbox.addUser("ada")
            let code = try await Self.code(sandbox, for: "ada")
            let form = [
                "grant_type=authorization_code", "client_id=\(sandbox.app.clientId)",
                "client_secret=\(sandbox.app.clientSecret)", "code=\(code)",
                "redirect_uri=\(Self.encode(sandbox.app.redirectURI))",
            ].joined(separator: "&")
            let response = try await sandbox.raw(
                .POST, "/oauth/token", body: Data(form.utf8), contentType: "application/x-www-form-urlencoded")
            #expect(response.status == 200)
            #expect(try response.json()["expires_in"] as? Int == 3600)
        }
    }

    @Test("refresh rotates: a new refresh token each time; the used one still works inside the 10-minute leeway")
    func refreshInsideLeeway() async throws {
        try await Sandbox.run { sandbox in
            try await sandbox.addUser("ada")
            let first = try await sandbox.signIn("ada")
            let rt1 = try #require(first.refreshToken)
            let second = try await sandbox.client.refresh(refreshToken: rt1, credentials: sandbox.app)
            let rt2 = try #require(second.refreshToken)
            #expect(rt2 != rt1)
            #expect(second.accessToken != first.accessToken)

            try await sandbox.advanceClock(seconds: 9 * 60)
            let again = try await sandbox.client.refresh(refreshToken: rt1, credentials: sandbox.app)
            #expect(again.refreshToken != nil)
            // The grant is intact: the newest tokens work.
            _ = try await sandbox.client.me(accessToken: again.accessToken)
            _ = try await sandbox.client.refresh(refreshToken: rt2, credentials: sandbox.app)
        }
    }

    @Test("reusing a refresh token after the leeway revokes every token of the grant")
    func refreshReuseAfterLeeway() async throws {
        try await Sandbox.run { sandbox in
            try await sandbox.addUser("ada")
            let first = try await sandbox.signIn("ada")
            let rt1 = try #require(first.refreshToken)
            let second = try await sandbox.client.refresh(refreshToken: rt1, credentials: sandbox.app)
            let rt2 = try #require(second.refreshToken)

            try await sandbox.advanceClock(seconds: 11 * 60)
            await expectAtlassianError(
                .oauth(.invalidGrant, description: "Unknown or invalid refresh token.", status: 403)) {
                try await sandbox.client.refresh(refreshToken: rt1, credentials: sandbox.app)
            }
            // Every token of the grant is dead: the newest refresh token and the live access token.
            await expectAtlassianError(
                .oauth(.invalidGrant, description: "Unknown or invalid refresh token.", status: 403)) {
                try await sandbox.client.refresh(refreshToken: rt2, credentials: sandbox.app)
            }
            await expectAtlassianError(.unauthorized) { try await sandbox.client.me(accessToken: second.accessToken) }
        }
    }

    @Test("a refresh token unused for 90 days expires; each refresh restarts the 90 days")
    func inactivityExpiry() async throws {
        try await Sandbox.run { sandbox in
            try await sandbox.addUser("ada")
            var token = try #require(try await sandbox.signIn("ada").refreshToken)
            try await sandbox.advanceClock(seconds: 89 * 86_400)
            token = try #require(try await sandbox.client.refresh(refreshToken: token, credentials: sandbox.app).refreshToken)
            try await sandbox.advanceClock(seconds: 89 * 86_400)
            token = try #require(try await sandbox.client.refresh(refreshToken: token, credentials: sandbox.app).refreshToken)
            try await sandbox.advanceClock(seconds: 90 * 86_400 + 1)
            await expectAtlassianError(.oauth(.invalidGrant, description: "Token has been expired or revoked.", status: 403)) {
                try await sandbox.client.refresh(refreshToken: token, credentials: sandbox.app)
            }
        }
    }

    @Test("a grant expires 365 days after consent however often it is refreshed")
    func absoluteExpiry() async throws {
        try await Sandbox.run { sandbox in
            try await sandbox.addUser("ada")
            var token = try #require(try await sandbox.signIn("ada").refreshToken)
            for _ in 0..<4 { // day 80, 160, 240, 320
                try await sandbox.advanceClock(seconds: 80 * 86_400)
                token = try #require(try await sandbox.client.refresh(refreshToken: token, credentials: sandbox.app).refreshToken)
            }
            try await sandbox.advanceClock(seconds: 46 * 86_400) // day 366
            await expectAtlassianError(.oauth(.invalidGrant, description: "Token has been expired or revoked.", status: 403)) {
                try await sandbox.client.refresh(refreshToken: token, credentials: sandbox.app)
            }
        }
    }

    @Test("revoking a grant through the control API kills its tokens")
    func controlRevoke() async throws {
        try await Sandbox.run { sandbox in
            try await sandbox.addUser("ada")
            let tokens = try await sandbox.signIn("ada")
            let response = try await sandbox.control("/grants/revoke", ["clientId": sandbox.app.clientId, "accountId": "ada"])
            #expect(try response.json()["revoked"] as? Int == 1)
            await expectAtlassianError(.unauthorized) { try await sandbox.client.me(accessToken: tokens.accessToken) }
            let error = await atlassianError {
                try await sandbox.client.refresh(refreshToken: tokens.refreshToken!, credentials: sandbox.app)
            }
            guard case .oauth(.invalidGrant, _, _)? = error else {
                Issue.record("expected invalid_grant, got \(String(describing: error))")
                return
            }
        }
    }

    // MARK: Helpers

    static func code(_ sandbox: Sandbox, for accountId: String) async throws -> String {
        let url = sandbox.client.authorizeURL(
            clientId: sandbox.app.clientId, redirectURI: sandbox.app.redirectURI, scopes: Sandbox.scopes, state: "s")
        let answer = try await sandbox.authorize(URL(string: url.absoluteString + "&sandbox_user=\(accountId)")!)
        return try AtlassianClient.parseCallback(query: answer.location).code
    }

    static func encode(_ value: String) -> String {
        value.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? value
    }
}
