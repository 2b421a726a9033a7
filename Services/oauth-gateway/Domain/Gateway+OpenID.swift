import Contracts
import Crypto
import Foundation
import JWTKit

/// The claims the `profile` and `email` scopes grant (OIDC Core §5.4), in the ID token and from userinfo alike.
/// `atlassian_account_id` comes with `profile`; `email_verified` is true only when Atlassian's `/me` said so.
struct ScopedClaims: Codable, Equatable, Sendable {
    var name: String?
    var nickname: String?
    var picture: String?
    var atlassianAccountId: String?
    var email: String?
    var emailVerified: Bool?

    enum CodingKeys: String, CodingKey {
        case name, nickname, picture, email
        case atlassianAccountId = "atlassian_account_id"
        case emailVerified = "email_verified"
    }

    init(scopes: [String], payload: SignInPayload) {
        if scopes.contains("profile") {
            name = payload.profile.name
            nickname = payload.profile.nickname
            picture = payload.profile.picture
            atlassianAccountId = payload.accountId
        }
        if scopes.contains("email"), let email = payload.profile.email {
            self.email = email
            emailVerified = payload.profile.emailVerified == true
        }
    }
}

/// The ID token of the OpenID flow (OIDC Core §2, §3.1.3.6): `aud` is the client (the tenant), `sub` the platform
/// user, the scoped claims beside the standard ones.
struct OpenIDTokenClaims: JWTPayload, Equatable {
    var iss: IssuerClaim
    var sub: SubjectClaim
    var aud: AudienceClaim
    var exp: ExpirationClaim
    var iat: IssuedAtClaim
    var authTime: Int
    var nonce: String?
    var atHash: String?
    var claims: ScopedClaims

    enum CodingKeys: String, CodingKey {
        case iss, sub, aud, exp, iat, nonce
        case authTime = "auth_time"
        case atHash = "at_hash"
    }

    init(iss: IssuerClaim, sub: SubjectClaim, aud: AudienceClaim, exp: ExpirationClaim, iat: IssuedAtClaim,
         authTime: Int, nonce: String?, atHash: String?, claims: ScopedClaims) {
        (self.iss, self.sub, self.aud, self.exp, self.iat) = (iss, sub, aud, exp, iat)
        (self.authTime, self.nonce, self.atHash, self.claims) = (authTime, nonce, atHash, claims)
    }

    /// The scoped claims sit at the top level of the token, beside the standard ones.
    init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        iss = try container.decode(IssuerClaim.self, forKey: .iss)
        sub = try container.decode(SubjectClaim.self, forKey: .sub)
        aud = try container.decode(AudienceClaim.self, forKey: .aud)
        exp = try container.decode(ExpirationClaim.self, forKey: .exp)
        iat = try container.decode(IssuedAtClaim.self, forKey: .iat)
        authTime = try container.decode(Int.self, forKey: .authTime)
        nonce = try container.decodeIfPresent(String.self, forKey: .nonce)
        atHash = try container.decodeIfPresent(String.self, forKey: .atHash)
        claims = try ScopedClaims(from: decoder)
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(iss, forKey: .iss)
        try container.encode(sub, forKey: .sub)
        try container.encode(aud, forKey: .aud)
        try container.encode(exp, forKey: .exp)
        try container.encode(iat, forKey: .iat)
        try container.encode(authTime, forKey: .authTime)
        try container.encodeIfPresent(nonce, forKey: .nonce)
        try container.encodeIfPresent(atHash, forKey: .atHash)
        try claims.encode(to: encoder)
    }

    func verify(using algorithm: some JWTAlgorithm) async throws { try exp.verifyNotExpired() }
}

/// What the userinfo endpoint answers (OIDC Core §5.3.2).
struct UserInfo: Encodable, Equatable {
    var sub: String
    var claims: ScopedClaims

    enum CodingKeys: String, CodingKey { case sub }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(sub, forKey: .sub)
        try claims.encode(to: encoder)
    }
}

extension Gateway {
    // MARK: OpenID Provider (docs/oauth-gateway.md "OpenID Connect")

    static let accessTokenLifetime: TimeInterval = 600
    /// The scopes the provider knows; others in a request are ignored (OIDC Core §3.1.2.1).
    static let openIDScopes = ["openid", "profile", "email"]

    /// Why an authorization request is refused.
    enum AuthorizationRefusal: Error, Equatable {
        /// No redirect URI to trust (unknown client, a redirect URI not registered, or either missing): a 400 to
        /// the browser, never a redirect (RFC 6749 §4.1.2.1).
        case badRequest(String)
        /// Sent back to the client's (registered) redirect URI as `error` and `error_description`.
        case redirect(location: String)
        /// The database could not be read: a 503, to try again.
        case unavailable
    }

