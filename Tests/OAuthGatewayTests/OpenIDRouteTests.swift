import Contracts
import Crypto
import Foundation
import JWTKit
import Testing
import TestSupport

@testable import oauth_gateway

/// The authorization endpoint's refusals and discovery, in-process: none of them reaches Atlassian.
@Suite("oauth-gateway OpenID Provider: discovery and authorization refusals, in-process")
struct OpenIDRouteTests {
    @Test("discovery names the endpoints, ES256, S256 and the iss response parameter")
    func discovery() async throws {
        try await GatewayRoutes.run { routes in
            let answer = try await routes.get("/.well-known/openid-configuration")
            #expect(answer.status == 200)
            let document = answer.json
            #expect(document["issuer"] as? String == "http://gateway.test")
            #expect(document["authorization_endpoint"] as? String == "http://gateway.test/oauth/authorize")
            #expect(document["token_endpoint"] as? String == "http://gateway.test/oauth/token")
            #expect(document["userinfo_endpoint"] as? String == "http://gateway.test/oauth/userinfo")
            #expect(document["jwks_uri"] as? String == "http://gateway.test/.well-known/jwks.json")
            #expect(document["response_types_supported"] as? [String] == ["code"])
            #expect(document["code_challenge_methods_supported"] as? [String] == ["S256"])
            #expect(document["id_token_signing_alg_values_supported"] as? [String] == ["ES256"])
            #expect(document["authorization_response_iss_parameter_supported"] as? Bool == true)
        }
    }

