import Contracts
import Foundation
import Hummingbird
import NIOCore
import ServiceKit

extension GatewayAPI {
    // MARK: Keys and tokens

    /// The JWKS that verifies the gateway's tokens, and the client-credentials token endpoint (tenant access tokens).
    static func addTokenRoutes(to router: Router<LetheRequestContext>, gateway: Gateway) {
        router.get("/.well-known/jwks.json") { _, _ -> Response in
            Response(
                status: .ok, headers: [.contentType: "application/json", .cacheControl: "max-age=300"],
                body: .init(byteBuffer: ByteBuffer(data: await gateway.signer.jwksDocument())))
        }

        router.post("/oauth/token") { request, context -> Response in
            let form = try await Self.formOrJSON(request)
            var clientId = form["client_id"]
            var clientSecret = form["client_secret"]
            if let basic = Self.basicCredentials(request) { (clientId, clientSecret) = basic }
            if let retryAfter = overLimit(
                "token", client: clientId ?? "", request: request, context: context, gateway: gateway)
            {
                return Self.oauthError(
                    .tooManyRequests, "too_many_requests", "retry in \(retryAfter) s", retryAfter: retryAfter)
            }
            let grantType = form["grant_type"]
            guard grantType == "client_credentials" || grantType == "authorization_code" else {
                return Self.oauthError(
                    .badRequest, "unsupported_grant_type", "grant_type must be authorization_code or client_credentials")
            }
            guard let clientId, !clientId.isEmpty, clientId.count <= 128,
                  let client = try gateway.database.openIDClientNow(clientId)
            else { return Self.oauthError(.unauthorized, "invalid_client", "unknown client or wrong secret") }
            if client.isPublic {
                // A public client has no secret (token_endpoint_auth_method none): PKCE proves it instead.
                guard clientSecret == nil, !client.tenant.disabled else {
                    return Self.oauthError(.unauthorized, "invalid_client", "unknown client or wrong secret")
                }
                guard grantType == "authorization_code" else {
                    return Self.oauthError(
                        .badRequest, "unauthorized_client", "a public client may only redeem authorization codes")
                }
            } else {
                guard let clientSecret, !clientSecret.isEmpty, gateway.authenticate(client, secret: clientSecret) else {
                    return Self.oauthError(.unauthorized, "invalid_client", "unknown client or wrong secret")
                }
            }
            if grantType == "authorization_code" {
                return try await Self.codeGrant(form, client: client, gateway: gateway)
            }
            let (token, expiresIn) = try await gateway.tenantAccessToken(for: clientId)
            return try Self.tokenResponse(TokenEndpointResponse(accessToken: token, expiresIn: expiresIn))
        }
    }

    /// `grant_type=authorization_code` (RFC 6749 §4.1.3, RFC 7636 §4.5): the OpenID flow's access and ID tokens.
    static func codeGrant(_ form: [String: String], client: OpenIDClient, gateway: Gateway) async throws -> Response {
        guard let code = form["code"], !code.isEmpty else {
            return oauthError(.badRequest, "invalid_request", "code is required")
        }
        do {
            let grant = try await gateway.grant(
                code: code, client: client, redirectURI: form["redirect_uri"], codeVerifier: form["code_verifier"])
            return try tokenResponse(TokenEndpointResponse(
                accessToken: grant.accessToken, expiresIn: grant.expiresIn, idToken: grant.idToken, scope: grant.scope))
        } catch let failure as Gateway.RequestFailure {
            return oauthError(.badRequest, failure.error, failure.description)
        }
    }

    /// A token endpoint's success (RFC 6749 §5.1): JSON, never cached.
    static func tokenResponse(_ fields: TokenEndpointResponse) throws -> Response {
        let body = try tokenEncoder.encode(fields)
        return Response(
            status: .ok, headers: [.contentType: "application/json", .cacheControl: "no-store"],
            body: .init(byteBuffer: ByteBuffer(data: body)))
    }

    /// Sorted keys: the same bytes for the same grant. A Codable value rather than `JSONSerialization`, whose number
    /// formatting alone was a visible share of a sign-in's CPU (bench/RESULTS.md, signin profile).
    private static let tokenEncoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }()

    // MARK: Internal

    /// Behind `LETHE_INTERNAL_TOKEN`: an Atlassian access token for pdr-reporter, from one of the app's connections.
    static func addInternalRoutes(to router: Router<LetheRequestContext>, gateway: Gateway, internalToken: String) {
        let internalSecret = BearerSecret(internalToken, realm: "internal token")

        router.post("/internal/v1/apps/:appId/reporting-token") { request, context -> Response in
            try internalSecret.require(request)
            let appId = try context.parameters.require("appId")
            struct Body: Decodable { var exclude: [String]? }
            let buffer = try await request.body.collect(upTo: maxBody)
            let body: Body
            if buffer.readableBytes == 0 {
                body = Body(exclude: nil)
            } else {
                do {
                    body = try JSONDecoder().decode(Body.self, from: Data(buffer: buffer))
                } catch {
                    throw HTTPError(.badRequest, message: "body must be JSON {\"exclude\": [connectionId…]}")
                }
            }
            let grant: AccessGrant?
            do {
                grant = try await gateway.reportingToken(appId: appId, excluding: Set(body.exclude ?? []))
            } catch {
                throw HTTPError(.serviceUnavailable, message: "no token available right now; retry later")
            }
            guard let grant else { throw HTTPError(.conflict, message: "the app has no connection with a usable grant") }
            return try created(
                ReportingTokenResponse(
                    accessToken: grant.accessToken, connectionId: grant.connectionId,
                    expiresAt: RFC3339.string(from: grant.expiresAt)),
                request, context)
        }
    }
}

/// The body of a token endpoint's success (RFC 6749 §5.1; OpenID Connect Core §3.1.3.3 adds `id_token`).
struct TokenEndpointResponse: Encodable {
    var accessToken: String
    var tokenType = "Bearer"
    var expiresIn: Int
    var idToken: String?
    var scope: String?

    init(accessToken: String, expiresIn: Int, idToken: String? = nil, scope: String? = nil) {
        self.accessToken = accessToken
        self.expiresIn = expiresIn
        self.idToken = idToken
        self.scope = scope
    }

    enum CodingKeys: String, CodingKey {
        case accessToken = "access_token", tokenType = "token_type", expiresIn = "expires_in", idToken = "id_token"
        case scope
    }
}
