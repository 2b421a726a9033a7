import AsyncHTTPClient
import Foundation
import Hummingbird
import JWTKit
import Logging
import NIOCore
import Synchronization

/// The claims of a tenant access token, issued by oauth-gateway (`POST /oauth/token`, client credentials) and
/// verified by every service that serves tenant-scoped data.
///
/// `sub` is the tenant id. `aud` must contain `TenantAuthConfig.audience` and `iss` must be the gateway, so a token
/// minted for something else (an ID token for a tenant's users, whose `aud` is the tenant) is never accepted here.
package struct TenantAccessClaims: JWTPayload, Equatable {
    package var sub: SubjectClaim
    package var iss: IssuerClaim
    package var aud: AudienceClaim
    package var exp: ExpirationClaim
    package var iat: IssuedAtClaim

    package init(tenantId: String, issuer: String, audience: String, issuedAt: Date, expiresAt: Date) {
        sub = SubjectClaim(value: tenantId)
        iss = IssuerClaim(value: issuer)
        aud = AudienceClaim(value: [audience])
        iat = IssuedAtClaim(value: issuedAt)
        exp = ExpirationClaim(value: expiresAt)
    }

    package var tenantId: String { sub.value }

    package func verify(using algorithm: some JWTAlgorithm) async throws {
        try exp.verifyNotExpired()
    }
}

/// Where tenant tokens are verified: the gateway's JWKS URL, the expected issuer and audience.
///
/// `LETHE_JWKS_URL` (default `<LETHE_GATEWAY_URL>/.well-known/jwks.json`), `LETHE_TOKEN_ISSUER` (default
/// `LETHE_GATEWAY_URL`), `LETHE_GATEWAY_URL` (default `http://127.0.0.1:8080`).
package struct TenantAuthConfig: Sendable, Equatable {
    /// The audience every tenant access token carries.
    package static let audience = "lethe"

    package var jwksURL: URL
    package var issuer: String
    /// The least time between two JWKS fetches caused by unknown key ids, so forged `kid`s cannot make a service
    /// hammer the gateway.
    package var minimumRefetchInterval: Duration
    /// How long fetched keys are trusted before the next token makes the verifier fetch them again: a key the gateway
    /// revoked stops verifying here within this (the gateway's JWKS says `max-age=300` too).
    package var maximumKeyAge: Duration

    package init(
        jwksURL: URL, issuer: String, minimumRefetchInterval: Duration = .seconds(10), maximumKeyAge: Duration = .seconds(300)
    ) {
        self.jwksURL = jwksURL
        self.issuer = issuer
        self.minimumRefetchInterval = minimumRefetchInterval
        self.maximumKeyAge = maximumKeyAge
    }

    package init(reader: ConfigReader) throws {
        let gateway = try reader.url("LETHE_GATEWAY_URL", default: "http://127.0.0.1:8080")
        let gatewayText = gateway.absoluteString.hasSuffix("/") ? String(gateway.absoluteString.dropLast())
            : gateway.absoluteString
        self.jwksURL = try reader.url("LETHE_JWKS_URL", default: gatewayText + "/.well-known/jwks.json")
        self.issuer = reader.string("LETHE_TOKEN_ISSUER", default: gatewayText)
        self.minimumRefetchInterval = .seconds(10)
        self.maximumKeyAge = .seconds(300)
    }
}

