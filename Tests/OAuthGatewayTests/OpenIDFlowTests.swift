import Contracts
import Crypto
import Foundation
import JWTKit
import Testing
import TestSupport

@testable import oauth_gateway

/// The whole code flow against the sandbox over HTTP, the way a relying party runs it: discovery, authorize with
/// PKCE and nonce, the token endpoint, the ID token checked against the JWKS alone, userinfo.
@Suite("oauth-gateway OpenID Provider: the code flow over HTTP against the sandbox, with the dev broker")
struct OpenIDFlowTests {
    static let returnURL = "https://tenant.example/return"
    static let account = "5b10ac8d82e05b22cc7d4ef5"

    /// A PKCE pair (RFC 7636 §4.1, §4.2).
    static func pkce() -> (verifier: String, challenge: String) {
        let verifier = Base64URL.encode(SymmetricKey(size: .bits256).withUnsafeBytes { Data($0) })
        return (verifier, Base64URL.encode(Data(SHA256.hash(data: Data(verifier.utf8)))))
    }

    /// Browser hops from the authorization request to the client's redirect URI; returns that URI's query.
    static func authorize(_ harness: GatewayHarness, query: String, accountId: String = account) async throws
        -> [String: String]
    {
        let start = try await harness.get("/oauth/authorize?\(query)")
        guard start.status == 302, let authorize = start.location else {
            throw HarnessError(description: "authorize: \(start.status) \(start.body)")
        }
        let consent = try await harness.get(authorize + "&sandbox_user=\(accountId)")
        guard consent.status == 302, let callback = consent.location else {
            throw HarnessError(description: "sandbox authorize: \(consent.status) \(consent.body)")
        }
        let back = try await harness.get(callback)
        guard back.status == 302, let location = back.location, location.hasPrefix(returnURL) else {
            throw HarnessError(description: "callback: \(back.status) \(back.body)")
        }
        return GatewayHarness.query(of: location)
    }

    static func setUp(_ harness: GatewayHarness) async throws -> TestTenant {
        let acme = try await harness.createTenant("acme", returnURL: returnURL)
        try await harness.ownApp(acme, clientId: "acme-app", secret: "acme-app-secret-1234")
        try await harness.sandboxUser(account, name: "Ada Lovelace", email: "ada@example.com")
        return acme
    }

    static func codeRequest(scope: String = "openid+profile+email", challenge: String?, nonce: String? = "n-0S6_WzA2Mj")
        -> String
    {
        var query = "response_type=code&client_id=acme&redirect_uri=\(FormFields.encode(returnURL))&scope=\(scope)"
            + "&state=af0ifjsldkj"
        if let nonce { query += "&nonce=\(nonce)" }
        if let challenge { query += "&code_challenge=\(challenge)&code_challenge_method=S256" }
        return query
    }

    static func basic(_ tenant: TestTenant) -> [(String, String)] {
        [("authorization", "Basic " + Data("\(tenant.id):\(tenant.secret)".utf8).base64EncodedString())]
    }

