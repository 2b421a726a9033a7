import Contracts
import Foundation
import Hummingbird
import ServiceKit

extension GatewayAPI {
    // MARK: Operator

    /// Behind `LETHE_ADMIN_TOKEN`: creating and listing tenants, replacing a tenant's secret, rotating the signing key,
    /// every tenant's Shared Signals stream and how its delivery stands.
    static func addOperatorRoutes(to router: Router<LetheRequestContext>, gateway: Gateway, adminToken: String) {
        let admin = BearerSecret(adminToken, realm: "admin token")
        let tenantCursor = Self.tenantCursor

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

        addTenantChangeRoutes(to: router, gateway: gateway, admin: admin)
        addOperatorKeyRoutes(to: router, gateway: gateway, admin: admin)
        addOperatorStreamRoutes(to: router, gateway: gateway, admin: admin)
    }

    /// A tenant's secret replaced, its allowed scopes set, the tenant disabled or enabled again.
    static func addTenantChangeRoutes(to router: Router<LetheRequestContext>, gateway: Gateway, admin: BearerSecret) {
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

        // Which Atlassian scopes the tenant may add to the required ones, beyond the platform's GATEWAY_ALLOWED_SCOPES.
        router.put("/v1/tenants/:tenant/allowed-scopes") { request, context -> TenantView in
            try admin.require(request)
            let tenantId = try context.parameters.require("tenant")
            struct Body: Decodable { var scopes: [String] }
            let body = try await Self.decode(Body.self, request, reason: "body must be JSON {scopes: [scope…]}")
            guard let scopes = validScopes(body.scopes) else { throw HTTPError(.badRequest, message: scopesRule) }
            do {
                return try await view(try await gateway.database.setAllowedScopes(of: tenantId, scopes), gateway: gateway)
            } catch GatewayDatabase.TenantError.notFound {
                throw HTTPError(.notFound)
            }
        }

        // Disabling refuses the tenant's sign-ins (new and in flight), its credentials at the token endpoint, its
        // access tokens here and its OpenID access tokens at userinfo, at once; enabling undoes it.
        for (action, disabled) in [("disable", true), ("enable", false)] {
            router.post(RouterPath(stringLiteral: "/v1/tenants/:tenant/\(action)")) { request, context -> TenantView in
                try admin.require(request)
                let tenantId = try context.parameters.require("tenant")
                do {
                    return try await view(try await gateway.setDisabled(tenantId, disabled), gateway: gateway)
                } catch GatewayDatabase.TenantError.notFound {
                    throw HTTPError(.notFound)
                }
            }
        }
    }

    /// The signing keys (rotate, revoke) and the data keys (list, rotate).
    static func addOperatorKeyRoutes(to router: Router<LetheRequestContext>, gateway: Gateway, admin: BearerSecret) {
        router.post("/v1/signing-keys/rotate") { request, _ -> RotatedKey in
            try admin.require(request)
            return RotatedKey(kid: try await gateway.signer.rotate())
        }

        router.post("/v1/data-keys/rotate") { request, _ -> DataKeysView in
            try admin.require(request)
            try gateway.box.rotate()
            return try await dataKeysView(gateway)
        }

        router.get("/v1/data-keys") { request, _ -> DataKeysView in
            try admin.require(request)
            return try await dataKeysView(gateway)
        }

        router.post("/v1/signing-keys/:kid/revoke") { request, context -> RevokedKey in
            try admin.require(request)
            let kid = try context.parameters.require("kid")
            guard let active = try await gateway.signer.revoke(kid: kid) else {
                throw HTTPError(.notFound, message: "no published signing key has this kid")
            }
            gateway.logger.warning("signing key revoked", metadata: ["kid": "\(kid)", "active_kid": "\(active)"])
            return RevokedKey(revoked: kid, activeKid: active)
        }
    }

    /// Every tenant's Shared Signals stream and how its delivery stands (the operator console reads it).
    static func addOperatorStreamRoutes(to router: Router<LetheRequestContext>, gateway: Gateway, admin: BearerSecret) {
        router.get("/v1/ssf/streams") { request, _ -> StreamOverviewList in
            try admin.require(request)
            var overviews: [StreamOverview] = []
            for stream in try await gateway.database.streams() {
                let state = try await gateway.database.streamDeliveryState(stream.streamId)
                overviews.append(StreamOverview(stream, state: state))
            }
            return StreamOverviewList(streams: overviews)
        }
    }

    static let scopesRule = "scopes must be at most 50 non-empty strings of at most 100 characters without spaces"

    /// `scopes` without duplicates, in order; nil when they break ``scopesRule``.
    static func validScopes(_ scopes: [String]) -> [String]? {
        guard scopes.count <= 50, scopes.allSatisfy({ !$0.isEmpty && !$0.contains(" ") && $0.count <= 100 }) else {
            return nil
        }
        var seen = Set<String>()
        return scopes.filter { seen.insert($0).inserted }
    }

