import AtlassianClient
import Contracts
import Foundation
import JWTKit
import Logging
import Metrics
import ServiceKit

/// The gateway's behaviour, between the HTTP routes and the database: tenants and their credentials, the sign-in
/// flow, the token endpoint, reporting tokens and profile refresh. Routes only parse, authorize and render.
final class Gateway: Sendable {
    static let stateLifetime: TimeInterval = 600
    static let codeLifetime: TimeInterval = 60
    static let idTokenLifetime: TimeInterval = 600
    /// What every app's sign-in asks for, whatever the tenant adds (ATLASSIAN.md §1.3, §3.3): `read:me` for the
    /// profile the gateway stores, `offline_access` for the refresh token that keeps the connection — and so its
    /// reporting tokens — alive, and `report:personal-data`, without which Atlassian may refuse the PDR calls that
    /// storing the profile obliges the platform to make.
    static let requiredScopes = ["read:me", "offline_access", "report:personal-data"]

    /// The scopes an app's sign-in requests: the required ones, then the tenant's others in its order — only those
    /// `allowed` when given. Applied when a sign-in starts too, so an app registered before a scope became required
    /// asks for it from the next sign-in on, and one the operator no longer allows is not asked for.
    static func scopes(adding extra: [String], allowed: Set<String>? = nil) -> [String] {
        var scopes = requiredScopes
        for scope in extra where !scopes.contains(scope) && allowed?.contains(scope) != false { scopes.append(scope) }
        return scopes
    }

    /// The scopes `tenant` may add to the required ones: the platform's (`GATEWAY_ALLOWED_SCOPES`) and its own
    /// allow-list (set by the operator).
    func allowedScopes(of tenant: TenantRecord) -> Set<String> {
        Set(config.allowedScopes).union(tenant.allowedScopes)
    }

    let database: GatewayDatabase
    let box: SecretBox
    let signer: TokenSigner
    let vault: TokenVault
    let atlassian: any AtlassianAPI
    let config: OAuthGatewayConfig
    let logger: Logger
    let signIns = Counter(label: "lethe_gateway_signins_total")
    let refusedCallbacks = Counter(label: "lethe_gateway_callbacks_refused_total")
    /// Per client: authorization requests (and sign-in starts), and token requests, each in buckets of their own.
    let clientRate: RateLimiter
    /// Per client IP address (``clientAddresses``), across clients, likewise.
    let ipRate: RateLimiter
    let clientAddresses: ClientAddressResolver
    /// States whose callback is being handled here: a concurrent replay is refused before any token exchange, since
    /// the state's use is recorded only when the sign-in completes.
    let statesInFlight = InFlightNonces()

    init(config: OAuthGatewayConfig, database: GatewayDatabase, box: SecretBox, signer: TokenSigner,
         atlassian: any AtlassianAPI, logger: Logger) {
        self.config = config
        self.database = database
        self.box = box
        self.signer = signer
        self.atlassian = atlassian
        self.logger = logger
        self.clientRate = RateLimiter(
            perMinute: config.clientRatePerMinute, burst: max(1, config.clientRatePerMinute / 10))
        self.ipRate = RateLimiter(perMinute: config.ipRatePerMinute, burst: max(1, config.ipRatePerMinute / 10))
        self.clientAddresses = ClientAddressResolver(trustedProxies: config.trustedProxies)
        let shared = config.sharedApp
        self.vault = TokenVault(
            database: database, box: box, atlassian: atlassian,
            credentials: { [database, box] appId in
                try await Self.credentials(of: appId, database: database, box: box, shared: shared)
            },
            logger: logger)
    }

    var publicURL: String { config.publicURL }
    var sharedApp: OAuthGatewayConfig.SharedAppConfig? { config.sharedApp }

    // MARK: Apps

    struct UnknownApp: Error {}

    func credentials(of appId: String) async throws -> AtlassianAppCredentials {
        try await Self.credentials(of: appId, database: database, box: box, shared: config.sharedApp)
    }

    private static func credentials(
        of appId: String, database: GatewayDatabase, box: SecretBox, shared: OAuthGatewayConfig.SharedAppConfig?
    ) async throws -> AtlassianAppCredentials {
        guard let app = try await database.app(appId) else { throw UnknownApp() }
        return try credentials(
            of: app, sealedSecret: app.shared ? nil : try await database.sealedSecret(of: appId), box: box,
            shared: shared)
    }

