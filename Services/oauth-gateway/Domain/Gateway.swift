import AtlassianClient
import Contracts
import Foundation
import JWTKit
import Logging
import Metrics
import ServiceKit
import Synchronization

/// What `POST /v1/signin/exchange` returns, and what a sign-in code carries until then (sealed, ≤ 60 s).
struct SignInPayload: Codable, Sendable, Equatable {
    struct Profile: Codable, Sendable, Equatable {
        var name: String?
        var email: String?
        var nickname: String?
        var picture: String?
    }

    var userId: String
    var accountId: String
    var appId: String
    var test: Bool
    var profile: Profile
}

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

    /// The scopes an app's sign-in requests: the required ones, then the tenant's others in its order. Applied when a
    /// sign-in starts too, so an app registered before a scope became required asks for it from the next sign-in on.
    static func scopes(adding extra: [String]) -> [String] {
        var scopes = requiredScopes
        for scope in extra where !scopes.contains(scope) { scopes.append(scope) }
        return scopes
    }

    let database: GatewayDatabase
    let box: SecretBox
    let signer: TokenSigner
    let vault: TokenVault
    let atlassian: any AtlassianAPI
    private let config: OAuthGatewayConfig
    private let logger: Logger
    private let signIns = Counter(label: "lethe_gateway_signins_total")
    private let refusedCallbacks = Counter(label: "lethe_gateway_callbacks_refused_total")
    /// States whose callback is being handled here: a concurrent replay is refused before any token exchange, since
    /// the state's use is recorded only when the sign-in completes.
    private let statesInFlight = InFlightNonces()

    init(config: OAuthGatewayConfig, database: GatewayDatabase, box: SecretBox, signer: TokenSigner,
         atlassian: any AtlassianAPI, logger: Logger) {
        self.config = config
        self.database = database
        self.box = box
        self.signer = signer
        self.atlassian = atlassian
        self.logger = logger
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

    /// What the tenant hears (RFC 6749 §4.1.2.1 codes) when Atlassian fails a sign-in after the user consented: a
    /// grant without `read:me` (403 from `/me`) is `access_denied` — retrying will not help, the user must consent
    /// again; Atlassian busy or unreachable (429, 5xx, no answer) is `temporarily_unavailable` — the user may try
    /// again; anything else is `server_error`.
    static func signInFailure(_ error: any Error) -> [(String, String?)] {
        switch error as? AtlassianError {
        case .forbidden?:
            return [("error", "access_denied"), ("error_description", "the Atlassian grant lacks read:me")]
        case .rateLimited?, .server?, .transport?:
            return [("error", "temporarily_unavailable"), ("error_description", "Atlassian is unavailable; try again")]
        default:
            return [("error", "server_error")]
        }
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
    private static func credentials(
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

    /// Whether `secret` is the tenant's client secret (hashes compared in constant time).
    func authenticateClient(_ clientId: String, secret: String) async throws -> Bool {
        guard let stored = try await database.secretHash(of: clientId) else { return false }
        return BearerSecret.equalDigests(stored, OneTimeValue.hash(secret))
    }

    /// A tenant access token (`sub` = tenant, `aud` = lethe) and its lifetime in seconds.
    func tenantAccessToken(for tenantId: String) async throws -> (token: String, expiresIn: Int) {
        let now = Self.wholeSeconds()
        let claims = TenantAccessClaims(
            tenantId: tenantId, issuer: config.issuer, audience: TenantAuthConfig.audience, issuedAt: now,
            expiresAt: now.addingTimeInterval(config.tenantTokenLifetime))
        return (try await signer.sign(claims), Int(config.tenantTokenLifetime))
    }

    // MARK: Sign-in

    enum SignInError: Error, Equatable {
        case unknownTenant
        case noApp
        case returnURLNotAllowed
        case badState
        case atlassian(String)
    }

    /// Step 1: checks the return URL and returns Atlassian's authorize URL with a sealed one-time state (nothing is
    /// stored: see ``SealedSignInState``).
    func startSignIn(tenantId: String, redirectURI: String, tenantState: String) throws -> URL {
        guard let (tenant, app) = try database.tenantAndAppNow(tenantId) else { throw SignInError.unknownTenant }
        guard tenant.returnURLs.contains(redirectURI) else { throw SignInError.returnURLNotAllowed }
        guard let app else { throw SignInError.noApp }
        let state = try SealedSignInState(
            tenantId: tenantId, appId: app.appId, returnURLHash: OneTimeValue.hash(redirectURI),
            tenantState: tenantState, expiresAt: Date().addingTimeInterval(Self.stateLifetime),
            nonce: SignInNonce.make()
        ).seal(with: box)
        return atlassian.authorizeURL(
            clientId: app.appId, redirectURI: app.callbackURL, scopes: Self.scopes(adding: app.scopes), state: state)
    }

    /// Step 2, Atlassian's redirect back: checks the state, exchanges the code with that app's credentials, fetches
    /// `/me`, stores the connection (recording the state's use), publishes the profile, and returns where to send the
    /// browser (the tenant's return URL with a sign-in code, or with an error). Throws ``SignInError/badState`` — and
    /// exchanges nothing — when the state is missing, forged, expired or already used (or in use by a concurrent
    /// callback), or its return URL is no longer the tenant's: then there is no trusted URL to go back to.
    func completeSignIn(query: [String: String]) async throws -> String {
        let now = Date()
        guard let raw = query["state"], let state = SealedSignInState.open(raw, with: box), state.expiresAt > now,
              statesInFlight.claim(state.nonce)
        else {
            refusedCallbacks.increment()
            throw SignInError.badState
        }
        defer { statesInFlight.release(state.nonce) }
        guard let context = try database.callbackContext(
                tenantId: state.tenantId, appId: state.appId, nonce: state.nonce),
              !context.nonceUsed,
              let redirectURI = context.returnURLs.first(where: { OneTimeValue.hash($0) == state.returnURLHash })
        else {
            refusedCallbacks.increment()
            throw SignInError.badState
        }
        let tenantId = state.tenantId
        let appId = state.appId
        /// The tenant hears of a sign-in that ended without one; the state is used up all the same.
        func fail(_ parameters: [(String, String?)]) async throws -> String {
            _ = try await database.recordNonce(state.nonce, expiresAt: state.expiresAt)
            return Self.appendQuery(to: redirectURI, parameters + [("state", state.tenantState)])
        }
        let code: String
        do {
            code = try AtlassianClient.parseCallback(query: query).code
        } catch AtlassianError.oauth(let error, let description, _) {
            // The user declined (or Atlassian refused): the tenant hears it, with Atlassian's description (its text, not
            // the user's: it names no one) and its own state.
            return try await fail([
                ("error", error == .accessDenied ? "access_denied" : "server_error"),
                ("error_description", description.map { String($0.prefix(Self.maxErrorDescription)) }),
            ])
        } catch {
            return try await fail([("error", "invalid_request")])
        }
        let app: AtlassianAppCredentials
        do {
            app = try Self.credentials(
                of: context.app, sealedSecret: context.sealedSecret, box: box, shared: config.sharedApp)
        } catch {
            logger.error("sign-in for an app that is no longer configured", metadata: ["app": "\(appId)"])
            return try await fail([("error", "server_error")])
        }
        let tokens: TokenResponse
        let profile: AtlassianProfile
        do {
            tokens = try await atlassian.exchangeCode(code, credentials: app)
            profile = try await atlassian.me(accessToken: tokens.accessToken)
        } catch {
            logger.warning("sign-in failed at Atlassian", metadata: [
                "tenant": "\(tenantId)", "app": "\(appId)", "error": "\(Self.kind(of: error))",
            ])
            return try await fail(Self.signInFailure(error))
        }
        guard AccountKey.isValidAccountId(profile.accountId) else { return try await fail([("error", "server_error")]) }
        let fetched = ProfileFetched(
            tenantId: tenantId, appId: appId, accountId: profile.accountId, name: profile.name,
            email: profile.email, nickname: profile.nickname, picture: profile.picture, fetchedAt: now)
        let test = context.app.shared
        let box = self.box
        let stored: GatewayDatabase.SignInResult
        do {
            stored = try await database.completeSignIn(
                tenantId: tenantId, appId: appId, accountId: profile.accountId, test: test, profile: fetched,
                stateNonce: state.nonce, stateExpiresAt: state.expiresAt,
                seal: { connectionId in
                    (
                        access: try box.seal(tokens.accessToken, context: TokenVault.context(connectionId, "access_token")),
                        refresh: try tokens.refreshToken.map {
                            try box.seal($0, context: TokenVault.context(connectionId, "refresh_token"))
                        }
                    )
                },
                accessExpiresAt: now.addingTimeInterval(TimeInterval(tokens.expiresIn)), now: now)
        } catch is GatewayDatabase.SuppressedAccount {
            logger.info("sign-in refused: the account was closed and erased", metadata: ["tenant": "\(tenantId)"])
            return try await fail([("error", "access_denied"), ("error_description", "account closed")])
        } catch is GatewayDatabase.StateUsed {
            // Another process completed this state first; this exchange's tokens are dropped unstored.
            refusedCallbacks.increment()
            throw SignInError.badState
        }
        signIns.increment()
        logger.info("signed in", metadata: [
            "tenant": "\(tenantId)", "app": "\(appId)", "connection": "\(stored.connectionId)",
        ])
        let signInCode = try SealedSignInCode(
            connectionId: stored.connectionId,
            payload: SignInPayload(
                userId: stored.userId, accountId: profile.accountId, appId: appId, test: test,
                profile: .init(name: profile.name, email: profile.email, nickname: profile.nickname,
                               picture: profile.picture)),
            expiresAt: now.addingTimeInterval(Self.codeLifetime), nonce: SignInNonce.make()
        ).seal(with: box, tenantId: tenantId)
        return Self.appendQuery(to: redirectURI, [("code", signInCode), ("state", state.tenantState)])
    }

    /// Step 3, the tenant's backend: the profile and an ID token for a sign-in code issued to `tenantId`.
    func exchange(code: String, tenantId: String) async throws -> (payload: SignInPayload, idToken: String)? {
        guard let found = SealedSignInCode.open(code, tenantId: tenantId, with: box), found.expiresAt > Date(),
              try await database.redeemCode(
                nonce: found.nonce, expiresAt: found.expiresAt, connectionId: found.connectionId,
                accountId: found.payload.accountId)
        else { return nil }
        let payload = found.payload
        let now = Self.wholeSeconds()
        let claims = IDTokenClaims(
            iss: IssuerClaim(value: config.issuer), aud: AudienceClaim(value: [tenantId]),
            sub: SubjectClaim(value: payload.userId), iat: IssuedAtClaim(value: now),
            exp: ExpirationClaim(value: now.addingTimeInterval(Self.idTokenLifetime)),
            atlassianAccountId: payload.accountId, name: payload.profile.name, email: payload.profile.email,
            picture: payload.profile.picture)
        return (payload, try await signer.sign(claims))
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
            let published = try await database.profileRefreshed(
                ProfileFetched(
                    tenantId: connection.tenantId, appId: connection.appId, accountId: profile.accountId,
                    userId: connection.userId, name: profile.name, email: profile.email, nickname: profile.nickname, picture: profile.picture,
                    fetchedAt: Date()),
                connectionId: connection.connectionId)
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
    /// Longest `error_description` passed on to a tenant: enough for any OAuth message, too short to carry a payload.
    static let maxErrorDescription = 256

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

/// Nonces being handled by this process, so the same one is never handled twice at once.
final class InFlightNonces: Sendable {
    private let nonces = Mutex(Set<Data>())

    /// False when the nonce is already being handled.
    func claim(_ nonce: Data) -> Bool { nonces.withLock { $0.insert(nonce).inserted } }

    func release(_ nonce: Data) { _ = nonces.withLock { $0.remove(nonce) } }
}
