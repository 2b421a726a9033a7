import Contracts
import Foundation
import Hummingbird
import NIOCore
import ServiceKit

/// A tenant as the API shows it: settings and app, never a secret.
struct TenantView: ResponseCodable, Equatable {
    struct App: Codable, Equatable {
        var appId: String
        var shared: Bool
        var callbackUrl: String
        var scopes: [String]
    }

    var tenantId: String
    var returnUrls: [String]
    var erasurePolicy: ErasurePolicy
    var deadlineDays: Int
    var app: App?

    enum CodingKeys: String, CodingKey { case tenantId, returnUrls, erasurePolicy, deadlineDays, app }

    /// Written by hand so that a tenant without an app shows `"app": null`, as documented, not a missing key.
    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(tenantId, forKey: .tenantId)
        try container.encode(returnUrls, forKey: .returnUrls)
        try container.encode(erasurePolicy, forKey: .erasurePolicy)
        try container.encode(deadlineDays, forKey: .deadlineDays)
        try container.encode(app, forKey: .app)
    }
}

struct TenantCredentials: ResponseCodable {
    var tenantId: String
    var clientId: String
    var clientSecret: String
}

/// A page of tenants; `nextCursor` is absent on the last page.
struct TenantList: ResponseCodable {
    var tenants: [TenantView]
    var nextCursor: String?
}

struct RotatedKey: ResponseCodable {
    var kid: String
}

struct ExchangeResponse: ResponseCodable {
    var userId: String
    var accountId: String
    var appId: String
    var test: Bool
    var profile: SignInPayload.Profile
    var idToken: String
}

struct ReportingTokenResponse: ResponseCodable {
    var accessToken: String
    var connectionId: String
    var expiresAt: String
}

/// The gateway's HTTP API (docs/oauth-gateway.md): operator routes behind `LETHE_ADMIN_TOKEN`, tenant routes behind the
/// tenant's own access token, the token endpoint and JWKS, the sign-in flow, and the internal reporting-token route
/// behind `LETHE_INTERNAL_TOKEN`. Every bad input is a 400 with the reason.
enum GatewayAPI {
    static let maxBody = 64 * 1024
    /// Cursors of `GET /v1/tenants` (kind `t`: another list's cursor is refused).
    static let tenantCursor = PageCursor(kind: "t")

