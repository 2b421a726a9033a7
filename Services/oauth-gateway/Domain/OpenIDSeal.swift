import Crypto
import Foundation
import ServiceKit

/// What an OpenID Connect authorization request asked for (OIDC Core §3.1.2.1, RFC 7636), carried sealed through
/// Atlassian's sign-in and then in the authorization code, so that nothing about a pending request is stored.
struct OpenIDRequest: Sendable, Equatable {
    /// The client that asked: the tenant id, or one of its public clients' ids.
    var clientId: String
    /// The OpenID scopes granted: `openid` and those of `profile`, `email` the client asked for (others are ignored).
    var scopes: [String]
    /// The client's `nonce`, echoed in the ID token (OIDC Core §3.1.2.1).
    var nonce: String?
    /// The PKCE `code_challenge` (method S256 only), checked against the `code_verifier` at the token endpoint.
    var codeChallenge: String?
}

/// An OpenID Connect authorization code: the sign-in's result and what the request bound it to (the client, by the
/// associated data; the redirect URI, by its hash; the PKCE challenge and nonce), sealed like a sign-in code and valid
/// for ``Gateway/codeLifetime``. Single use is recorded under ``nonce``; a second redemption revokes the access token
/// the first one issued (RFC 9700 §4.5.3), whose id is this nonce.
struct SealedAuthorizationCode: Sendable, Equatable {
    var connectionId: String
    var payload: SignInPayload
    var redirectURIHash: Data
    var request: OpenIDRequest
    /// When the user signed in at Atlassian: the ID token's `auth_time`.
    var authTime: Date
    var expiresAt: Date
    var nonce: Data

    static func context(clientId: String) -> String { "oidc_code:v1:\(clientId)" }

    func seal(with box: SecretBox, clientId: String) throws -> String {
        var fields = SealedFields()
        fields.append(connectionId)
        fields.append(payload)
        fields.append(redirectURIHash)
        fields.append(request)
        fields.append(authTime)
        fields.append(expiresAt)
        fields.append(nonce)
        return try SealedValue.seal(fields, context: Self.context(clientId: clientId), with: box)
    }

    /// The code, if `text` is one this gateway sealed for `clientId` (it may have expired; the caller checks).
    static func open(_ text: String, clientId: String, with box: SecretBox) -> SealedAuthorizationCode? {
        guard var reader = SealedValue.open(text, context: context(clientId: clientId), maxLength: 8192, with: box),
              let connectionId = reader.string(), let payload = reader.payload(), let hash = reader.data(),
              let request = reader.openIDRequest(), let authTime = reader.date(), let expiresAt = reader.date(),
              let nonce = reader.data(), reader.isAtEnd, nonce.count == 16
        else { return nil }
        return SealedAuthorizationCode(
            connectionId: connectionId, payload: payload, redirectURIHash: hash, request: request, authTime: authTime,
            expiresAt: expiresAt, nonce: nonce)
    }
}

/// The access token of the OpenID flow: opaque to the client, sealed for the userinfo endpoint only, carrying what
/// userinfo answers (so the gateway stores no profile for it). It is worthless once it expires, once its code was
/// replayed (revoked under ``tokenId``), or once an erasure removed its connection.
struct SealedAccessToken: Sendable, Equatable {
    var tenantId: String
    var connectionId: String
    var payload: SignInPayload
    var scopes: [String]
    var expiresAt: Date
    /// The authorization code's nonce: what a replay of that code revokes.
    var tokenId: Data

    static let context = "oidc_access:v1"

    func seal(with box: SecretBox) throws -> String {
        var fields = SealedFields()
        fields.append(tenantId)
        fields.append(connectionId)
        fields.append(payload)
        fields.append(scopes.joined(separator: " "))
        fields.append(expiresAt)
        fields.append(tokenId)
        return try SealedValue.seal(fields, context: Self.context, with: box)
    }

    static func open(_ text: String, with box: SecretBox) -> SealedAccessToken? {
        guard var reader = SealedValue.open(text, context: context, maxLength: 8192, with: box),
              let tenantId = reader.string(), let connectionId = reader.string(), let payload = reader.payload(),
              let scopes = reader.string(), let expiresAt = reader.date(), let tokenId = reader.data(),
              reader.isAtEnd, tokenId.count == 16
        else { return nil }
        return SealedAccessToken(
            tenantId: tenantId, connectionId: connectionId, payload: payload,
            scopes: scopes.split(separator: " ").map(String.init), expiresAt: expiresAt, tokenId: tokenId)
    }
}

extension SealedFields {
    mutating func append(_ payload: SignInPayload) {
        append(payload.userId)
        append(payload.accountId)
        append(payload.appId)
        append(payload.test ? "1" : "0")
        let profile = payload.profile
        for value in [profile.name, profile.email, profile.nickname, profile.picture] { appendOptional(value) }
        appendOptional(profile.emailVerified.map { $0 ? "1" : "0" })
    }

    mutating func append(_ request: OpenIDRequest) {
        append(request.clientId)
        append(request.scopes.joined(separator: " "))
        appendOptional(request.nonce)
        appendOptional(request.codeChallenge)
    }
}

extension SealedFields.Reader {
    mutating func payload() -> SignInPayload? {
        guard let userId = string(), let accountId = string(), let appId = string(), let test = string(),
              let name = optionalString(), let email = optionalString(), let nickname = optionalString(),
              let picture = optionalString(), let verified = optionalString()
        else { return nil }
        return SignInPayload(
            userId: userId, accountId: accountId, appId: appId, test: test == "1",
            profile: .init(name: name, email: email, nickname: nickname, picture: picture,
                           emailVerified: verified.map { $0 == "1" }))
    }

    mutating func openIDRequest() -> OpenIDRequest? {
        guard let clientId = string(), let scopes = string(), let nonce = optionalString(),
              let challenge = optionalString()
        else { return nil }
        return OpenIDRequest(
            clientId: clientId, scopes: scopes.split(separator: " ").map(String.init), nonce: nonce,
            codeChallenge: challenge)
    }
}

/// PKCE (RFC 7636) with the one method RFC 9700 §2.1.1 leaves: S256.
enum PKCE {
    /// A `code_challenge` or `code_verifier` is 43 to 128 of `A-Z a-z 0-9 - . _ ~` (§4.1); an S256 challenge is the
    /// 43-character base64url of a SHA-256 digest.
    static func isWellFormed(_ value: String) -> Bool {
        (43...128).contains(value.utf8.count) && value.unicodeScalars.allSatisfy {
            ("A"..."Z").contains($0) || ("a"..."z").contains($0) || ("0"..."9").contains($0) || "-._~".unicodeScalars.contains($0)
        }
    }

    /// BASE64URL(SHA256(verifier)) == challenge, compared in constant time.
    static func verify(verifier: String, challenge: String) -> Bool {
        guard isWellFormed(verifier) else { return false }
        let computed = Base64URL.encode(Data(SHA256.hash(data: Data(verifier.utf8))))
        return BearerSecret.equalDigests(Array(computed.utf8), Array(challenge.utf8))
    }
}