    /// The data keys held and how many stored values still wait to be sealed under the active one.
    static func dataKeysView(_ gateway: Gateway) async throws -> DataKeysView {
        try gateway.box.reload()
        let active = gateway.box.activeKeyId
        var pending = 0
        for column in GatewayDatabase.sealedColumns {
            pending += try await gateway.database.countSealed(notUnder: active, in: column)
        }
        let keys = try await gateway.database.dataKeyAges().map {
            DataKeysView.Key(id: Int($0.id), createdAt: RFC3339.string(from: $0.createdAt), active: $0.id == active)
        }
        return DataKeysView(keys: keys, activeKeyId: Int(active), pendingReseal: pending)
    }

    // MARK: Tenant

    /// Behind the tenant's own access token: its settings.
    static func addTenantRoutes(to router: Router<LetheRequestContext>, gateway: Gateway, issuer: String) {
        router.get("/v1/tenants/:tenant") { request, context -> TenantView in
            let tenant = try await authorizedTenant(request, context, gateway: gateway, issuer: issuer)
            return try await view(tenant, gateway: gateway)
        }

        router.put("/v1/tenants/:tenant/settings") { request, context -> TenantView in
            let tenant = try await authorizedTenant(request, context, gateway: gateway, issuer: issuer)
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
                of: tenant.tenantId, returnURLs: body.returnUrls, policy: body.erasurePolicy, deadlineDays: body.deadlineDays),
                gateway: gateway)
        }
    }

    /// Behind the tenant's own access token: its public OpenID clients (browser and mobile apps: no secret, PKCE).
    static func addPublicClientRoutes(to router: Router<LetheRequestContext>, gateway: Gateway, issuer: String) {
        router.post("/v1/tenants/:tenant/public-clients") { request, context -> Response in
            let tenant = try await authorizedTenant(request, context, gateway: gateway, issuer: issuer)
            struct Body: Decodable { var redirectUris: [String] }
            let body = try await Self.decode(Body.self, request, reason: "body must be JSON {redirectUris: [url]}")
            guard (1...20).contains(body.redirectUris.count) else {
                throw HTTPError(.badRequest, message: "1 to 20 redirect URIs")
            }
            for url in body.redirectUris where !Self.isValidURL(url) {
                throw HTTPError(.badRequest, message: "redirect URIs must be absolute http(s) URLs without a fragment")
            }
            guard let client = try await gateway.database.createPublicClient(
                of: tenant.tenantId, redirectURIs: body.redirectUris)
            else {
                throw HTTPError(.conflict, message: "at most \(GatewayDatabase.maxPublicClients) public clients")
            }
            return try created(PublicClientView(client), request, context, status: .created)
        }

        router.get("/v1/tenants/:tenant/public-clients") { request, context -> PublicClientList in
            let tenant = try await authorizedTenant(request, context, gateway: gateway, issuer: issuer)
            return PublicClientList(clients: try await gateway.database.publicClients(of: tenant.tenantId).map(PublicClientView.init))
        }

        router.delete("/v1/tenants/:tenant/public-clients/:client") { request, context -> Response in
            let tenant = try await authorizedTenant(request, context, gateway: gateway, issuer: issuer)
            guard try await gateway.database.deletePublicClient(
                try context.parameters.require("client"), of: tenant.tenantId)
            else { throw HTTPError(.notFound) }
            return Response(status: .noContent)
        }
    }

    /// Behind the tenant's own access token: its Atlassian app, its own or the platform's shared one.
    static func addAppRoutes(to router: Router<LetheRequestContext>, gateway: Gateway, issuer: String) {
        router.put("/v1/tenants/:tenant/app") { request, context -> TenantView in
            let tenant = try await authorizedTenant(request, context, gateway: gateway, issuer: issuer)
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
                    return try await view(try await gateway.useSharedApp(tenantId: tenant.tenantId), gateway: gateway)
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
                // The tenant's scopes are added to the required ones (Gateway.requiredScopes), never instead of them,
                // and only those the operator allows (RFC 9700 §2.3: a client asks for no more than it needs).
                guard let scopes = validScopes(body.scopes ?? []) else {
                    throw HTTPError(.badRequest, message: scopesRule)
                }
                let allowed = gateway.allowedScopes(of: tenant).union(Gateway.requiredScopes)
                let refused = scopes.filter { !allowed.contains($0) }
                guard refused.isEmpty else {
                    throw HTTPError(.badRequest, message: "scopes not allowed for this tenant: "
                        + refused.joined(separator: " ") + " (ask the platform's operator to allow them)")
                }
                return try await view(try await gateway.registerOwnApp(
                    tenantId: tenant.tenantId, clientId: clientId, clientSecret: secret, callbackURL: callback,
                    scopes: scopes),
                    gateway: gateway)
            } catch GatewayDatabase.TenantError.appTaken {
                throw HTTPError(.conflict, message: "this Atlassian app is registered by another tenant")
            } catch GatewayDatabase.TenantError.noSharedApp {
                throw HTTPError(.conflict, message: "the platform has no shared Atlassian app configured")
            }
        }
    }
}