    /// The app's credentials from its record and sealed secret (the shared app's secret is configuration).
    static func credentials(
        of app: AppRecord, sealedSecret: Data?, box: SecretBox, shared: OAuthGatewayConfig.SharedAppConfig?
    ) throws -> AtlassianAppCredentials {
        if app.shared {
            guard let shared, shared.clientId == app.appId else { throw UnknownApp() }
            return AtlassianAppCredentials(
                clientId: app.appId, clientSecret: shared.clientSecret, redirectURI: app.callbackURL)
        }
        guard let sealedSecret else { throw UnknownApp() }
        let secret = try box.openString(sealedSecret, context: "app:\(app.appId):client_secret")
        return AtlassianAppCredentials(clientId: app.appId, clientSecret: secret, redirectURI: app.callbackURL)
    }

    /// Registers the tenant's own Atlassian app (its secret sealed) and makes it the tenant's app.
    func registerOwnApp(tenantId: String, clientId: String, clientSecret: String, callbackURL: String, scopes: [String])
        async throws -> TenantRecord
    {
        let app = AppRecord(
            appId: clientId, tenantId: tenantId, shared: false, callbackURL: callbackURL,
            scopes: Self.scopes(adding: scopes))
        return try await database.setApp(
            of: tenantId, app: app, sealedSecret: box.seal(clientSecret, context: "app:\(clientId):client_secret"))
    }

    /// Makes the platform's shared app the tenant's app.
    func useSharedApp(tenantId: String) async throws -> TenantRecord {
        guard let shared = config.sharedApp else { throw GatewayDatabase.TenantError.noSharedApp }
        let app = AppRecord(
            appId: shared.clientId, tenantId: nil, shared: true, callbackURL: shared.callbackURL, scopes: Self.requiredScopes)
        return try await database.setApp(of: tenantId, app: app, sealedSecret: nil)
    }

    // MARK: Tenants and the token endpoint

    /// Creates a tenant and returns its client secret, which is never shown again.
    func createTenant(_ tenantId: String) async throws -> String {
        let secret = OneTimeValue.make()
        try await database.createTenant(tenantId, secretHash: OneTimeValue.hash(secret))
        logger.info("tenant created", metadata: ["tenant": "\(tenantId)"])
        return secret
    }

    func replaceSecret(of tenantId: String) async throws -> String {
        let secret = OneTimeValue.make()
        try await database.replaceSecret(of: tenantId, secretHash: OneTimeValue.hash(secret))
        logger.info("tenant credentials replaced", metadata: ["tenant": "\(tenantId)"])
        return secret
    }

    /// Whether `secret` is the client secret of `client`, a confidential client of an enabled tenant (hashes
    /// compared in constant time).
    func authenticate(_ client: OpenIDClient, secret: String) -> Bool {
        guard !client.isPublic, !client.tenant.disabled, let stored = client.secretHash else { return false }
        return BearerSecret.equalDigests(stored, OneTimeValue.hash(secret))
    }

    /// The claims of a valid tenant access token whose tenant is enabled; nil otherwise. Other services verify these
    /// tokens against the JWKS alone, so there a disabled tenant's token lives out its lifetime (15 minutes at most).
    func tenantClaims(_ token: String, issuer: String) async throws -> TenantAccessClaims? {
        guard let claims = await signer.verifyTenantToken(token, issuer: issuer),
              try database.isEnabled(claims.tenantId)
        else { return nil }
        return claims
    }

    func setDisabled(_ tenantId: String, _ disabled: Bool) async throws -> TenantRecord {
        let tenant = try await database.setDisabled(tenantId, disabled)
        logger.info(disabled ? "tenant disabled" : "tenant enabled", metadata: ["tenant": "\(tenantId)"])
        return tenant
    }

    /// A tenant access token (`sub` = tenant, `aud` = lethe) and its lifetime in seconds.
    func tenantAccessToken(for tenantId: String) async throws -> (token: String, expiresIn: Int) {
        let now = Self.wholeSeconds()
        let claims = TenantAccessClaims(
            tenantId: tenantId, issuer: config.issuer, audience: TenantAuthConfig.audience, issuedAt: now,
            expiresAt: now.addingTimeInterval(config.tenantTokenLifetime))
        return (try await signer.sign(claims), Int(config.tenantTokenLifetime))
    }