    static func addRoutes(to router: Router<BasicRequestContext>, gateway: Gateway, adminToken: String, internalToken: String,
                          issuer: String) {
        let admin = BearerSecret(adminToken, realm: "admin token")
        let tenantCursor = Self.tenantCursor
        let internalSecret = BearerSecret(internalToken, realm: "internal token")

        @Sendable func view(_ tenant: TenantRecord) async throws -> TenantView {
            view(tenant, app: try await tenant.appId.asyncFlatMap { try await gateway.database.app($0) })
        }

        @Sendable func view(_ tenant: TenantRecord, app record: AppRecord?) -> TenantView {
            TenantView(
                tenantId: tenant.tenantId, returnUrls: tenant.returnURLs, erasurePolicy: tenant.erasurePolicy,
                deadlineDays: tenant.deadlineDays,
                app: record.map {
                    .init(appId: $0.appId, shared: $0.shared, callbackUrl: $0.callbackURL, scopes: $0.scopes)
                })
        }

        /// The path's tenant, after checking the bearer is that tenant's access token (another tenant's: 404).
        @Sendable func authorizedTenant(_ request: Request, _ context: BasicRequestContext) async throws -> TenantRecord {
            let tenantId = try context.parameters.require("tenant")
            guard let token = BearerSecret.bearerToken(in: request),
                  let claims = await gateway.signer.verifyTenantToken(String(token), issuer: issuer)
            else {
                throw HTTPError(.unauthorized, headers: [.wwwAuthenticate: "Bearer error=\"invalid_token\""],
                                message: "a valid tenant access token is required")
            }
            guard claims.tenantId == tenantId, let tenant = try await gateway.database.tenant(tenantId) else {
                throw HTTPError(.notFound)
            }
            return tenant
        }

        @Sendable func created(_ value: some ResponseEncodable, _ request: Request, _ context: BasicRequestContext,
                     status: HTTPResponse.Status = .ok) throws -> Response {
            var response = try context.responseEncoder.encode(value, from: request, context: context)
            response.status = status
            response.headers[.cacheControl] = "no-store"
            return response
        }

        // MARK: Keys and tokens

        router.get("/.well-known/jwks.json") { _, _ -> Response in
            Response(
                status: .ok, headers: [.contentType: "application/json", .cacheControl: "max-age=300"],
                body: .init(byteBuffer: ByteBuffer(data: await gateway.signer.jwksDocument())))
        }

        router.post("/oauth/token") { request, _ -> Response in
            let form = try await Self.formOrJSON(request)
            var clientId = form["client_id"]
            var clientSecret = form["client_secret"]
            if let basic = Self.basicCredentials(request) { (clientId, clientSecret) = basic }
            guard form["grant_type"] == "client_credentials" else {
                return Self.oauthError(.badRequest, "unsupported_grant_type", "grant_type must be client_credentials")
            }
            guard let clientId, let clientSecret, !clientId.isEmpty, clientId.count <= 63, !clientSecret.isEmpty,
                  try await gateway.authenticateClient(clientId, secret: clientSecret)
            else { return Self.oauthError(.unauthorized, "invalid_client", "unknown client or wrong secret") }
            let (token, expiresIn) = try await gateway.tenantAccessToken(for: clientId)
            let body = try JSONSerialization.data(
                withJSONObject: ["access_token": token, "token_type": "Bearer", "expires_in": expiresIn], options: [.sortedKeys])
            return Response(
                status: .ok, headers: [.contentType: "application/json", .cacheControl: "no-store"],
                body: .init(byteBuffer: ByteBuffer(data: body)))
        }

        // MARK: Operator

        router.post("/v1/tenants") { request, context -> Response in
            try admin.require(request)
            struct Body: Decodable { var tenantId: String }
            let body = try await Self.decode(Body.self, request, reason: "body must be JSON {\"tenantId\": \"…\"}")
            guard Self.isValidTenantId(body.tenantId) else {
                throw HTTPError(.badRequest, message: "tenantId must be 1 to 63 of a-z, 0-9 and '-', not starting with '-'")
            }
            do {
                let secret = try await gateway.createTenant(body.tenantId)
                return try created(
                    TenantCredentials(tenantId: body.tenantId, clientId: body.tenantId, clientSecret: secret),
                    request, context, status: .created)
            } catch GatewayDatabase.TenantError.exists {
                throw HTTPError(.conflict, message: "tenant \(body.tenantId) exists")
            }
        }

        router.get("/v1/tenants") { request, _ -> TenantList in
            try admin.require(request)
            let query = FormFields(query: request)
            let limit = try PageCursor.parseLimit(query["limit"], default: 100, maximum: 500)
            let page = try await gateway.database.tenants(
                afterRow: try tenantCursor.parse(query["cursor"]), limit: limit)
            return TenantList(
                tenants: page.tenants.map { view($0.0, app: $0.1) },
                nextCursor: page.lastRow.map(tenantCursor.make(after:)))
        }

        router.post("/v1/tenants/:tenant/credentials") { request, context -> Response in
            try admin.require(request)
            let tenantId = try context.parameters.require("tenant")
            do {
                let secret = try await gateway.replaceSecret(of: tenantId)
                return try created(
                    TenantCredentials(tenantId: tenantId, clientId: tenantId, clientSecret: secret), request, context)
            } catch GatewayDatabase.TenantError.notFound {
                throw HTTPError(.notFound)
            }
        }

        router.post("/v1/signing-keys/rotate") { request, _ -> RotatedKey in
            try admin.require(request)
            return RotatedKey(kid: try await gateway.signer.rotate())
        }

        // MARK: Tenant

        router.get("/v1/tenants/:tenant") { request, context -> TenantView in
            try await view(try await authorizedTenant(request, context))
        }

        router.put("/v1/tenants/:tenant/settings") { request, context -> TenantView in
            let tenant = try await authorizedTenant(request, context)
            struct Body: Decodable {
                var returnUrls: [String]?
                var erasurePolicy: ErasurePolicy?
                var deadlineDays: Int?
            }
            let body = try await Self.decode(
                Body.self, request,
                reason: "body must be JSON {returnUrls?: [url], erasurePolicy?: delete|scrub|disassociate, deadlineDays?: 1…30}")
            if let urls = body.returnUrls {
                guard urls.count <= 20 else { throw HTTPError(.badRequest, message: "at most 20 return URLs") }
                for url in urls where !Self.isValidURL(url) {
                    throw HTTPError(.badRequest, message: "return URLs must be absolute http(s) URLs without a fragment")
                }
            }
            if let days = body.deadlineDays, !TenantConfigured.deadlineDaysRange.contains(days) {
                throw HTTPError(.badRequest, message: "deadlineDays must be between 1 and \(TenantConfigured.deadlineDaysRange.upperBound)")
            }
            return try await view(try await gateway.database.updateSettings(
                of: tenant.tenantId, returnURLs: body.returnUrls, policy: body.erasurePolicy, deadlineDays: body.deadlineDays))
        }

        router.put("/v1/tenants/:tenant/app") { request, context -> TenantView in
            let tenant = try await authorizedTenant(request, context)
            struct Body: Decodable {
                var shared: Bool?
                var clientId: String?
                var clientSecret: String?
                var callbackUrl: String?
                var scopes: [String]?
            }
            let body = try await Self.decode(
                Body.self, request,
                reason: "body must be JSON {clientId, clientSecret, callbackUrl, scopes?} or {shared: true}")
            do {
                if body.shared == true {
                    return try await view(try await gateway.useSharedApp(tenantId: tenant.tenantId))
                }
                guard let clientId = body.clientId, Self.isValidClientId(clientId) else {
                    throw HTTPError(.badRequest, message: "clientId must be 1 to 128 letters, digits, '.', '_' or '-'")
                }
                guard let secret = body.clientSecret, !secret.isEmpty, secret.count <= 1024 else {
                    throw HTTPError(.badRequest, message: "clientSecret is required")
                }
                // Atlassian sends the code to the app's registered callback, which must be this gateway's, or no
                // sign-in could ever complete: say so now rather than at the first user's sign-in.
                let expected = gateway.publicURL + SignInRoutes.callbackPath
                let callback = body.callbackUrl ?? expected
                guard callback == expected else {
                    throw HTTPError(.badRequest, message: "callbackUrl must be this gateway's callback, \(expected)")
                }
                // The tenant's scopes are added to the required ones (Gateway.requiredScopes), never instead of them.
                let scopes = body.scopes ?? []
                guard scopes.count <= 50,
                      scopes.allSatisfy({ !$0.isEmpty && !$0.contains(" ") && $0.count <= 100 })
                else { throw HTTPError(.badRequest, message: "scopes must be at most 50 non-empty strings without spaces") }
                return try await view(try await gateway.registerOwnApp(
                    tenantId: tenant.tenantId, clientId: clientId, clientSecret: secret, callbackURL: callback,
                    scopes: scopes))
            } catch GatewayDatabase.TenantError.appTaken {
                throw HTTPError(.conflict, message: "this Atlassian app is registered by another tenant")
            } catch GatewayDatabase.TenantError.noSharedApp {
                throw HTTPError(.conflict, message: "the platform has no shared Atlassian app configured")
            }
        }

        // MARK: Sign-in

        router.get("/v1/tenants/:tenant/signin/atlassian") { request, context -> Response in
            let tenantId = try context.parameters.require("tenant")
            let query = FormFields(query: request)
            guard let redirectURI = query["redirect_uri"], !redirectURI.isEmpty else {
                throw HTTPError(.badRequest, message: "redirect_uri is required")
            }
            // The tenant's CSRF protection (RFC 9700 §4.7): required, echoed back unchanged.
            guard let state = query["state"], !state.isEmpty, state.count <= 512 else {
                throw HTTPError(.badRequest, message: "state is required (1 to 512 characters)")
            }
            do {
                let url = try gateway.startSignIn(tenantId: tenantId, redirectURI: redirectURI, tenantState: state)
                return Self.redirect(url)
            } catch Gateway.SignInError.unknownTenant {
                throw HTTPError(.notFound, message: "unknown tenant")
            } catch Gateway.SignInError.returnURLNotAllowed {
                throw HTTPError(.badRequest, message: "redirect_uri is not one of the tenant's return URLs")
            } catch Gateway.SignInError.noApp {
                throw HTTPError(.badRequest, message: "the tenant has no Atlassian app configured")
            }
        }

        router.get(RouterPath(stringLiteral: SignInRoutes.callbackPath)) { request, _ -> Response in
            do {
                return Self.redirect(try await gateway.completeSignIn(query: FormFields(query: request).firstValues))
            } catch Gateway.SignInError.badState {
                throw HTTPError(.badRequest, message: "missing, unknown, expired or already used state")
            }
        }

        router.post("/v1/signin/exchange") { request, context -> Response in
            guard let token = BearerSecret.bearerToken(in: request),
                  let claims = await gateway.signer.verifyTenantToken(String(token), issuer: issuer)
            else {
                throw HTTPError(.unauthorized, headers: [.wwwAuthenticate: "Bearer error=\"invalid_token\""],
                                message: "a valid tenant access token is required")
            }
            let form = try await Self.formOrJSON(request)
            guard let code = form["code"], !code.isEmpty else { throw HTTPError(.badRequest, message: "code is required") }
            guard let result = try await gateway.exchange(code: code, tenantId: claims.tenantId) else {
                throw HTTPError(.badRequest, message: "invalid or expired code")
            }
            let p = result.payload
            return try created(
                ExchangeResponse(
                    userId: p.userId, accountId: p.accountId, appId: p.appId, test: p.test, profile: p.profile,
                    idToken: result.idToken),
                request, context)
        }

        // MARK: Internal

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

    // MARK: Parsing

    static func decode<T: Decodable>(_ type: T.Type, _ request: Request, reason: String) async throws -> T {
        let buffer = try await request.body.collect(upTo: maxBody)
        do {
            return try JSONDecoder().decode(T.self, from: Data(buffer: buffer))
        } catch {
            throw HTTPError(.badRequest, message: reason)
        }
    }

    /// A form (`application/x-www-form-urlencoded`) or flat JSON object body, as strings.
    static func formOrJSON(_ request: Request) async throws -> [String: String] {
        let buffer = try await request.body.collect(upTo: maxBody)
        let data = Data(buffer: buffer)
        let declaredJSON = request.headers[.contentType]?.lowercased().hasPrefix("application/json") == true
        if declaredJSON || data.first == UInt8(ascii: "{") {
            guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
                throw HTTPError(.badRequest, message: "body must be a JSON object")
            }
            return object.compactMapValues { $0 as? String }
        }
        return FormFields(decoding: String(decoding: data, as: UTF8.self)).firstValues
    }