/// Verifies tenant bearer tokens against the gateway's JWKS.
///
/// Keys are fetched on first use, again when a token names an unknown `kid` (a rotation), at most once per
/// `minimumRefetchInterval`, and again once they are `maximumKeyAge` old (a revocation); when that refetch fails, the
/// keys held are used until one succeeds, so a gateway restart does not lock tenants out. Only ES256 keys are trusted: a token whose header names another algorithm, or none, fails.
package final class TenantTokenVerifier: Sendable {
    package let config: TenantAuthConfig
    private let httpClient: HTTPClient
    private let logger: Logger
    private let keys = Mutex<(set: KeySet?, fetchedAt: ContinuousClock.Instant?)>((nil, nil))

    /// The fetched keys and their ids. The ids are kept apart because `JWTKeyCollection` falls back to its default key
    /// for an unknown `kid`; here an unknown `kid` means "refetch", then "refuse".
    private struct KeySet: Sendable {
        var collection: JWTKeyCollection
        var kids: Set<String>
    }

    package init(config: TenantAuthConfig, httpClient: HTTPClient, logger: Logger) {
        self.config = config
        self.httpClient = httpClient
        self.logger = logger
    }

    /// The verified claims of `token`, or `TenantAuthError`.
    package func verify(_ token: String) async throws(TenantAuthError) -> TenantAccessClaims {
        let header = try Self.header(of: token)
        guard header.alg == "ES256" else { throw .invalidToken("unsupported algorithm") }
        guard let kid = header.kid else { throw .invalidToken("no key id") }
        var keySet = try await currentKeys(refreshing: false)
        if !keySet.kids.contains(kid) {
            keySet = try await currentKeys(refreshing: true)
            guard keySet.kids.contains(kid) else { throw .invalidToken("unknown key id") }
        }
        let claims: TenantAccessClaims
        do {
            claims = try await keySet.collection.verify(token, as: TenantAccessClaims.self)
        } catch let error as JWTError where error.errorType == .claimVerificationFailure {
            throw .invalidToken("expired")
        } catch {
            throw .invalidToken("signature or key")
        }
        guard claims.iss.value == config.issuer else { throw .invalidToken("wrong issuer") }
        guard claims.aud.value.contains(TenantAuthConfig.audience) else { throw .invalidToken("wrong audience") }
        return claims
    }

    /// Verifies the request's bearer token.
    package func authenticate(_ request: Request) async throws(TenantAuthError) -> TenantAccessClaims {
        guard let value = request.headers[.authorization] else { throw .missingToken }
        let parts = value.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else { throw .missingToken }
        return try await verify(String(parts[1]))
    }

    /// Verifies the token and that it belongs to `tenant` (the path's tenant). Another tenant's token gets 404, as if
    /// the resource did not exist: a tenant must not learn what another tenant holds.
    package func authorize(_ request: Request, tenant: String) async throws -> TenantAccessClaims {
        let claims: TenantAccessClaims
        do {
            claims = try await authenticate(request)
        } catch {
            logger.info("tenant token refused", metadata: ["auth.reason": "\(error.reason)"])
            throw error.httpError
        }
        guard claims.tenantId == tenant else { throw HTTPError(.notFound) }
        return claims
    }

    private func currentKeys(refreshing: Bool) async throws(TenantAuthError) -> KeySet {
        let now = ContinuousClock.now
        let cached = keys.withLock { $0 }
        if let keySet = cached.set, let fetchedAt = cached.fetchedAt {
            let age = now - fetchedAt
            if age < config.minimumRefetchInterval || (!refreshing && age < config.maximumKeyAge) { return keySet }
            if !refreshing {
                // Old keys: fetch again, but keep verifying with them while the gateway cannot answer (and try again
                // only after the refetch interval, so a gateway that is down is not asked on every request).
                guard let fresh = try? await fetchKeys() else {
                    let retryAt = now - config.maximumKeyAge + config.minimumRefetchInterval
                    keys.withLock { $0 = (keySet, retryAt) }
                    return keySet
                }
                keys.withLock { $0 = (fresh, now) }
                return fresh
            }
        }
        let keySet = try await fetchKeys()
        keys.withLock { $0 = (keySet, now) }
        return keySet
    }

    private func fetchKeys() async throws(TenantAuthError) -> KeySet {
        do {
            var request = HTTPClientRequest(url: config.jwksURL.absoluteString)
            request.method = .GET
            let response = try await httpClient.execute(request, timeout: .seconds(5))
            guard response.status == .ok else { throw TenantAuthError.keysUnavailable("status \(response.status.code)") }
            let body = try await response.body.collect(upTo: 1 << 20)
            let jwks = try JSONDecoder().decode(JWKS.self, from: Data(buffer: body))
            let collection = JWTKeyCollection()
            var kids: Set<String> = []
            // Only EC keys with ids: a JWKS entry of another type must not widen what verifies.
            for key in jwks.keys where key.keyType == .ecdsa {
                guard let kid = key.keyIdentifier else { continue }
                try await collection.add(jwk: key)
                kids.insert(kid.string)
            }
            return KeySet(collection: collection, kids: kids)
        } catch let error as TenantAuthError {
            throw error
        } catch {
            logger.warning("fetching the JWKS failed", metadata: ["auth.jwks": "\(config.jwksURL)"])
            throw .keysUnavailable("fetch failed")
        }
    }

    private struct Header: Decodable {
        var alg: String?
        var kid: String?
    }

    private static func header(of token: String) throws(TenantAuthError) -> Header {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let data = base64URLDecode(parts[0]),
              let header = try? JSONDecoder().decode(Header.self, from: data)
        else { throw .invalidToken("malformed") }
        return header
    }

    private static func base64URLDecode(_ text: Substring) -> Data? {
        var base64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        base64 += String(repeating: "=", count: (4 - base64.count % 4) % 4)
        return Data(base64Encoded: base64)
    }
}

/// Why a tenant token was refused. Never carries the token.
package enum TenantAuthError: Error, CustomStringConvertible {
    case missingToken
    case invalidToken(String)
    /// The gateway's keys could not be fetched: the service cannot verify anything (503, not 401).
    case keysUnavailable(String)

    package var reason: String {
        switch self {
        case .missingToken: "missing bearer token"
        case .invalidToken(let reason): "invalid token: \(reason)"
        case .keysUnavailable(let reason): "signing keys unavailable: \(reason)"
        }
    }

    package var description: String { reason }

    /// The HTTP answer: 401 with a `WWW-Authenticate` challenge, or 503 when keys are unavailable.
    package var httpError: HTTPError {
        switch self {
        case .missingToken:
            HTTPError(.unauthorized, headers: [.wwwAuthenticate: "Bearer"], message: reason)
        case .invalidToken:
            HTTPError(.unauthorized, headers: [.wwwAuthenticate: "Bearer error=\"invalid_token\""], message: reason)
        case .keysUnavailable:
            HTTPError(.serviceUnavailable, message: "cannot verify tokens right now")
        }
    }
}
