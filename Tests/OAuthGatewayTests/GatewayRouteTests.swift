import Foundation
import ServiceKit
import Testing
import TestSupport

@testable import oauth_gateway

/// What the gateway's HTTP API answers, served in-process: no broker, no sandbox.
@Suite("oauth-gateway routes, in-process over a real SQLite file")
struct GatewayRouteTests {
    @Test("GET /v1/tenants pages with limit and cursor, in creation order; bad limits and foreign cursors get 400")
    func tenantListPages() async throws {
        try await GatewayRoutes.run { routes in
            let ids = ["delta", "alpha", "charlie", "bravo", "echo"]
            for id in ids { _ = try await routes.createTenant(id) }
            var seen: [String] = []
            var cursor: String?
            var pages = 0
            repeat {
                let page = try await routes.get(
                    "/v1/tenants?limit=2" + (cursor.map { "&cursor=\($0)" } ?? ""), bearer: GatewayHarness.adminToken)
                #expect(page.status == 200)
                let tenants = try #require(page.json["tenants"] as? [[String: Any]])
                #expect(tenants.count <= 2 && tenants.allSatisfy { $0.keys.contains("app") })
                seen += tenants.compactMap { $0["tenantId"] as? String }
                cursor = page.json["nextCursor"] as? String
                pages += 1
            } while cursor != nil && pages < 10
            #expect(seen == ids && pages == 3)
            let all = try await routes.get("/v1/tenants", bearer: GatewayHarness.adminToken)
            #expect((all.json["tenants"] as? [Any])?.count == 5 && all.json["nextCursor"] == nil)
            let foreignCursor = PageCursor(kind: "r").make(after: 1)
            for bad in ["limit=0", "limit=501", "limit=x", "cursor=\(foreignCursor)", "cursor=%%%"] {
                let answer = try await routes.get("/v1/tenants?\(bad)", bearer: GatewayHarness.adminToken)
                #expect(answer.status == 400, "\(bad)")
            }
            #expect(try await routes.get("/v1/tenants?limit=2").status == 401)
        }
    }

    @Test("tenant API: another tenant's token gets 404, bad input 400 with a reason, operator routes need the admin token")
    func tenantAPIIsolationAndValidation() async throws {
        try await GatewayRoutes.run { routes in
            let acme = try await routes.createTenant("acme")
            let other = try await routes.createTenant("other")
            let view = try await routes.get("/v1/tenants/acme", bearer: acme.token)
            #expect(view.status == 200 && view.json.keys.contains("app") && view.body.contains(#""app":null"#))
            #expect(try await routes.get("/v1/tenants/acme", bearer: other.token).status == 404)
            #expect(try await routes.send(.PUT, "/v1/tenants/acme/settings", bearer: other.token, json: [:]).status == 404)
            #expect(try await routes.get("/v1/tenants/acme").status == 401)
            #expect(try await routes.get("/v1/tenants/acme", bearer: "not-a-jwt").status == 401)

            for (body, reason) in [
                (["returnUrls": ["ftp://x"]] as [String: Any], "return URLs"),
                (["returnUrls": ["https://x.example/#frag"]], "return URLs"),
                (["erasurePolicy": "shred"], "body must be JSON"),
                (["deadlineDays": 0], "deadlineDays"),
                (["deadlineDays": 31], "between 1 and 30"),
            ] {
                let answer = try await routes.send(.PUT, "/v1/tenants/acme/settings", bearer: acme.token, json: body)
                #expect(answer.status == 400 && answer.body.contains(reason), "\(body): \(answer.body)")
            }
            let badApp = try await routes.send(
                .PUT, "/v1/tenants/acme/app", bearer: acme.token, json: ["clientId": "a b", "clientSecret": "x"])
            #expect(badApp.status == 400 && badApp.body.contains("clientId"))
            let elsewhere = try await routes.send(
                .PUT, "/v1/tenants/acme/app", bearer: acme.token,
                json: ["clientId": "acme-app", "clientSecret": "x", "callbackUrl": "https://elsewhere.example/cb"])
            #expect(elsewhere.status == 400 && elsewhere.body.contains("callbackUrl"))
            let own = try await routes.send(
                .PUT, "/v1/tenants/acme/app", bearer: acme.token,
                json: ["clientId": "acme-app", "clientSecret": "acme-app-secret-1234", "callbackUrl": routes.callbackURL])
            #expect(own.status == 200, "\(own.body)")
            let taken = try await routes.send(
                .PUT, "/v1/tenants/other/app", bearer: other.token,
                json: ["clientId": "acme-app", "clientSecret": "x", "callbackUrl": routes.callbackURL])
            #expect(taken.status == 409)

            #expect(try await routes.send(.POST, "/v1/tenants", bearer: nil, json: ["tenantId": "x"]).status == 401)
            #expect(try await routes.send(.POST, "/v1/tenants", bearer: "wrong-admin-token", json: ["tenantId": "x"]).status == 401)
            #expect(try await routes.send(.POST, "/v1/tenants", bearer: GatewayHarness.adminToken, json: ["tenantId": "acme"]).status == 409)
            for bad in ["Acme", "-x", "lethe", "", String(repeating: "a", count: 64)] {
                let answer = try await routes.send(.POST, "/v1/tenants", bearer: GatewayHarness.adminToken, json: ["tenantId": bad])
                #expect(answer.status == 400, "\(bad)")
            }
            let list = try await routes.get("/v1/tenants", bearer: GatewayHarness.adminToken)
            #expect(list.status == 200 && !list.body.contains("secret"))

            try await Self.expectTokenErrorsAndCredentialRotation(routes, tenant: acme)
        }
    }

