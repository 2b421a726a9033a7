import AsyncHTTPClient
import AtlassianClient
import Contracts
import Foundation
import JWTKit
import Messaging
import ServiceKit
import Testing
import TestSupport

@testable import oauth_gateway

@Suite("oauth-gateway sign-in, over HTTP against the sandbox, with the dev broker")
struct SignInTests {
    @Test("BYO and shared-app sign-in: ID token verifies against the JWKS, profiles and tenant settings are published")
    func signInBothKindsOfApp() async throws {
        try await GatewayHarness.run { harness, _ in
            let acme = try await harness.createTenant("acme", policy: "delete")
            let globex = try await harness.createTenant("globex", policy: "scrub")
            try await harness.ownApp(acme, clientId: "acme-app", secret: "acme-app-secret-1234")
            try await harness.sandboxApp(GatewayHarness.sharedAppId, secret: GatewayHarness.sharedAppSecret)
            try await harness.sharedApp(globex)
            try await harness.sandboxUser("5b10ac8d82e05b22cc7d4ef5", name: "Ada Lovelace", email: "ada@example.com")
            try await harness.sandboxUser("5b10ac8d82e05b22cc7d4ef6", name: "Grace Hopper", email: "grace@example.com")

            let ada = try await harness.signInAndExchange(acme, accountId: "5b10ac8d82e05b22cc7d4ef5")
            let grace = try await harness.signInAndExchange(globex, accountId: "5b10ac8d82e05b22cc7d4ef6")
            #expect(ada["accountId"] as? String == "5b10ac8d82e05b22cc7d4ef5")
            #expect(ada["appId"] as? String == "acme-app" && ada["test"] as? Bool == false)
            #expect((ada["profile"] as? [String: Any])?["email"] as? String == "ada@example.com")
            #expect(grace["appId"] as? String == GatewayHarness.sharedAppId && grace["test"] as? Bool == true)

            // The ID token verifies with jwt-kit against the keys fetched from the gateway's JWKS over HTTP.
            let jwks = try await harness.get("/.well-known/jwks.json")
            let keys = JWTKeyCollection()
            try await keys.add(jwksJSON: jwks.body)
            let claims = try await keys.verify(try #require(ada["idToken"] as? String), as: IDTokenClaims.self)
            #expect(claims.aud.value == ["acme"] && claims.iss.value == harness.gatewayURL)
            #expect(claims.sub.value == ada["userId"] as? String)
            #expect(claims.atlassianAccountId == "5b10ac8d82e05b22cc7d4ef5" && claims.name == "Ada Lovelace")
            #expect(claims.exp.value.timeIntervalSinceNow > 500)

            // Every other service verifies tenant tokens this way.
            let verifier = TenantTokenVerifier(
                config: TenantAuthConfig(
                    jwksURL: URL(string: harness.gatewayURL + "/.well-known/jwks.json")!, issuer: harness.gatewayURL),
                httpClient: harness.http, logger: makeTestLogger("auth"))
            #expect(try await verifier.verify(acme.token).tenantId == "acme")
            // An ID token is not a tenant token: its audience is the tenant, not lethe.
            await #expect(throws: TenantAuthError.self) { try await verifier.verify(grace["idToken"] as! String) }

            let profiles = try await readUntil(harness.kafka, topic: harness.topics.profiles) { $0.count >= 2 }
                .map { try $0.decodeEvent(ProfileFetched.self) }
            #expect(Set(profiles.map(\.tenantId)) == ["acme", "globex"])
            #expect(profiles.first { $0.tenantId == "globex" }?.appId == GatewayHarness.sharedAppId)
            #expect(profiles.first { $0.tenantId == "acme" }?.name == "Ada Lovelace")
            // Filed under the user the ID token names.
            #expect(profiles.first { $0.tenantId == "acme" }?.userId == claims.sub.value)
            #expect(profiles.first { $0.tenantId == "globex" }?.userId == grace["userId"] as? String)
            let tenants = try await readUntil(harness.kafka, topic: harness.topics.tenants) { messages in
                let events = messages.compactMap { try? $0.decodeEvent(TenantConfigured.self) }
                return events.contains { $0.tenantId == "globex" && $0.apps.first?.shared == true && $0.erasurePolicy == .scrub }
                    && events.contains { $0.tenantId == "acme" && $0.apps.first?.appId == "acme-app" }
            }
            #expect(!tenants.isEmpty)
            #expect(try await harness.tokenCalls("acme-app").exchanges == 1)
        }
    }

    @Test("forged, missing, expired and replayed states, bad return URLs and reused or foreign codes: no token exchange")
    func attacksAreRefused() async throws {
        try await GatewayHarness.run { harness, parts in
            let acme = try await harness.createTenant("acme")
            let other = try await harness.createTenant("other")
            try await harness.ownApp(acme, clientId: "acme-app", secret: "acme-app-secret-1234")
            try await harness.sandboxUser("5b10ac8d82e05b22cc7d4ef5", name: "Ada Lovelace", email: "ada@example.com")
            let returnURL = FormFields.encode("https://tenant.example/return")

            // Start: an unlisted return URL, a missing state, an unknown tenant — no redirect anywhere.
            try await Self.expectTheStartRefused(harness, returnURL: returnURL)

            // Callback: forged, missing and expired states.
            let callback = try await harness.callbackURL(tenant: "acme", accountId: "5b10ac8d82e05b22cc7d4ef5")
            try await Self.expectBadStatesRefused(harness, parts: parts, callback: callback)
            #expect(try await harness.tokenCalls("acme-app").exchanges == 0)

            // The real callback works once; replaying it is refused before any exchange.
            let first = try await harness.get(callback)
            #expect(first.status == 302)
            let back = GatewayHarness.query(of: try #require(first.location))
            #expect(first.location!.hasPrefix("https://tenant.example/return?") && back["state"] == "tenant-state-1")
            #expect(try await harness.get(callback).status == 400)
            #expect(try await harness.tokenCalls("acme-app").exchanges == 1)

            // The sign-in code: another tenant cannot use it (and does not burn it); it works once for its tenant.
            let signInCode = try #require(back["code"])
            try await Self.expectTheCodeWorksOnceForItsTenant(harness, code: signInCode, tenant: acme, other: other)

            // The user declines: the tenant hears access_denied with its state; nothing is exchanged.
            _ = try await harness.send(.POST, harness.sandboxURL + "/_sandbox/consent", bearer: nil, json: ["decision": "deny"])
            let startDenied = try await harness.get("/v1/tenants/acme/signin/atlassian?redirect_uri=\(returnURL)&state=s2")
            let authorize = try await harness.get(try #require(startDenied.location))
            let denied = try await harness.get(try #require(authorize.location))
            let deniedQuery = GatewayHarness.query(of: try #require(denied.location))
            #expect(deniedQuery["error"] == "access_denied" && deniedQuery["state"] == "s2" && deniedQuery["code"] == nil)
            #expect(try await harness.tokenCalls("acme-app").exchanges == 1)
        }
    }

    @Test("""
        every app's sign-in asks for read:me, offline_access and report:personal-data, whatever the tenant named; \
        other scopes only those the operator allows the tenant, at registration and at every sign-in
        """)
    func requiredScopes() async throws {
        try await GatewayHarness.run { harness, _ in
            let acme = try await harness.createTenant("acme")
            try await harness.sandboxApp("acme-app", secret: "acme-app-secret-1234")
            // The scopes older set-up docs told tenants to name: the gateway adds report:personal-data to them. A scope
            // beyond the required ones only once the operator allows it to the tenant.
            let app = [
                "clientId": "acme-app", "clientSecret": "acme-app-secret-1234", "callbackUrl": harness.callbackURL,
                "scopes": ["read:me", "offline_access", "read:jira-work"],
            ] as [String: Any]
            let notAllowed = try await harness.send(.PUT, "/v1/tenants/acme/app", bearer: acme.token, json: app)
            #expect(notAllowed.status == 400 && notAllowed.body.contains("read:jira-work"), "\(notAllowed.body)")
            let allowed = try await harness.send(
                .PUT, "/v1/tenants/acme/allowed-scopes", bearer: GatewayHarness.adminToken,
                json: ["scopes": ["read:jira-work", "read:jira-work"]])
            #expect(allowed.status == 200 && allowed.json["allowedScopes"] as? [String] == ["read:jira-work"])
            #expect(try await harness.send(
                .PUT, "/v1/tenants/acme/allowed-scopes", bearer: acme.token, json: ["scopes": []]).status == 401)
            #expect(try await harness.send(
                .PUT, "/v1/tenants/nobody/allowed-scopes", bearer: GatewayHarness.adminToken, json: ["scopes": []])
                .status == 404)
            let registered = try await harness.send(.PUT, "/v1/tenants/acme/app", bearer: acme.token, json: app)
            #expect(registered.status == 200)
            let view = try #require(registered.json["app"] as? [String: Any])
            #expect(view["scopes"] as? [String] == ["read:me", "offline_access", "report:personal-data", "read:jira-work"])
            let badScopes = try await harness.send(
                .PUT, "/v1/tenants/acme/app", bearer: acme.token,
                json: ["clientId": "acme-app", "clientSecret": "acme-app-secret-1234", "scopes": ["read me"]])
            #expect(badScopes.status == 400)

            let start = try await harness.get("/v1/tenants/acme/signin/atlassian?redirect_uri="
                + FormFields.encode("https://tenant.example/return") + "&state=s")
            let authorize = try #require(start.location)
            let scope = try #require(GatewayHarness.query(of: authorize)["scope"])
            #expect(scope.split(separator: " ").map(String.init)
                == ["read:me", "offline_access", "report:personal-data", "read:jira-work"])

            // Withdrawn by the operator: the next sign-in no longer asks for it, though the app still names it.
            _ = try await harness.send(
                .PUT, "/v1/tenants/acme/allowed-scopes", bearer: GatewayHarness.adminToken, json: ["scopes": []])
            let restart = try await harness.get("/v1/tenants/acme/signin/atlassian?redirect_uri="
                + FormFields.encode("https://tenant.example/return") + "&state=s")
            let restartLocation = try #require(restart.location)
            let narrowed = try #require(GatewayHarness.query(of: restartLocation)["scope"])
            #expect(narrowed == "read:me offline_access report:personal-data")
        }
    }

