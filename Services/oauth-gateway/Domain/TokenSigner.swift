import Contracts
import Crypto
import Foundation
import JWTKit
import ServiceKit

/// The ID token a tenant receives for a signed-in user (OIDC-like): `aud` is the tenant, `sub` the platform user.
struct IDTokenClaims: JWTPayload, Equatable {
    var iss: IssuerClaim
    var aud: AudienceClaim
    var sub: SubjectClaim
    var iat: IssuedAtClaim
    var exp: ExpirationClaim
    var atlassianAccountId: String
    var name: String?
    var email: String?
    var picture: String?

    enum CodingKeys: String, CodingKey {
        case iss, aud, sub, iat, exp, name, email, picture
        case atlassianAccountId = "atlassian_account_id"
    }

    func verify(using algorithm: some JWTAlgorithm) async throws { try exp.verifyNotExpired() }
}

/// Signs the gateway's tokens (tenant access tokens and ID tokens) with ES256 and publishes the public keys as a JWKS.
///
/// Private keys are stored sealed (``SecretBox``). Rotation makes a new key the signer at once; a retired key stays in
/// the JWKS for `retention` (longer than any token it signed lives), so verifiers keep accepting what it signed.
actor TokenSigner {
    private let database: GatewayDatabase
    private let box: SecretBox
    private let retention: TimeInterval
    private var active: (kid: String, key: ES256PrivateKey)?
    private var collection = JWTKeyCollection()
    private var jwks = Data()
    /// Tenant tokens verified before, until they expire. Cleared when the keys change.
    private var verified: [String: TenantAccessClaims] = [:]

    init(database: GatewayDatabase, box: SecretBox, retention: TimeInterval) {
        self.database = database
        self.box = box
        self.retention = retention
    }

    /// Loads the stored keys, creating the first one on a new database. Again on a replica that becomes the active
    /// one: the replica it takes over from may have rotated keys since this one started.
    func load() async throws {
        var stored = try await database.signingKeys(publishedSince: Date().addingTimeInterval(-retention))
        if !stored.contains(where: { $0.retiredAt == nil }) {
            let (kid, sealed) = try makeKey()
            try await database.addFirstSigningKey(kid: kid, sealedPrivateKey: sealed)
            stored = try await database.signingKeys(publishedSince: Date().addingTimeInterval(-retention))
        }
        stored.sort { $0.createdAt > $1.createdAt }
        let collection = JWTKeyCollection()
        var entries: [String] = []
        var active: (String, ES256PrivateKey)?
        for key in stored {
            let pem = try box.openString(key.sealedPrivateKey, context: "signing_key:\(key.kid)")
            let privateKey = try ES256PrivateKey(pem: pem)
            await collection.add(ecdsa: privateKey, kid: JWKIdentifier(string: key.kid))
            entries.append(Self.jwk(kid: key.kid, key: privateKey))
            if key.retiredAt == nil, active == nil { active = (key.kid, privateKey) }
        }
        self.collection = collection
        self.active = active
        self.verified = [:]
        self.jwks = Data(#"{"keys":[\#(entries.joined(separator: ","))]}"#.utf8)
    }

    /// Makes a new signing key the active one. Returns its kid.
    @discardableResult
    func rotate() async throws -> String {
        let (kid, sealed) = try makeKey()
        try await database.rotateSigningKey(kid: kid, sealedPrivateKey: sealed)
        try await load()
        return kid
    }

    /// A new private key, sealed for storage, and its kid.
    private func makeKey() throws -> (kid: String, sealed: Data) {
        let kid = Self.newKid()
        return (kid, try box.seal(ES256PrivateKey().pemRepresentation, context: "signing_key:\(kid)"))
    }

    /// Revokes a published key (a compromised one) at once: it leaves the JWKS, and no token it signed verifies here any
    /// more (the verified-token memory is cleared). When it is the active key, a new one becomes active first. Returns
    /// the active kid afterwards, or nil when no published key has `kid`.
    func revoke(kid: String) async throws -> String? {
        let published = try await database.signingKeys(publishedSince: Date().addingTimeInterval(-retention))
        guard let key = published.first(where: { $0.kid == kid }) else { return nil }
        if key.retiredAt == nil { try await rotate() }
        try await database.revokeSigningKey(kid: kid)
        try await load()
        return active?.kid
    }

    /// `GET /.well-known/jwks.json`'s body.
    func jwksDocument() -> Data { jwks }

    func sign(_ claims: some JWTPayload) async throws -> String {
        guard let active else { throw NoSigningKey() }
        return try await collection.sign(claims, kid: JWKIdentifier(string: active.kid))
    }

    /// Signs a Security Event Token: `typ` `secevent+jwt` (RFC 8417 §2.3), with the active key.
    func signSecurityEvent(_ claims: SecurityEventClaims) async throws -> String {
        guard let active else { throw NoSigningKey() }
        var header = JWTHeader()
        header.typ = "secevent+jwt"
        return try await collection.sign(claims, kid: JWKIdentifier(string: active.kid), header: header)
    }

    struct NoSigningKey: Error {}

    /// Verifies a tenant access token against the gateway's own keys (no JWKS round trip), with the same rules as
    /// every other service's `TenantTokenVerifier`: signature, expiry, issuer and audience.
    ///
    /// A tenant's backend presents the same token on every call for its lifetime, so verified tokens are remembered
    /// until they expire (an ECDSA verification costs more than the rest of a code exchange); the memory is bounded.
    func verifyTenantToken(_ token: String, issuer: String) async -> TenantAccessClaims? {
        let now = Date()
        if let known = verified[token] {
            if known.exp.value > now { return known }
            verified[token] = nil
        }
        guard let claims = try? await collection.verify(token, as: TenantAccessClaims.self),
              claims.iss.value == issuer, claims.aud.value.contains(TenantAuthConfig.audience)
        else { return nil }
        if verified.count >= 10_000 { verified = verified.filter { $0.value.exp.value > now } }
        if verified.count < 10_000 { verified[token] = claims }
        return claims
    }

    private static func jwk(kid: String, key: ES256PrivateKey) -> String {
        let (x, y) = key.publicKey.parameters!
        return #"{"kty":"EC","crv":"P-256","alg":"ES256","use":"sig","kid":"\#(kid)","x":"\#(x)","y":"\#(y)"}"#
    }

    private static func newKid() -> String {
        let bytes = SymmetricKey(size: .bits128).withUnsafeBytes { Array($0) }
        return bytes.prefix(9).hex
    }
}

/// Random one-time values (client secrets, states, sign-in codes) and their stored hashes.
enum OneTimeValue {
    /// 32 random bytes, base64url without padding: 256 bits, unguessable.
    static func make() -> String {
        let bytes = SymmetricKey(size: .bits256).withUnsafeBytes { Data($0) }
        return bytes.base64EncodedString().replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }

    /// What is stored instead of the value. Plain SHA-256 is enough: the values carry 256 random bits, so there is
    /// nothing to brute-force, unlike a password.
    static func hash(_ value: some StringProtocol) -> Data { Data(SHA256.hash(data: Data(value.utf8))) }
}
