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

/// A stand-in for the gateway's JWKS endpoint on an ephemeral port, whose key set a test can change (rotation), and
/// which counts fetches.
final class JWKSServer: Sendable {
    let keys = Mutex<[String]>([])
    let fetches = Atomic<Int>(0)

    /// One signing key with its kid, as the gateway would hold it.
    struct SigningKey: Sendable {
        let kid: String
        let key: ES256PrivateKey

        init(kid: String) {
            self.kid = kid
            self.key = ES256PrivateKey()
        }

        var jwkJSON: String {
            let (x, y) = key.publicKey.parameters!
            return #"{"kty":"EC","crv":"P-256","alg":"ES256","use":"sig","kid":"\#(kid)","x":"\#(x)","y":"\#(y)"}"#
        }

        func sign(_ claims: TenantAccessClaims) async throws -> String {
            let keys = JWTKeyCollection()
            await keys.add(ecdsa: key, kid: JWKIdentifier(string: kid))
            return try await keys.sign(claims, kid: JWKIdentifier(string: kid))
        }
    }

    func publish(_ signingKeys: [SigningKey]) { keys.withLock { $0 = signingKeys.map(\.jwkJSON) } }

    /// Runs the server and a verifier pointed at it for the duration of `body`.
    func run<T: Sendable>(_ body: @Sendable (TenantTokenVerifier) async throws -> T) async throws -> T {
        let router = Router()
        router.get("/.well-known/jwks.json") { [self] _, _ -> Response in
            fetches.add(1, ordering: .relaxed)
            let json = #"{"keys":[\#(keys.withLock { $0 }.joined(separator: ","))]}"#
            return Response(status: .ok, headers: [.contentType: "application/json"],
                            body: .init(byteBuffer: ByteBuffer(string: json)))
        }
        let (ports, continuation) = AsyncStream.makeStream(of: Int.self)
        let app = Application(
            router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { continuation.yield($0.localAddress?.port ?? 0) }, logger: makeTestLogger("jwks"))
        let group = ServiceGroup(configuration: .init(services: [app], logger: makeTestLogger("jwks")))
        return try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            defer { tasks.addTask { await group.triggerGracefulShutdown() } }
            guard let port = await ports.first(where: { _ in true }) else { throw CancellationError() }
            let verifier = TenantTokenVerifier(
                config: TenantAuthConfig(
                    jwksURL: URL(string: "http://127.0.0.1:\(port)/.well-known/jwks.json")!,
                    issuer: "http://gateway.test", minimumRefetchInterval: .zero),
                httpClient: .shared, logger: makeTestLogger("auth"))
            return try await body(verifier)
        }
    }
}

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
