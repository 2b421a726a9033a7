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
    var disabled: Bool
    /// Atlassian scopes the operator allows this tenant beyond the required ones (the platform's apply as well).
    var allowedScopes: [String]
    var app: App?

    enum CodingKeys: String, CodingKey {
        case tenantId, returnUrls, erasurePolicy, deadlineDays, disabled, allowedScopes, app
    }

    /// Written by hand so that a tenant without an app shows `"app": null`, as documented, not a missing key.
    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(tenantId, forKey: .tenantId)
        try container.encode(returnUrls, forKey: .returnUrls)
        try container.encode(erasurePolicy, forKey: .erasurePolicy)
        try container.encode(deadlineDays, forKey: .deadlineDays)
        try container.encode(disabled, forKey: .disabled)
        try container.encode(allowedScopes, forKey: .allowedScopes)
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

extension StreamOverview: ResponseCodable {
    init(_ stream: StreamRecord, state: StreamDeliveryState) {
        self.init(
            tenantId: stream.tenantId, streamId: stream.streamId, method: stream.method.rawValue,
            endpointOrigin: stream.endpointURL.flatMap(URLComponents.init(string:)).flatMap { url in
                url.scheme.flatMap { scheme in
                    url.host.map { "\(scheme)://\($0)" + (url.port.map { ":\($0)" } ?? "") }
                }
            },
            status: stream.status.rawValue, reason: stream.reason, pending: state.pending, dead: state.dead,
            oldestPendingAt: state.oldestPendingAt.map(RFC3339.string(from:)), lastError: state.lastError,
            lastDeliveredAt: state.lastDeliveredAt.map(RFC3339.string(from:)))
    }
}

extension StreamOverviewList: ResponseCodable {}

/// A public OpenID client as the tenant API shows it.
struct PublicClientView: ResponseCodable {
    var clientId: String
    var redirectUris: [String]

    init(_ record: PublicClientRecord) {
        clientId = record.clientId
        redirectUris = record.redirectURIs
    }
}

struct PublicClientList: ResponseCodable {
    var clients: [PublicClientView]
}

struct RotatedKey: ResponseCodable {
    var kid: String
}

struct DataKeysView: ResponseCodable {
    struct Key: Codable {
        var id: Int
        var createdAt: String
        var active: Bool
    }

    var keys: [Key]
    var activeKeyId: Int
    /// Stored values still sealed under an older key; older keys are deleted an hour after this reaches 0.
    var pendingReseal: Int
}

struct RevokedKey: ResponseCodable {
    var revoked: String
    /// The key that signs from now on.
    var activeKid: String
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
/// tenant's own access token, the OpenID Provider, the token endpoint and JWKS, the sign-in flow; and, on the internal
/// listener only, the reporting-token route behind `LETHE_INTERNAL_TOKEN`. Every bad input is a 400 with the reason.
enum GatewayAPI {
    static let maxBody = 64 * 1024
    /// Cursors of `GET /v1/tenants` (kind `t`: another list's cursor is refused).
    static let tenantCursor = PageCursor(kind: "t")

    static func addRoutes(to router: Router<LetheRequestContext>, gateway: Gateway, adminToken: String, issuer: String) {
        addTokenRoutes(to: router, gateway: gateway)
        addOpenIDRoutes(to: router, gateway: gateway)
        addOperatorRoutes(to: router, gateway: gateway, adminToken: adminToken)
        addTenantRoutes(to: router, gateway: gateway, issuer: issuer)
        addAppRoutes(to: router, gateway: gateway, issuer: issuer)
        addPublicClientRoutes(to: router, gateway: gateway, issuer: issuer)
        addSignInRoutes(to: router, gateway: gateway, issuer: issuer)
        addSharedSignalsRoutes(to: router, gateway: gateway, issuer: issuer)
    }

    // MARK: Shared by the routes

    static func view(_ tenant: TenantRecord, gateway: Gateway) async throws -> TenantView {
        view(tenant, app: try await tenant.appId.asyncFlatMap { try await gateway.database.app($0) })
    }

    static func view(_ tenant: TenantRecord, app record: AppRecord?) -> TenantView {
        TenantView(
            tenantId: tenant.tenantId, returnUrls: tenant.returnURLs, erasurePolicy: tenant.erasurePolicy,
            deadlineDays: tenant.deadlineDays, disabled: tenant.disabled, allowedScopes: tenant.allowedScopes,
            app: record.map {
                .init(appId: $0.appId, shared: $0.shared, callbackUrl: $0.callbackURL, scopes: $0.scopes)
            })
    }

    /// The path's tenant, after checking the bearer is that tenant's access token (another tenant's: 404).
    static func authorizedTenant(
        _ request: Request, _ context: LetheRequestContext, gateway: Gateway, issuer: String
    ) async throws -> TenantRecord {
        let tenantId = try context.parameters.require("tenant")
        let claims = try await bearerTenant(request, gateway: gateway, issuer: issuer)
        guard claims.tenantId == tenantId, let tenant = try await gateway.database.tenant(tenantId) else {
            throw HTTPError(.notFound)
        }
        return tenant
    }

    /// The claims of the request's bearer token, a valid tenant access token; else 401 with its challenge.
    static func bearerTenant(_ request: Request, gateway: Gateway, issuer: String) async throws -> TenantAccessClaims {
        guard let token = BearerSecret.bearerToken(in: request),
              let claims = try await gateway.tenantClaims(String(token), issuer: issuer)
        else {
            throw HTTPError(.unauthorized, headers: [.wwwAuthenticate: "Bearer error=\"invalid_token\""],
                            message: "a valid tenant access token is required")
        }
        return claims
    }

    /// A discovery document (OpenID Connect, Shared Signals): built once at start, served as it is with a cache
    /// lifetime of five minutes.
    static func addDiscovery(
        _ path: RouterPath, _ document: [String: any Sendable], to router: Router<LetheRequestContext>
    ) {
        let options: JSONSerialization.WritingOptions = [.sortedKeys, .withoutEscapingSlashes]
        let body = (try? JSONSerialization.data(withJSONObject: document, options: options)) ?? Data()
        router.get(path) { _, _ -> Response in
            Response(
                status: .ok, headers: [.contentType: "application/json", .cacheControl: "max-age=300"],
                body: .init(byteBuffer: ByteBuffer(data: body)))
        }
    }

    static func created(_ value: some ResponseEncodable, _ request: Request, _ context: LetheRequestContext,
                        status: HTTPResponse.Status = .ok) throws -> Response {
        var response = try context.responseEncoder.encode(value, from: request, context: context)
        response.status = status
        response.headers[.cacheControl] = "no-store"
        return response
    }
}

extension Optional {
    /// `flatMap` with an async transform.
    func asyncFlatMap<U>(_ transform: (Wrapped) async throws -> U?) async rethrows -> U? {
        guard let value = self else { return nil }
        return try await transform(value)
    }
}
