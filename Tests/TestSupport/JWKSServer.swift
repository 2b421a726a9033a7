import AsyncHTTPClient
import Foundation
import Hummingbird
import JWTKit
import NIOCore
import ServiceKit
import ServiceLifecycle
import Synchronization

/// A stand-in for the gateway's JWKS endpoint on an ephemeral port, whose key set a test can change (rotation), and
/// which counts fetches.
package final class JWKSServer: Sendable {
    package let keys = Mutex<[String]>([])
    package let fetches = Atomic<Int>(0)
    /// While true, the JWKS answers 503 (a gateway that is down).
    package let unavailable = Atomic<Bool>(false)
    package let issuer: String

    package init(issuer: String = "http://gateway.test") { self.issuer = issuer }

    /// One signing key with its kid, as the gateway would hold it.
    package struct SigningKey: Sendable {
        package let kid: String
        package let key: ES256PrivateKey

        package init(kid: String) {
            self.kid = kid
            self.key = ES256PrivateKey()
        }

        package var jwkJSON: String {
            let (x, y) = key.publicKey.parameters!
            return #"{"kty":"EC","crv":"P-256","alg":"ES256","use":"sig","kid":"\#(kid)","x":"\#(x)","y":"\#(y)"}"#
        }

        package func sign(_ claims: TenantAccessClaims) async throws -> String {
            let keys = JWTKeyCollection()
            await keys.add(ecdsa: key, kid: JWKIdentifier(string: kid))
            return try await keys.sign(claims, kid: JWKIdentifier(string: kid))
        }
    }

    package func publish(_ signingKeys: [SigningKey]) { keys.withLock { $0 = signingKeys.map(\.jwkJSON) } }

    /// Runs the server and a verifier pointed at it for the duration of `body`.
    package func run<T: Sendable>(
        maximumKeyAge: Duration = .seconds(300), _ body: @Sendable (TenantTokenVerifier) async throws -> T
    ) async throws -> T {
        let router = Router()
        router.get("/.well-known/jwks.json") { [self] _, _ -> Response in
            fetches.add(1, ordering: .relaxed)
            if unavailable.load(ordering: .relaxed) { return Response(status: .serviceUnavailable) }
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
                    issuer: issuer, minimumRefetchInterval: .zero, maximumKeyAge: maximumKeyAge),
                httpClient: .shared, logger: makeTestLogger("auth"))
            return try await body(verifier)
        }
    }
}

extension JWKSServer.SigningKey {
    /// A tenant access token for `tenant`, valid for `expiresIn` seconds, as the gateway would issue it.
    package func token(tenant: String, issuer: String = "http://gateway.test", expiresIn: TimeInterval = 300)
        async throws -> String
    {
        try await sign(TenantAccessClaims(
            tenantId: tenant, issuer: issuer, audience: TenantAuthConfig.audience, issuedAt: Date(),
            expiresAt: Date().addingTimeInterval(expiresIn)))
    }
}