    /// Wrong client credentials and grant types get RFC 6749 errors; HTTP Basic works; after new credentials, the old
    /// secret stops working at once.
    private static func expectTokenErrorsAndCredentialRotation(
        _ routes: GatewayRoutes, tenant acme: TestTenant
    ) async throws {
        // Wrong client credentials and grant types get RFC 6749 errors.
        let wrong = try await routes.token(form: "grant_type=client_credentials&client_id=acme&client_secret=wrong")
        #expect(wrong.status == 401 && wrong.json["error"] as? String == "invalid_client")
        let grant = try await routes.token(form: "grant_type=password&client_id=acme&client_secret=\(acme.secret)")
        #expect(grant.status == 400 && grant.json["error"] as? String == "unsupported_grant_type")
        let basic = Data("acme:\(acme.secret)".utf8).base64EncodedString()
        let viaBasic = try await routes.token(
            form: "grant_type=client_credentials", headers: [("authorization", "Basic \(basic)")])
        #expect(viaBasic.status == 200)

        // New credentials: the old secret stops working at once.
        let rotated = try await routes.send(.POST, "/v1/tenants/acme/credentials", bearer: GatewayHarness.adminToken, json: [:])
        let newSecret = try #require(rotated.json["clientSecret"] as? String)
        await #expect(throws: (any Error).self) { _ = try await routes.tenantToken("acme", secret: acme.secret) }
        _ = try await routes.tenantToken("acme", secret: newSecret)
    }

    @Test("errors answer {error, message, requestId}: a body that is not JSON gets 400 with a reason, a wrong bearer 401")
    func errorShape() async throws {
        try await GatewayRoutes.run { routes in
            let answer = try await routes.perform(
                .POST, "/v1/tenants", headers: [("authorization", "Bearer \(GatewayHarness.adminToken)"),
                                                ("content-type", "application/json"), ("x-request-id", "req-7")],
                body: "{not json")
            #expect(answer.status == 400)
            #expect(answer.json["error"] as? String == "bad_request" && answer.json["requestId"] as? String == "req-7")
            #expect((answer.json["message"] as? String)?.isEmpty == false, "\(answer.body)")
            // Tenant routes take the tenant's token, not the operator's: 401 with its challenge, in the same shape.
            let refused = try await routes.get("/v1/tenants/nobody", bearer: GatewayHarness.adminToken)
            #expect(refused.status == 401 && refused.headers.first(name: "www-authenticate")?.hasPrefix("Bearer") == true)
            #expect(refused.json["error"] as? String == "unauthorized" && refused.json["requestId"] != nil, "\(refused.body)")
        }
    }