    // MARK: The other services

    /// A valid access token of the app for PDR reporting: the owner connection first, then the most recently active
    /// healthy ones, skipping `excluding`. nil when no connection has a usable grant.
    func reportingToken(appId: String, excluding: Set<String>) async throws(VaultError) -> AccessGrant? {
        let candidates: [ConnectionRecord]
        do {
            candidates = try await database.reportingCandidates(appId: appId, excluding: excluding)
        } catch {
            throw .unavailable("database")
        }
        var lastError: VaultError?
        for candidate in candidates {
            do {
                return try await vault.accessToken(connectionId: candidate.connectionId)
            } catch .noGrant {
                continue
            } catch {
                lastError = error
            }
        }
        if let lastError { throw lastError }
        return nil
    }

    /// `updated`: fetch `/me` again for each tenant's connection of the account (refreshing its token first when it
    /// is about to expire) and publish the new profile. A lost grant becomes an erasure request inside the vault.
    /// Throws only for trouble worth retrying (Atlassian or SQLite unavailable).
    func refreshProfiles(_ status: AccountStatusReported) async throws {
        let connections = try await database.connections(
            appId: status.appId, accountId: status.accountId, tenantIds: status.tenantIds)
        for connection in connections where connection.state == .active {
            let profile: AtlassianProfile
            do {
                profile = try await fetchProfile(connectionId: connection.connectionId)
            } catch .noGrant {
                continue
            }
            guard profile.accountId == status.accountId else { continue }
            // Which fields changed, for the tenant's `profile-changed` event: against the digests kept at sign-in.
            let digests = ProfileDigests(profile)
            let previous = ProfileDigests.open(
                connection.profileDigestsSealed, with: box, connectionId: connection.connectionId)
            let published = try await database.profileRefreshed(
                ProfileFetched(
                    tenantId: connection.tenantId, appId: connection.appId, accountId: profile.accountId,
                    userId: connection.userId, name: profile.name, email: profile.email, nickname: profile.nickname,
                    picture: profile.picture,
                    fetchedAt: Date()),
                connectionId: connection.connectionId,
                digests: try digests.sealed(with: box, connectionId: connection.connectionId),
                changed: ProfileChange.between(previous, digests))
            guard published else {
                logger.info("profile refresh dropped: the connection was erased meanwhile", metadata: [
                    "tenant": "\(connection.tenantId)", "connection": "\(connection.connectionId)",
                ])
                continue
            }
            logger.info("profile refreshed after updated", metadata: [
                "tenant": "\(connection.tenantId)", "connection": "\(connection.connectionId)",
            ])
        }
    }

    /// `/me` with the connection's token. A 401 for a token that looked valid (expired early, or revoked) gets one
    /// refresh and one more try; the refresh decides whether the grant survives.
    private func fetchProfile(connectionId: String) async throws(VaultError) -> AtlassianProfile {
        var rejected: String?
        for attempt in 1...2 {
            let grant = try await vault.accessToken(connectionId: connectionId, minimumValidity: 60, rejected: rejected)
            do {
                return try await atlassian.me(accessToken: grant.accessToken)
            } catch AtlassianError.unauthorized where attempt == 1 {
                rejected = grant.accessToken
            } catch {
                throw .unavailable(Self.kind(of: error))
            }
        }
        throw .unavailable("access token refused after a refresh")
    }

    // MARK: Helpers

    /// Now, truncated to the second: JWT times are NumericDates, and some libraries refuse fractions.
    static func wholeSeconds() -> Date { Date(timeIntervalSince1970: Date().timeIntervalSince1970.rounded(.down)) }

    /// `url` with `parameters` appended to its query (nil values left out), percent-encoded. A string, not a URL:
    /// it goes straight into a `Location` header, and parsing it back costs more than building it.
    static func appendQuery(to url: String, _ parameters: [(String, String?)]) -> String {
        let query = FormFields.queryString(parameters)
        let separator = url.contains("?") ? (url.hasSuffix("?") || url.hasSuffix("&") ? "" : "&") : "?"
        return url + separator + query
    }

    /// An error's kind for a log line: Atlassian's typed errors carry no secrets; anything else only by type.
    static func kind(of error: any Error) -> String {
        (error as? AtlassianError).map { "\($0)" } ?? "\(type(of: error))"
    }
}
