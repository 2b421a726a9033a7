import AsyncHTTPClient
import Foundation
import Hummingbird
import HummingbirdTesting
import JWTKit
import Logging
import ServiceKit
import ServiceLifecycle
import Synchronization
import Testing
import TestSupport

@Suite("Tenant bearer tokens verified against the gateway's JWKS")
struct TenantAuthTests {
    static let issuer = "http://gateway.test"

    func claims(tenant: String = "tenant-a", issuer: String = Self.issuer, audience: String = TenantAuthConfig.audience,
                expiresIn: TimeInterval = 300) -> TenantAccessClaims {
        TenantAccessClaims(tenantId: tenant, issuer: issuer, audience: audience, issuedAt: Date(),
                           expiresAt: Date().addingTimeInterval(expiresIn))
    }

    @Test("a token signed by a published key verifies and names its tenant")
    func validTokenVerifies() async throws {
        let server = JWKSServer()
        let key = JWKSServer.SigningKey(kid: "k1")
        server.publish([key])
        let token = try await key.sign(claims())
        let verified = try await server.run { try await $0.verify(token) }
        #expect(verified.tenantId == "tenant-a")
    }

    @Test("expired, wrong issuer, wrong audience, unknown key and malformed tokens are refused")
    func badTokensAreRefused() async throws {
        let server = JWKSServer()
        let key = JWKSServer.SigningKey(kid: "k1")
        let stranger = JWKSServer.SigningKey(kid: "k9")
        server.publish([key])
        let expired = try await key.sign(claims(expiresIn: -60))
        let wrongIssuer = try await key.sign(claims(issuer: "http://evil.test"))
        let wrongAudience = try await key.sign(claims(audience: "tenant-a"))  // e.g. an ID token
        let unknownKey = try await stranger.sign(claims())
        // The stranger's signature under a published kid: the header lies about who signed it.
        let forged = try await {
            let keys = JWTKeyCollection()
            await keys.add(ecdsa: stranger.key, kid: "k1")
            return try await keys.sign(claims(), kid: "k1")
        }()
        let unsigned = "eyJhbGciOiJub25lIiwia2lkIjoiazEifQ." + (try await key.sign(claims())).split(separator: ".")[1] + "."
        try await server.run { verifier in
            for (name, token) in [("expired", expired), ("issuer", wrongIssuer), ("audience", wrongAudience),
                                  ("unknown key", unknownKey), ("forged", forged), ("alg none", unsigned),
                                  ("garbage", "not.a.jwt")] {
                await #expect(throws: TenantAuthError.self, "\(name)") { try await verifier.verify(token) }
            }
        }
    }

    @Test("a rotated-in key is fetched when a token names it")
    func rotatedKeyIsFetched() async throws {
        let server = JWKSServer()
        let old = JWKSServer.SigningKey(kid: "k1")
        let new = JWKSServer.SigningKey(kid: "k2")
        server.publish([old])
        let oldToken = try await old.sign(claims())
        let newToken = try await new.sign(claims(tenant: "tenant-b"))
        try await server.run { verifier in
            _ = try await verifier.verify(oldToken)
            #expect(server.fetches.load(ordering: .relaxed) == 1)
            _ = try await verifier.verify(oldToken)
            #expect(server.fetches.load(ordering: .relaxed) == 1, "keys are cached")
            server.publish([old, new])
            #expect(try await verifier.verify(newToken).tenantId == "tenant-b")
            #expect(server.fetches.load(ordering: .relaxed) == 2)
        }
    }

    @Test("""
        a key the gateway stopped publishing (revoked) stops verifying once the held keys are older than the maximum \
        key age; while the JWKS cannot be fetched, the keys held keep verifying
        """)
    func revokedKeyStopsVerifying() async throws {
        let server = JWKSServer()
        let revoked = JWKSServer.SigningKey(kid: "k1")
        let kept = JWKSServer.SigningKey(kid: "k2")
        server.publish([revoked, kept])
        let revokedToken = try await revoked.sign(claims())
        let keptToken = try await kept.sign(claims(tenant: "tenant-b"))
        try await server.run(maximumKeyAge: .milliseconds(300)) { verifier in
            _ = try await verifier.verify(revokedToken)
            server.publish([kept])
            try await Task.sleep(for: .milliseconds(400))
            await #expect(throws: TenantAuthError.self) { try await verifier.verify(revokedToken) }
            #expect(try await verifier.verify(keptToken).tenantId == "tenant-b")

            server.unavailable.store(true, ordering: .relaxed)
            try await Task.sleep(for: .milliseconds(400))
            let fetches = server.fetches.load(ordering: .relaxed)
            #expect(try await verifier.verify(keptToken).tenantId == "tenant-b", "old keys while the JWKS is down")
            #expect(server.fetches.load(ordering: .relaxed) == fetches + 1, "the refetch was tried")
        }
    }

    @Test("over HTTP: no token is 401, another tenant's token is 404, the tenant's own token passes")
    func routesAreTenantScoped() async throws {
        let server = JWKSServer()
        let key = JWKSServer.SigningKey(kid: "k1")
        server.publish([key])
        let tokenA = try await key.sign(claims(tenant: "tenant-a"))
        let tokenB = try await key.sign(claims(tenant: "tenant-b"))
        try await server.run { verifier in
            let router = Router()
            router.get("/v1/tenants/:tenant/things") { request, context -> String in
                let tenant = try context.parameters.require("tenant")
                _ = try await verifier.authorize(request, tenant: tenant)
                return "secret of \(tenant)"
            }
            try await Application(router: router).test(.router) { client in
                try await client.execute(uri: "/v1/tenants/tenant-a/things", method: .get) { response in
                    #expect(response.status == .unauthorized)
                    #expect(response.headers[.wwwAuthenticate] == "Bearer")
                }
                try await client.execute(uri: "/v1/tenants/tenant-a/things", method: .get,
                                         headers: [.authorization: "Bearer \(tokenB)"]) { response in
                    #expect(response.status == .notFound)
                    #expect(!String(buffer: response.body).contains("secret"))
                }
                try await client.execute(uri: "/v1/tenants/tenant-a/things", method: .get,
                                         headers: [.authorization: "Bearer \(tokenA)"]) { response in
                    #expect(response.status == .ok)
                    #expect(String(buffer: response.body) == "secret of tenant-a")
                }
            }
        }
    }
}