    @Test("""
        revoking a signing key: it leaves the JWKS at once and what it signed is refused; the active key is replaced \
        first; an unknown kid is 404; only the operator may
        """)
    func signingKeyRevocation() async throws {
        try await GatewayRoutes.run { routes in
            let acme = try await routes.createTenant("acme")
            func kids() async throws -> [String] {
                let keys = try await routes.get("/.well-known/jwks.json").json["keys"] as? [[String: Any]] ?? []
                return keys.compactMap { $0["kid"] as? String }
            }
            let compromised = try #require(try await kids().first)
            #expect(try await routes.get("/v1/tenants/acme", bearer: acme.token).status == 200)
            let path = "/v1/signing-keys/\(compromised)/revoke"
            #expect(try await routes.send(.POST, path, bearer: acme.token, json: [:]).status == 401)
            let revoked = try await routes.send(.POST, path, bearer: GatewayHarness.adminToken, json: [:])
            #expect(revoked.status == 200 && revoked.json["revoked"] as? String == compromised)
            let active = try #require(revoked.json["activeKid"] as? String)
            let published = try await kids()
            #expect(active != compromised && published == [active])
            #expect(try await routes.get("/v1/tenants/acme", bearer: acme.token).status == 401)
            let fresh = try await routes.tenantToken("acme", secret: acme.secret)
            #expect(try await routes.get("/v1/tenants/acme", bearer: fresh).status == 200)
            #expect(try await routes.send(.POST, path, bearer: GatewayHarness.adminToken, json: [:]).status == 404)
            // A rotation afterwards does not bring it back.
            #expect(try await routes.send(.POST, "/v1/signing-keys/rotate", bearer: GatewayHarness.adminToken, json: [:])
                .status == 200)
            let afterRotation = try await kids()
            #expect(!afterRotation.contains(compromised))
        }
    }

    @Test("a request body over the limit is refused with 413 in the error shape, never read whole")
    func oversizedBody() async throws {
        try await GatewayRoutes.run { routes in
            let huge = #"{"tenantId":""# + String(repeating: "a", count: 200_000) + #""}"#
            let answer = try await routes.perform(
                .POST, "/v1/tenants", headers: [("authorization", "Bearer \(GatewayHarness.adminToken)"),
                                                ("content-type", "application/json")], body: huge)
            #expect(answer.status == 413 && answer.json["requestId"] != nil, "\(answer.status) \(answer.body.prefix(200))")
            let form = "grant_type=client_credentials&client_id=acme&pad=" + String(repeating: "a", count: 200_000)
            #expect(try await routes.token(form: form).status == 413)
        }
    }

    @Test("POST /v1/data-keys/rotate makes a new data key active; GET /v1/data-keys shows the keys and what waits to be re-sealed")
    func dataKeyRoutes() async throws {
        try await GatewayRoutes.run { routes in
            let acme = try await routes.createTenant("acme")
            #expect(try await routes.send(.POST, "/v1/data-keys/rotate", bearer: acme.token, json: [:]).status == 401)
            let initial = try await routes.get("/v1/data-keys", bearer: GatewayHarness.adminToken)
            #expect(initial.status == 200 && initial.json["activeKeyId"] as? Int == 1)
            #expect(initial.json["pendingReseal"] as? Int == 0)
            let rotated = try await routes.send(.POST, "/v1/data-keys/rotate", bearer: GatewayHarness.adminToken, json: [:])
            #expect(rotated.status == 200 && rotated.json["activeKeyId"] as? Int == 2)
            let keys = try #require(rotated.json["keys"] as? [[String: Any]])
            #expect(keys.map { $0["id"] as? Int } == [1, 2] && keys.map { $0["active"] as? Bool } == [false, true])
            // The signing key is sealed under key 1 until a rotation round (not running here) re-seals it.
            #expect(rotated.json["pendingReseal"] as? Int == 1)
            #expect(try await routes.get("/v1/tenants/acme", bearer: acme.token).status == 200)
        }
    }
}