    @Test("no trusted redirect URI: 400, never a redirect; a bad request with one: sent back with error, state and iss")
    func authorizationRefusals() async throws {
        try await GatewayRoutes.run { routes in
            let acme = try await routes.createTenant("acme")
            let app = try await routes.send(
                .PUT, "/v1/tenants/acme/app", bearer: acme.token,
                json: ["clientId": "acme-app", "clientSecret": "acme-app-secret-1234"])
            #expect(app.status == 200)
            let redirect = FormFields.encode("https://tenant.example/return")
            let good = "response_type=code&scope=openid&client_id=acme&redirect_uri=\(redirect)&state=s%201"
            let started = try await routes.get("/oauth/authorize?\(good)")
            #expect(started.status == 302 && started.location?.hasPrefix("http://127.0.0.1:9/authorize?") == true)

            for (query, reason) in [
                ("response_type=code&scope=openid&redirect_uri=\(redirect)", "client_id is required"),
                ("response_type=code&scope=openid&client_id=acme", "redirect_uri is required"),
                ("response_type=code&scope=openid&client_id=nobody&redirect_uri=\(redirect)", "unknown client_id"),
                ("response_type=code&scope=openid&client_id=acme&redirect_uri=https%3A%2F%2Fevil.example%2F",
                 "redirect_uri is not one of the client's registered redirect URIs"),
            ] {
                let answer = try await routes.get("/oauth/authorize?\(query)")
                #expect(answer.status == 400 && answer.location == nil, "\(query)")
                #expect(answer.json["message"] as? String == reason)
            }

            let client = "client_id=acme&redirect_uri=\(redirect)&state=s%201"
            for (change, error) in [
                ("response_type=token&scope=openid", "unsupported_response_type"),
                ("scope=openid", "unsupported_response_type"),
                ("response_type=code&scope=profile+email", "invalid_scope"),
                ("response_type=code", "invalid_scope"),
                ("\(good)&code_challenge=\(String(repeating: "a", count: 43))", "invalid_request"),
                ("\(good)&code_challenge=\(String(repeating: "a", count: 43))&code_challenge_method=plain", "invalid_request"),
                ("\(good)&code_challenge=short&code_challenge_method=S256", "invalid_request"),
                ("\(good)&prompt=none", "login_required"),
                ("\(good)&request=eyJ", "request_not_supported"),
            ] {
                let answer = try await routes.get("/oauth/authorize?\(client)&\(change)")
                #expect(answer.status == 302, "\(change)")
                let back = GatewayHarness.query(of: try #require(answer.location))
                #expect(answer.location?.hasPrefix("https://tenant.example/return?") == true)
                #expect(back["error"] == error, "\(change)")
                #expect(back["state"] == "s 1" && back["iss"] == "http://gateway.test")
            }
        }
    }

    @Test("too many requests of one client: 429 with Retry-After at the authorization and token endpoints, others unaffected")
    func rateLimits() async throws {
        // One a minute, in bursts of one: nothing refills while the test runs, however slow the machine.
        try await GatewayRoutes.run(environment: ["GATEWAY_CLIENT_RATE_PER_MINUTE": "1"]) { routes in
            let acme = try await routes.createTenant("acme")  // its token request is acme's one at the token endpoint
            let authorize = "/oauth/authorize?response_type=code&scope=openid&client_id=acme"
                + "&redirect_uri=\(FormFields.encode("https://tenant.example/return"))"
            #expect(try await routes.get(authorize).status == 302)
            let limited = try await routes.get(authorize)
            #expect(limited.status == 429 && limited.json["error"] as? String == "too_many_requests")
            #expect(Int(limited.headers.first(name: "retry-after") ?? "") ?? 0 >= 1)
            // The sign-in API's start shares the client's authorization bucket.
            #expect(try await routes.get("/v1/tenants/acme/signin/atlassian?redirect_uri=x&state=s").status == 429)
            #expect(try await routes.get(authorize.replacingOccurrences(of: "acme", with: "globex")).status == 400)

            let tooMany = try await routes.token(
                form: "grant_type=client_credentials&client_id=acme&client_secret=\(acme.secret)")
            #expect(tooMany.status == 429 && tooMany.json["error"] as? String == "too_many_requests")
            #expect(tooMany.headers.first(name: "retry-after") != nil)
            #expect(try await routes.token(form: "grant_type=client_credentials&client_id=globex&client_secret=x").status == 401)
        }
    }

    @Test("""
        too many requests from one address: 429 across clients at the authorization endpoint, the sign-in start and the \
        callback, apart at the token endpoint; X-Forwarded-For counts only from a trusted proxy
        """)
    func ipRateLimits() async throws {
        // Over a real socket, so requests have a peer (127.0.0.1). Two a minute per address in bursts of one (a tenth,
        // at least one): nothing refills while the test runs. Clients have room to spare.
        let environment = ["GATEWAY_IP_RATE_PER_MINUTE": "2", "GATEWAY_CLIENT_RATE_PER_MINUTE": "1000"]
        try await GatewayRoutes.run(environment: environment, live: true) { routes in
            // Its token request is this address's one at the token endpoint. The other client need not exist: the
            // limits come before any check of the request.
            _ = try await routes.createTenant("acme")
            func authorize(_ client: String) -> String {
                "/oauth/authorize?response_type=code&scope=openid&client_id=\(client)"
                    + "&redirect_uri=\(FormFields.encode("https://tenant.example/return"))"
            }
            #expect(try await routes.get(authorize("acme")).status == 302)
            let limited = try await routes.get(authorize("globex"))  // another client, the same address
            #expect(limited.status == 429 && Int(limited.headers.first(name: "retry-after") ?? "") ?? 0 >= 1)
            #expect(try await routes.get("/v1/tenants/globex/signin/atlassian?redirect_uri=x&state=s").status == 429)
            #expect(try await routes.get(SignInRoutes.callbackPath + "?code=c&state=s").status == 429)
            let token = try await routes.token(form: "grant_type=client_credentials&client_id=globex&client_secret=x")
            #expect(token.status == 429 && token.json["error"] as? String == "too_many_requests")
            // A client cannot escape its address by naming another in X-Forwarded-For: no proxy is trusted here.
            let spoofed = try await routes.perform(
                .GET, authorize("globex"), headers: [("x-forwarded-for", "203.0.113.7")], body: nil)
            #expect(spoofed.status == 429)
        }
        // With the loopback trusted as a proxy, the forwarded address is the client: each has a budget of its own.
        let proxied = environment.merging(["GATEWAY_TRUSTED_PROXIES": "127.0.0.0/8, ::1"]) { $1 }
        try await GatewayRoutes.run(environment: proxied, live: true) { routes in
            _ = try await routes.createTenant("acme")
            let authorize = "/oauth/authorize?response_type=code&scope=openid&client_id=acme"
                + "&redirect_uri=\(FormFields.encode("https://tenant.example/return"))"
            for address in ["203.0.113.7", "203.0.113.8"] {
                let first = try await routes.perform(.GET, authorize, headers: [("x-forwarded-for", address)], body: nil)
                #expect(first.status == 302, "\(address)")
                let second = try await routes.perform(
                    .GET, authorize, headers: [("x-forwarded-for", "198.51.100.1, \(address)")], body: nil)
                #expect(second.status == 429, "\(address): the rightmost untrusted entry is the client")
            }
        }
    }

    @Test("sealed values: a code opens only for its client, a state keeps its OpenID request, PKCE S256 checks")
    func sealedValues() throws {
        let directory = try TemporaryDirectory("openid-seal")
        let database = try GatewayDatabase(
            path: directory.file("oauth-gateway.sqlite"), topics: LetheTopics(namespace: uniqueName("seal")))
        let box = try SecretBox(masterKey: SymmetricKey(size: .bits256).withUnsafeBytes { Data($0) }, database: database)
        let payload = SignInPayload(
            userId: "u1", accountId: "5b10ac8d82e05b22cc7d4ef5", appId: "acme-app", test: false,
            profile: .init(name: "Ada", email: "ada@example.com", nickname: nil, picture: nil, emailVerified: true))
        let request = OpenIDRequest(clientId: "acme", scopes: ["openid", "email"], nonce: "n-0S6_WzA2Mj", codeChallenge: nil)
        let code = SealedAuthorizationCode(
            connectionId: "c1", payload: payload, redirectURIHash: OneTimeValue.hash("https://a.example/"),
            request: request, authTime: Date(timeIntervalSince1970: 1_700_000_000),
            expiresAt: Date(timeIntervalSince1970: 1_700_000_060), nonce: SignInNonce.make())
        let sealed = try code.seal(with: box, clientId: "acme")
        #expect(SealedAuthorizationCode.open(sealed, clientId: "acme", with: box) == code)
        #expect(SealedAuthorizationCode.open(sealed, clientId: "globex", with: box) == nil)
        #expect(SealedSignInCode.open(sealed, tenantId: "acme", with: box) == nil)

        let state = SealedSignInState(
            tenantId: "acme", appId: "acme-app", returnURLHash: Data([1]), tenantState: "", expiresAt: Date(),
            nonce: SignInNonce.make(), openID: request)
        let reopened = SealedSignInState.open(try state.seal(with: box), with: box)
        #expect(reopened?.openID == request)

        // RFC 7636 Appendix B's example.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
        #expect(PKCE.verify(verifier: verifier, challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"))
        #expect(!PKCE.verify(verifier: verifier + "x", challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"))
    }
}