    /// `Authorization: Basic base64(client_id:client_secret)` (RFC 6749 §2.3.1), if present.
    static func basicCredentials(_ request: Request) -> (String, String)? {
        guard let value = request.headers[.authorization], value.lowercased().hasPrefix("basic "),
              let data = Data(base64Encoded: String(value.dropFirst(6)).trimmingCharacters(in: .whitespaces)),
              let text = String(data: data, encoding: .utf8), let colon = text.firstIndex(of: ":")
        else { return nil }
        func decoded(_ part: Substring) -> String { String(part).removingPercentEncoding ?? String(part) }
        return (decoded(text[..<colon]), decoded(text[text.index(after: colon)...]))
    }

    /// An RFC 6749 §5.2 error body.
    static func oauthError(_ status: HTTPResponse.Status, _ error: String, _ description: String) -> Response {
        var headers: HTTPFields = [.contentType: "application/json", .cacheControl: "no-store"]
        if status == .unauthorized { headers[.wwwAuthenticate] = "Basic" }
        let body = #"{"error":"\#(error)","error_description":"\#(description)"}"#
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: body)))
    }

    static func redirect(_ url: URL) -> Response { redirect(url.absoluteString) }

    static func redirect(_ location: String) -> Response {
        Response(status: .found, headers: [.location: location, .cacheControl: "no-store"])
    }

    /// `lethe` is reserved: it is the audience of tenant access tokens, and an ID token's audience is its tenant.
    static func isValidTenantId(_ id: String) -> Bool {
        guard (1...63).contains(id.count), id.first != "-", id != TenantAuthConfig.audience else { return false }
        return id.unicodeScalars.allSatisfy { ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "-" }
    }

    static func isValidClientId(_ id: String) -> Bool {
        guard (1...128).contains(id.count) else { return false }
        return id.unicodeScalars.allSatisfy {
            ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0) || "._-".unicodeScalars.contains($0)
        }
    }

    static func isValidURL(_ text: String) -> Bool {
        guard text.count <= 2048, let url = URL(string: text), let scheme = url.scheme?.lowercased(),
              ["http", "https"].contains(scheme), url.host?.isEmpty == false, url.fragment == nil
        else { return false }
        return true
    }
}

/// Paths of the sign-in flow that other parts of the gateway refer to.
enum SignInRoutes {
    /// Where Atlassian sends the browser back; every app's registered callback URL is `<public URL>` + this.
    static let callbackPath = "/v1/signin/atlassian/callback"
}

extension Optional {
    /// `flatMap` with an async transform.
    func asyncFlatMap<U>(_ transform: (Wrapped) async throws -> U?) async rethrows -> U? {
        guard let value = self else { return nil }
        return try await transform(value)
    }
}