    @Test("queries are form-encoded: a state with a space, a + and a % survives byte for byte; a denial's description reaches the tenant")
    func formEncodedQueries() async throws {
        try await GatewayHarness.run { harness, _ in
            let acme = try await harness.createTenant("acme")
            try await harness.ownApp(acme, clientId: "acme-app", secret: "acme-app-secret-1234")
            try await harness.sandboxUser("5b10ac8d82e05b22cc7d4ef5", name: "Ada Lovelace", email: "ada@example.com")
            let returnURL = FormFields.encode("https://tenant.example/return")

            // The tenant's state `a b+c%d`, form-encoded as Python's urlencode writes it (issue 21).
            let start = try await harness.get(
                "/v1/tenants/acme/signin/atlassian?redirect_uri=\(returnURL)&state=a+b%2Bc%25d")
            let authorize = try #require(start.location)
            let consent = try await harness.get(authorize + "&sandbox_user=5b10ac8d82e05b22cc7d4ef5")
            let back = try await harness.get(try #require(consent.location))
            let location = try #require(back.location)
            #expect(location.contains("state=a%20b%2Bc%25d"))
            #expect(GatewayHarness.query(of: location)["state"] == "a b+c%d")
            #expect(GatewayHarness.query(of: location)["code"] != nil)

            // Atlassian's denial with a form-encoded description: the tenant gets the same text, and its state.
            let denyStart = try await harness.get(
                "/v1/tenants/acme/signin/atlassian?redirect_uri=\(returnURL)&state=s+2")
            let denyAuthorize = try #require(denyStart.location)
            let sealedState = try #require(GatewayHarness.query(of: denyAuthorize)["state"])
            let denied = try await harness.get(
                SignInRoutes.callbackPath + "?error=access_denied&error_description=User+denied+access"
                    + "&state=\(FormFields.encode(sealedState))")
            let deniedQuery = GatewayHarness.query(of: try #require(denied.location))
            #expect(deniedQuery["error"] == "access_denied")
            #expect(deniedQuery["error_description"] == "User denied access")
            #expect(deniedQuery["state"] == "s 2")
            #expect(try await harness.tokenCalls("acme-app").exchanges == 1)

            // Atlassian's /me answers 503 after the consent: the tenant hears temporarily_unavailable (the user may
            // try again), not server_error.
            let fault = try await harness.send(
                .POST, harness.sandboxURL + "/_sandbox/faults", bearer: nil,
                json: ["endpoint": "me", "clientId": "acme-app", "script": [["kind": "503"]]])
            #expect(fault.status == 200, "\(fault.body)")
            let busyStart = try await harness.get("/v1/tenants/acme/signin/atlassian?redirect_uri=\(returnURL)&state=s3")
            let busyConsent = try await harness.get(
                try #require(busyStart.location) + "&sandbox_user=5b10ac8d82e05b22cc7d4ef5")
            let busy = try await harness.get(try #require(busyConsent.location))
            let busyQuery = GatewayHarness.query(of: try #require(busy.location))
            #expect(busyQuery["error"] == "temporarily_unavailable" && busyQuery["state"] == "s3", "\(busyQuery)")
            #expect(busyQuery["code"] == nil)
        }
    }

    @Test("a grant without read:me (403 from /me) reaches the tenant as access_denied, Atlassian down as temporarily_unavailable")
    func signInFailuresTellTheTenantWhatToDo() {
        func error(_ failure: any Error) -> String? { Gateway.signInFailure(failure).first { $0.0 == "error" }?.1 }
        #expect(error(AtlassianError.forbidden) == "access_denied")
        #expect(error(AtlassianError.server(status: 503)) == "temporarily_unavailable")
        #expect(error(AtlassianError.rateLimited(retryAfter: nil)) == "temporarily_unavailable")
        #expect(error(AtlassianError.transport("refused")) == "temporarily_unavailable")
        #expect(error(AtlassianError.unexpectedResponse(status: 418, reason: "x")) == "server_error")
    }

    @Test("a callback sent 8 times at once completes once; a state whose return URL was removed meanwhile is refused")
    func concurrentReplayAndRemovedReturnURL() async throws {
        try await GatewayHarness.run { harness, _ in
            let acme = try await harness.createTenant("acme")
            try await harness.ownApp(acme, clientId: "acme-app", secret: "acme-app-secret-1234")
            try await harness.sandboxUser("5b10ac8d82e05b22cc7d4ef5", name: "Ada Lovelace", email: "ada@example.com")

            // The state's use is recorded when the sign-in completes; until then, the same state in flight is refused.
            let callback = try await harness.callbackURL(tenant: "acme", accountId: "5b10ac8d82e05b22cc7d4ef5")
            let answers = try await withThrowingTaskGroup(of: HTTPAnswer.self) { group in
                for _ in 0..<8 { group.addTask { try await harness.get(callback) } }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(answers.filter { $0.status == 302 }.count == 1)
            #expect(answers.filter { $0.status == 400 && $0.location == nil }.count == 7)
            #expect(try await harness.tokenCalls("acme-app").exchanges == 1)

            // A sign-in started towards a return URL the tenant then removes does not go back there.
            let pending = try await harness.callbackURL(tenant: "acme", accountId: "5b10ac8d82e05b22cc7d4ef5")
            let settings = try await harness.send(
                .PUT, "/v1/tenants/acme/settings", bearer: acme.token,
                json: ["returnUrls": ["https://tenant.example/new"]])
            #expect(settings.status == 200)
            let refused = try await harness.get(pending)
            #expect(refused.status == 400 && refused.location == nil)
            #expect(try await harness.tokenCalls("acme-app").exchanges == 1)
        }
    }

    @Test("signing keys persist across restarts and rotate: tokens signed before a rotation still verify")
    func signingKeysPersistAndRotate() async throws {
        try await GatewayHarness.run { harness, _ in
            let acme = try await harness.createTenant("acme")
            let before = try await harness.get("/.well-known/jwks.json").body
            let rotated = try await harness.send(.POST, "/v1/signing-keys/rotate", bearer: GatewayHarness.adminToken, json: [:])
            let kid = try #require(rotated.json["kid"] as? String)
            let after = try await harness.get("/.well-known/jwks.json")
            let keys = try #require(after.json["keys"] as? [[String: Any]])
            #expect(keys.count == 2 && keys.contains { $0["kid"] as? String == kid })
            // The old token (old key) still opens the tenant API; a new one carries the new kid.
            #expect(try await harness.get("/v1/tenants/acme", bearer: acme.token).status == 200)
            let fresh = try await harness.tenantToken("acme", secret: acme.secret)
            let header = try #require(Data(base64Encoded: Self.padded(String(fresh.split(separator: ".")[0]))))
            #expect(String(decoding: header, as: UTF8.self).contains(kid))
            #expect(!before.contains(kid))
            return ()
        }
        // A restart with the same master key serves the same keys; another master key is refused with a clear error.
        try await GatewayHarness.setUp { harness in
            let first = try await harness.withGateway { _ in try await harness.get("/.well-known/jwks.json").body }
            let second = try await harness.withGateway { _ in try await harness.get("/.well-known/jwks.json").body }
            #expect(first == second && first.contains("\"kid\""))
            let wrongKey = Data(repeating: 7, count: 32).base64EncodedString()
            await #expect(throws: SecretBox.WrongMasterKey.self) {
                try await harness.withGateway(environment: ["LETHE_MASTER_KEY": wrongKey]) { _ in }
            }
        }
    }

    @Test("a process a test starts while a gateway runs does not inherit its listening socket: a restart on the same port works while that process lives")
    func childProcessesDoNotKeepTheGatewayPort() async throws {
        try await GatewayHarness.setUp { harness in
            // As when another test starts a sandbox or the dev broker while this gateway listens.
            let child = try await harness.withGateway { _ in
                try ChildProcess.spawn("/bin/sleep", arguments: ["60"], stdoutPath: "/dev/null")
            }
            let status = try await harness.withGateway { _ in try await harness.get("/.well-known/jwks.json").status }
            #expect(child.terminationStatus == nil, "the child ended before the restart; the test proves nothing")
            await child.stop()
            #expect(status == 200)
        }
    }

    @Test("configuration: the master key, tokens and the shared app are validated at start")
    func configurationIsValidated() throws {
        let base = [
            "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092", "LETHE_DATA_DIR": FileManager.default.temporaryDirectory.path,
            "LETHE_ADMIN_TOKEN": GatewayHarness.adminToken, "LETHE_INTERNAL_TOKEN": GatewayHarness.internalToken,
            "LETHE_MASTER_KEY": Data(repeating: 1, count: 32).base64EncodedString(),
        ]
        let config = try OAuthGatewayConfig(reader: ConfigReader(environment: base))
        #expect(config.issuer == "http://127.0.0.1:8080" && config.sharedApp == nil && config.tenantTokenLifetime == 900)
        func failure(_ change: [String: String?]) -> String? {
            var environment = base
            for (name, value) in change { environment[name] = value }
            do {
                _ = try OAuthGatewayConfig(reader: ConfigReader(environment: environment))
                return nil
            } catch let error as ConfigError {
                return error.variable
            } catch {
                return "\(error)"
            }
        }
        #expect(failure(["LETHE_MASTER_KEY": nil]) == "LETHE_MASTER_KEY")
        #expect(failure(["LETHE_MASTER_KEY": "c2hvcnQ="]) == "LETHE_MASTER_KEY")
        #expect(failure(["LETHE_INTERNAL_TOKEN": nil]) == "LETHE_INTERNAL_TOKEN")
        #expect(failure(["LETHE_ADMIN_TOKEN": "short"]) == "LETHE_ADMIN_TOKEN")
        // compose/.env.example's placeholders, copied without replacing them, refuse to start.
        #expect(failure(["LETHE_ADMIN_TOKEN": "change-me-admin-token-0123456789abcdef"]) == "LETHE_ADMIN_TOKEN")
        #expect(failure(["LETHE_INTERNAL_TOKEN": "CHANGEME0123456789abcdef"]) == "LETHE_INTERNAL_TOKEN")
        #expect(failure(["LETHE_SHARED_APP_CLIENT_ID": "app"]) == "LETHE_SHARED_APP_CLIENT_SECRET")
        #expect(failure(["GATEWAY_TENANT_TOKEN_SECONDS": "5"]) == "GATEWAY_TENANT_TOKEN_SECONDS")
        let shared = try OAuthGatewayConfig(reader: ConfigReader(environment: base.merging([
            "LETHE_SHARED_APP_CLIENT_ID": "app", "LETHE_SHARED_APP_CLIENT_SECRET": "secret",
            "LETHE_GATEWAY_URL": "https://auth.example.com/",
        ]) { $1 }))
        #expect(shared.sharedApp?.callbackURL == "https://auth.example.com/v1/signin/atlassian/callback")
        // A description of the config never shows a secret value.
        #expect(!"\(ConfigError(variable: "LETHE_MASTER_KEY", reason: "x"))".contains(base["LETHE_MASTER_KEY"]!))
    }

    static func padded(_ base64url: String) -> String {
        var text = base64url.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        text += String(repeating: "=", count: (4 - text.count % 4) % 4)
        return text
    }
}