    @Test("code flow with PKCE and nonce: iss in the response, ID token verified from discovery + JWKS, userinfo")
    func codeFlow() async throws {
        try await GatewayHarness.run { harness, _ in
            let acme = try await Self.setUp(harness)
            let (verifier, challenge) = Self.pkce()
            let back = try await Self.authorize(harness, query: Self.codeRequest(challenge: challenge))
            #expect(back["state"] == "af0ifjsldkj" && back["iss"] == harness.gatewayURL)
            let code = try #require(back["code"])

            let answer = try await harness.token(
                form: "grant_type=authorization_code&code=\(code)&redirect_uri=\(FormFields.encode(Self.returnURL))"
                    + "&code_verifier=\(verifier)",
                headers: Self.basic(acme))
            #expect(answer.status == 200, "\(answer.body)")
            #expect(answer.headers.first(name: "cache-control") == "no-store")
            let accessToken = try #require(answer.json["access_token"] as? String)
            #expect(answer.json["token_type"] as? String == "Bearer" && answer.json["scope"] as? String == "openid profile email")

            // A relying party knows only the issuer: discovery, then the JWKS it names.
            let discovery = try await harness.get("/.well-known/openid-configuration").json
            #expect(discovery["issuer"] as? String == harness.gatewayURL)
            let jwks = try await harness.get(try #require(discovery["jwks_uri"] as? String))
            let keys = JWTKeyCollection()
            try await keys.add(jwksJSON: jwks.body)
            let claims = try await keys.verify(try #require(answer.json["id_token"] as? String), as: OpenIDTokenClaims.self)
            #expect(claims.iss.value == harness.gatewayURL && claims.aud.value == ["acme"])
            #expect(claims.nonce == "n-0S6_WzA2Mj" && claims.atHash == Gateway.atHash(accessToken))
            #expect(abs(Double(claims.authTime) - Date().timeIntervalSince1970) < 60)
            #expect(claims.claims.email == "ada@example.com" && claims.claims.emailVerified == true)
            #expect(claims.claims.name == "Ada Lovelace" && claims.claims.atlassianAccountId == Self.account)

            let info = try await harness.get("/oauth/userinfo", bearer: accessToken)
            #expect(info.status == 200)
            #expect(info.json["sub"] as? String == claims.sub.value && info.json["email"] as? String == "ada@example.com")
            #expect(info.json["email_verified"] as? Bool == true && info.json["name"] as? String == "Ada Lovelace")

            // The same user through the gateway's own sign-in API is the same `sub`.
            let exchanged = try await harness.signInAndExchange(acme, accountId: Self.account)
            #expect(exchanged["userId"] as? String == claims.sub.value)
        }
    }

    @Test("refusals: wrong or missing verifier, foreign redirect, another client, a replayed code revokes its token")
    func tokenRefusals() async throws {
        try await GatewayHarness.run { harness, _ in
            let acme = try await Self.setUp(harness)
            let globex = try await harness.createTenant("globex", returnURL: Self.returnURL)
            let redirect = "&redirect_uri=\(FormFields.encode(Self.returnURL))"
            func error(_ answer: HTTPAnswer) -> String? { answer.json["error"] as? String }

            let (verifier, challenge) = Self.pkce()
            let code = try #require(try await Self.authorize(harness, query: Self.codeRequest(challenge: challenge))["code"])
            let grant = "grant_type=authorization_code&code=\(code)"
            for (form, headers, expected) in [
                (grant + redirect + "&code_verifier=\(Self.pkce().verifier)", Self.basic(acme), "invalid_grant"),
                (grant + redirect, Self.basic(acme), "invalid_grant"),
                (grant + "&redirect_uri=https%3A%2F%2Fother.example%2F&code_verifier=\(verifier)", Self.basic(acme),
                 "invalid_grant"),
                (grant + redirect + "&code_verifier=\(verifier)", Self.basic(globex), "invalid_grant"),
                (grant + redirect + "&code_verifier=\(verifier)",
                 [("authorization", "Basic " + Data("acme:wrong".utf8).base64EncodedString())], "invalid_client"),
            ] {
                let answer = try await harness.token(form: form, headers: headers)
                #expect(error(answer) == expected, "\(form)")
            }
            // None of those used the code up: the right request still works, with client_secret_post.
            let first = try await harness.token(
                form: grant + redirect + "&code_verifier=\(verifier)&client_id=acme&client_secret=\(acme.secret)")
            #expect(first.status == 200, "\(first.body)")
            let accessToken = try #require(first.json["access_token"] as? String)
            #expect(try await harness.get("/oauth/userinfo", bearer: accessToken).status == 200)

            let replay = try await harness.token(form: grant + redirect + "&code_verifier=\(verifier)", headers: Self.basic(acme))
            #expect(error(replay) == "invalid_grant" && replay.json["error_description"] as? String == "authorization code already used")
            let revoked = try await harness.get("/oauth/userinfo", bearer: accessToken)
            #expect(revoked.status == 401 && revoked.headers.first(name: "www-authenticate")?.contains("invalid_token") == true)

            // Without PKCE (a confidential client may omit it), a verifier is refused; scope openid alone grants no
            // profile or email claims.
            let bare = try #require(try await Self.authorize(
                harness, query: Self.codeRequest(scope: "openid", challenge: nil, nonce: nil))["code"])
            let withVerifier = try await harness.token(
                form: "grant_type=authorization_code&code=\(bare)\(redirect)&code_verifier=\(verifier)", headers: Self.basic(acme))
            #expect(error(withVerifier) == "invalid_grant")
            let plain = try await harness.token(form: "grant_type=authorization_code&code=\(bare)\(redirect)", headers: Self.basic(acme))
            #expect(plain.status == 200)
            let info = try await harness.get("/oauth/userinfo", bearer: try #require(plain.json["access_token"] as? String))
            #expect(info.status == 200 && info.json["email"] == nil && info.json["name"] == nil && info.json["sub"] != nil)
            #expect(try await harness.get("/oauth/userinfo", bearer: "not-a-token").status == 401)
        }
    }

    @Test("a disabled tenant: no sign-in (new or in flight), no token, its tokens refused; enabled again they work; a replaced secret stops the old one at once")
    func disabledTenantAndReplacedSecret() async throws {
        try await GatewayHarness.run { harness, _ in
            let acme = try await Self.setUp(harness)
            let admin = GatewayHarness.adminToken
            let redirect = "&redirect_uri=\(FormFields.encode(Self.returnURL))"
            let (verifier, challenge) = Self.pkce()
            let code = try #require(try await Self.authorize(harness, query: Self.codeRequest(challenge: challenge))["code"])
            let granted = try await harness.token(
                form: "grant_type=authorization_code&code=\(code)\(redirect)&code_verifier=\(verifier)", headers: Self.basic(acme))
            let accessToken = try #require(granted.json["access_token"] as? String)
            // A sign-in in flight: the user is at Atlassian's consent when the tenant is disabled.
            let start = try await harness.get("/oauth/authorize?\(Self.codeRequest(challenge: challenge))")
            let consent = try await harness.get(try #require(start.location) + "&sandbox_user=\(Self.account)")
            let callbackURL = try #require(consent.location)
            let exchangesBefore = try await harness.tokenCalls("acme-app").exchanges

            let disabled = try await harness.send(.POST, "/v1/tenants/acme/disable", bearer: admin, json: [:])
            #expect(disabled.status == 200 && disabled.json["disabled"] as? Bool == true)
            let callback = try await harness.get(callbackURL)
            let back = GatewayHarness.query(of: try #require(callback.location))
            #expect(back["error"] == "access_denied" && back["code"] == nil && back["iss"] == harness.gatewayURL)
            #expect(try await harness.tokenCalls("acme-app").exchanges == exchangesBefore, "no code exchanged at Atlassian")
            let refused = try await harness.get("/oauth/authorize?\(Self.codeRequest(challenge: challenge))")
            #expect(GatewayHarness.query(of: try #require(refused.location))["error"] == "unauthorized_client")
            let customStart = try await harness.get(
                "/v1/tenants/acme/signin/atlassian?redirect_uri=\(FormFields.encode(Self.returnURL))&state=s")
            #expect(customStart.status == 403)
            let credentials = try await harness.token(
                form: "grant_type=client_credentials&client_id=acme&client_secret=\(acme.secret)")
            #expect(credentials.status == 401 && credentials.json["error"] as? String == "invalid_client")
            #expect(try await harness.get("/oauth/userinfo", bearer: accessToken).status == 401)
            #expect(try await harness.get("/v1/tenants/acme", bearer: acme.token).status == 401)

            let enabled = try await harness.send(.POST, "/v1/tenants/acme/enable", bearer: admin, json: [:])
            #expect(enabled.status == 200 && enabled.json["disabled"] as? Bool == false)
            #expect(try await harness.get("/oauth/userinfo", bearer: accessToken).status == 200)
            #expect(try await harness.get("/v1/tenants/acme", bearer: acme.token).status == 200)
            #expect(try await harness.send(.POST, "/v1/tenants/nobody/disable", bearer: admin, json: [:]).status == 404)

            // A replaced secret: the old one is refused at once; tokens issued before live out their short lifetime.
            let replaced = try await harness.send(.POST, "/v1/tenants/acme/credentials", bearer: admin, json: [:])
            let secret = try #require(replaced.json["clientSecret"] as? String)
            let old = try await harness.token(form: "grant_type=client_credentials&client_id=acme&client_secret=\(acme.secret)")
            #expect(old.status == 401)
            #expect(try await harness.token(form: "grant_type=client_credentials&client_id=acme&client_secret=\(secret)").status == 200)
            #expect(try await harness.get("/oauth/userinfo", bearer: accessToken).status == 200)
        }
    }

    @Test("a public client: no secret, PKCE required at authorize and token, its own redirect URIs, aud is its id; deleted, it is unknown")
    func publicClient() async throws {
        try await GatewayHarness.run { harness, _ in
            let acme = try await Self.setUp(harness)
            let appURL = "https://app.acme.example/callback"
            let created = try await harness.send(
                .POST, "/v1/tenants/acme/public-clients", bearer: acme.token, json: ["redirectUris": [appURL]])
            #expect(created.status == 201, "\(created.body)")
            let clientId = try #require(created.json["clientId"] as? String)
            #expect(clientId.hasPrefix("acme.pub-"))
            #expect(try await harness.send(
                .POST, "/v1/tenants/acme/public-clients", bearer: acme.token, json: ["redirectUris": ["not a url"]]).status == 400)

            let base = "response_type=code&client_id=\(clientId)&scope=openid+email&state=st"
            // Without PKCE: refused at the client's redirect URI; the tenant's return URL is not this client's.
            let noPKCE = try await harness.get("/oauth/authorize?\(base)&redirect_uri=\(FormFields.encode(appURL))")
            #expect(GatewayHarness.query(of: try #require(noPKCE.location))["error"] == "invalid_request")
            let (verifier, challenge) = Self.pkce()
            let pkce = "&code_challenge=\(challenge)&code_challenge_method=S256"
            let tenantReturn = try await harness.get(
                "/oauth/authorize?\(base)\(pkce)&redirect_uri=\(FormFields.encode(Self.returnURL))")
            #expect(tenantReturn.status == 400)

            // The browser's hops end at the app's own redirect URI.
            let start = try await harness.get("/oauth/authorize?\(base)\(pkce)&redirect_uri=\(FormFields.encode(appURL))")
            let consent = try await harness.get(try #require(start.location) + "&sandbox_user=\(Self.account)")
            let back = try await harness.get(try #require(consent.location))
            let location = try #require(back.location)
            #expect(location.hasPrefix(appURL + "?"), "\(location)")
            let code = try #require(GatewayHarness.query(of: location)["code"])
            let grant = "grant_type=authorization_code&code=\(code)&redirect_uri=\(FormFields.encode(appURL))&client_id=\(clientId)"
            #expect(try await harness.token(form: grant).json["error"] as? String == "invalid_grant")
            #expect(try await harness.token(form: grant + "&code_verifier=\(verifier)&client_secret=x").status == 401)
            let tokens = try await harness.token(form: grant + "&code_verifier=\(verifier)")
            #expect(tokens.status == 200, "\(tokens.body)")
            let jwks = JWTKeyCollection()
            try await jwks.add(jwksJSON: try await harness.get("/.well-known/jwks.json").body)
            let claims = try await jwks.verify(try #require(tokens.json["id_token"] as? String), as: OpenIDTokenClaims.self)
            #expect(claims.aud.value == [clientId] && claims.claims.email == "ada@example.com")
            let info = try await harness.get("/oauth/userinfo", bearer: try #require(tokens.json["access_token"] as? String))
            #expect(info.status == 200 && info.json["sub"] as? String == claims.sub.value)
            let credentials = try await harness.token(form: "grant_type=client_credentials&client_id=\(clientId)")
            #expect(credentials.json["error"] as? String == "unauthorized_client")

            let list = try await harness.get("/v1/tenants/acme/public-clients", bearer: acme.token)
            #expect((list.json["clients"] as? [[String: Any]])?.compactMap { $0["clientId"] as? String } == [clientId])
            #expect(try await harness.perform(
                .DELETE, "/v1/tenants/acme/public-clients/\(clientId)", headers: [("authorization", "Bearer \(acme.token)")],
                body: nil).status == 204)
            let gone = try await harness.get("/oauth/authorize?\(base)\(pkce)&redirect_uri=\(FormFields.encode(appURL))")
            #expect(gone.status == 400 && gone.location == nil)
        }
    }
}