    /// The authorization endpoint: checks the request and returns Atlassian's authorize URL, whose sealed state
    /// carries the request to the callback; refusals after the redirect URI is known go back to it.
    func authorize(_ query: FormFields) throws(AuthorizationRefusal) -> URL {
        guard let clientId = query["client_id"], !clientId.isEmpty else { throw .badRequest("client_id is required") }
        guard let redirectURI = query["redirect_uri"], !redirectURI.isEmpty else {
            throw .badRequest("redirect_uri is required")
        }
        let found: OpenIDClient?
        do { found = try database.openIDClientNow(clientId) } catch { throw .unavailable }
        guard let client = found else { throw .badRequest("unknown client_id") }
        guard client.redirectURIs.contains(redirectURI) else {
            throw .badRequest("redirect_uri is not one of the client's registered redirect URIs")
        }
        let state = query["state"]
        func refuse(_ error: String, _ description: String) -> AuthorizationRefusal {
            .redirect(location: Self.appendQuery(to: redirectURI, [
                ("error", error), ("error_description", description), ("state", state), ("iss", config.issuer),
            ]))
        }
        let request: OpenIDRequest
        switch Self.openIDRequest(query, clientId: clientId) {
        case .success(let parsed): request = parsed
        case .failure(let failure): throw refuse(failure.error, failure.description)
        }
        if (state?.count ?? 0) > 512 { throw refuse("invalid_request", "state is longer than 512 characters") }
        // RFC 9700 §2.1.1: a client that cannot keep a secret proves with PKCE that it is the one that asked.
        if client.isPublic, request.codeChallenge == nil {
            throw refuse("invalid_request", "code_challenge (S256) is required for a public client")
        }
        guard !client.tenant.disabled else { throw refuse("unauthorized_client", "the client is disabled") }
        guard let app = client.app else { throw refuse("server_error", "the client has no Atlassian app configured") }
        do {
            return try atlassianAuthorizeURL(
                tenant: client.tenant, app: app, redirectURI: redirectURI, tenantState: state ?? "",
                openID: request)
        } catch {
            throw refuse("server_error", "the sign-in could not start")
        }
    }

    struct RequestFailure: Error, Equatable {
        var error: String
        var description: String
    }

    /// The OpenID parameters of an authorization request, or the RFC 6749 / OIDC error it earns.
    static func openIDRequest(_ query: FormFields, clientId: String) -> Result<OpenIDRequest, RequestFailure> {
        func failure(_ error: String, _ description: String) -> Result<OpenIDRequest, RequestFailure> {
            .failure(RequestFailure(error: error, description: description))
        }
        guard query["response_type"] == "code" else {
            return failure("unsupported_response_type", "response_type must be code")
        }
        let asked = (query["scope"] ?? "").split(separator: " ").map(String.init)
        guard asked.contains("openid") else { return failure("invalid_scope", "scope must include openid") }
        if query["request"] != nil { return failure("request_not_supported", "request objects are not supported") }
        if query["request_uri"] != nil {
            return failure("request_uri_not_supported", "request_uri is not supported")
        }
        // Every sign-in goes through Atlassian, which may show its consent page: nothing can be promised silently.
        if query["prompt"]?.split(separator: " ").contains("none") == true {
            return failure("login_required", "the user must sign in at Atlassian")
        }
        let nonce = query["nonce"]
        if let nonce, nonce.isEmpty || nonce.count > 512 {
            return failure("invalid_request", "nonce must be 1 to 512 characters")
        }
        let challenge = query["code_challenge"]
        if let challenge {
            // RFC 9700 §2.1.1: plain (the default when the method is absent) gives no protection; S256 only.
            guard query["code_challenge_method"] == "S256" else {
                return failure("invalid_request", "code_challenge_method must be S256")
            }
            guard PKCE.isWellFormed(challenge) else { return failure("invalid_request", "malformed code_challenge") }
        } else if query["code_challenge_method"] != nil {
            return failure("invalid_request", "code_challenge_method without code_challenge")
        }
        return .success(OpenIDRequest(
            clientId: clientId, scopes: openIDScopes.filter(asked.contains), nonce: nonce, codeChallenge: challenge))
    }

    /// What the token endpoint issues for an authorization code.
    struct CodeGrant: Sendable {
        var accessToken: String
        var expiresIn: Int
        var idToken: String
        var scope: String
    }

    /// The token endpoint's `authorization_code` grant for an authenticated client (RFC 6749 §4.1.3, RFC 7636 §4.6).
    /// Throws a ``RequestFailure`` with `invalid_grant` for a code that is not this client's, expired, used, erased,
    /// or whose redirect URI or PKCE verifier does not match.
    func grant(code: String, client: OpenIDClient, redirectURI: String?, codeVerifier: String?) async throws
        -> CodeGrant
    {
        let clientId = client.clientId
        func invalidGrant(_ description: String) -> RequestFailure {
            RequestFailure(error: "invalid_grant", description: description)
        }
        guard let found = SealedAuthorizationCode.open(code, clientId: clientId, with: box) else {
            throw invalidGrant("unknown authorization code")
        }
        guard let redirectURI, OneTimeValue.hash(redirectURI) == found.redirectURIHash else {
            throw invalidGrant("redirect_uri differs from the authorization request's")
        }
        if client.isPublic, found.request.codeChallenge == nil { throw invalidGrant("a public client's code needs PKCE") }
        if let challenge = found.request.codeChallenge {
            guard let codeVerifier, PKCE.verify(verifier: codeVerifier, challenge: challenge) else {
                throw invalidGrant("code_verifier does not match the code_challenge")
            }
        } else if codeVerifier != nil {
            throw invalidGrant("code_verifier for a code issued without code_challenge")
        }
        switch try await database.redeemAuthorizationCode(
            nonce: found.nonce, connectionId: found.connectionId, accountId: found.payload.accountId,
            usableUntil: found.expiresAt, revokeUntil: found.expiresAt.addingTimeInterval(Self.accessTokenLifetime))
        {
        case .redeemed: break
        case .replayed:
            logger.warning("authorization code presented again; the access token it issued is revoked",
                           metadata: ["tenant": "\(client.tenant.tenantId)"])
            throw invalidGrant("authorization code already used")
        case .expired: throw invalidGrant("authorization code expired")
        case .connectionGone: throw invalidGrant("the sign-in was erased")
        }
        let now = Self.wholeSeconds()
        let scopes = found.request.scopes
        let accessToken = try SealedAccessToken(
            tenantId: client.tenant.tenantId, connectionId: found.connectionId, payload: found.payload, scopes: scopes,
            expiresAt: now.addingTimeInterval(Self.accessTokenLifetime), tokenId: found.nonce
        ).seal(with: box)
        let claims = OpenIDTokenClaims(
            iss: IssuerClaim(value: config.issuer), sub: SubjectClaim(value: found.payload.userId),
            aud: AudienceClaim(value: clientId), exp: ExpirationClaim(value: now.addingTimeInterval(Self.idTokenLifetime)),
            iat: IssuedAtClaim(value: now), authTime: Int(found.authTime.timeIntervalSince1970),
            nonce: found.request.nonce, atHash: Self.atHash(accessToken),
            claims: ScopedClaims(scopes: scopes, payload: found.payload))
        return CodeGrant(
            accessToken: accessToken, expiresIn: Int(Self.accessTokenLifetime), idToken: try await signer.sign(claims),
            scope: scopes.joined(separator: " "))
    }

    /// The userinfo endpoint's answer for an access token; nil when the token is not one, expired, revoked, or its
    /// connection was erased.
    func userInfo(accessToken: String) throws -> UserInfo? {
        guard let token = SealedAccessToken.open(accessToken, with: box), token.expiresAt > Date(),
              try database.accessTokenUsable(
                tokenId: token.tokenId, tenantId: token.tenantId, connectionId: token.connectionId,
                accountId: token.payload.accountId)
        else { return nil }
        return UserInfo(sub: token.payload.userId, claims: ScopedClaims(scopes: token.scopes, payload: token.payload))
    }

    /// `at_hash` (OIDC Core §3.1.3.6): the left half of the access token's SHA-256, base64url.
    static func atHash(_ accessToken: String) -> String {
        Base64URL.encode(Data(SHA256.hash(data: Data(accessToken.utf8)).prefix(16)))
    }

    /// `GET /.well-known/openid-configuration` (OpenID Connect Discovery 1.0 §3).
    func discoveryDocument() -> [String: any Sendable] {
        let base = config.publicURL
        return [
            "issuer": config.issuer,
            "authorization_endpoint": base + "/oauth/authorize",
            "token_endpoint": base + "/oauth/token",
            "userinfo_endpoint": base + "/oauth/userinfo",
            "jwks_uri": base + "/.well-known/jwks.json",
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "client_credentials"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["ES256"],
            "scopes_supported": Self.openIDScopes,
            "claims_supported": [
                "sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "at_hash", "name", "nickname", "picture",
                "email", "email_verified", "atlassian_account_id",
            ],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "code_challenge_methods_supported": ["S256"],
            "authorization_response_iss_parameter_supported": true,
            "claims_parameter_supported": false,
            "request_parameter_supported": false,
            "request_uri_parameter_supported": false,
        ]
    }
}
