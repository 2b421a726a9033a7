import AtlassianClient
import Contracts
import Foundation
import JWTKit
import Logging
import Metrics
import Synchronization

/// What `POST /v1/signin/exchange` returns, and what a sign-in code carries until then (sealed, ≤ 60 s).
struct SignInPayload: Codable, Sendable, Equatable {
    struct Profile: Codable, Sendable, Equatable {
        var name: String?
        var email: String?
        var nickname: String?
        var picture: String?
        /// Atlassian's `email_verified`; nil when `/me` did not say (ATLASSIAN.md §2: not confirmed), which the
        /// ID token's `email_verified` reads as false.
        var emailVerified: Bool?
    }

    var userId: String
    var accountId: String
    var appId: String
    var test: Bool
    var profile: Profile
}

extension Gateway {
    // MARK: Sign-in

    enum SignInError: Error, Equatable {
        case unknownTenant
        case disabledTenant
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
        guard !tenant.disabled else { throw SignInError.disabledTenant }
        guard let app else { throw SignInError.noApp }
        return try atlassianAuthorizeURL(
            tenant: tenant, app: app, redirectURI: redirectURI, tenantState: tenantState, openID: nil)
    }

    /// Atlassian's authorize URL for the app with the sealed state of a sign-in that returns to `redirectURI`
    /// (checked by the caller); `openID` is set for an OpenID Connect authorization request (the callback then issues
    /// an authorization code for that client).
    func atlassianAuthorizeURL(
        tenant: TenantRecord, app: AppRecord, redirectURI: String, tenantState: String, openID: OpenIDRequest?
    ) throws -> URL {
        let state = try SealedSignInState(
            tenantId: tenant.tenantId, appId: app.appId, returnURLHash: OneTimeValue.hash(redirectURI),
            tenantState: tenantState, expiresAt: Date().addingTimeInterval(Self.stateLifetime),
            nonce: SignInNonce.make(), openID: openID
        ).seal(with: box)
        return atlassian.authorizeURL(
            clientId: app.appId, redirectURI: app.callbackURL,
            scopes: Self.scopes(adding: app.scopes, allowed: allowedScopes(of: tenant)), state: state)
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
                tenantId: state.tenantId, appId: state.appId, nonce: state.nonce, clientId: state.openID?.clientId),
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
            return Self.appendQuery(to: redirectURI, parameters + responseParameters(state))
        }
        // Disabled while the user was at Atlassian: no token exchange for it.
        if context.tenantDisabled {
            return try await fail([("error", "access_denied"), ("error_description", "the client is disabled")])
        }
        let tokens: TokenResponse
        let profile: AtlassianProfile
        switch await signInAtAtlassian(query: query, context: context, tenantId: tenantId, appId: appId) {
        case .failed(let parameters): return try await fail(parameters)
        case .signedIn(let signedInTokens, let signedInProfile): (tokens, profile) = (signedInTokens, signedInProfile)
        }
        guard AccountKey.isValidAccountId(profile.accountId) else { return try await fail([("error", "server_error")]) }
        let test = context.app.shared
        let stored: GatewayDatabase.SignInResult
        do {
            stored = try await storeConnection(state: state, tokens: tokens, profile: profile, test: test, now: now)
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
        let payload = SignInPayload(
            userId: stored.userId, accountId: profile.accountId, appId: appId, test: test,
            profile: .init(name: profile.name, email: profile.email, nickname: profile.nickname,
                           picture: profile.picture, emailVerified: profile.emailVerified))
        let code = try signInCode(payload, connectionId: stored.connectionId, state: state, now: now)
        return Self.appendQuery(to: redirectURI, [("code", code)] + responseParameters(state))
    }

    /// What the tenant redeems (sealed, nothing stored): an OpenID authorization code for the client of an OpenID
    /// request, else a sign-in code for the tenant.
    private func signInCode(
        _ payload: SignInPayload, connectionId: String, state: SealedSignInState, now: Date
    ) throws -> String {
        let expiresAt = now.addingTimeInterval(Self.codeLifetime)
        if let openID = state.openID {
            return try SealedAuthorizationCode(
                connectionId: connectionId, payload: payload, redirectURIHash: state.returnURLHash,
                request: openID, authTime: now, expiresAt: expiresAt, nonce: SignInNonce.make()
            ).seal(with: box, clientId: openID.clientId)
        }
        return try SealedSignInCode(
            connectionId: connectionId, payload: payload, expiresAt: expiresAt, nonce: SignInNonce.make()
        ).seal(with: box, tenantId: state.tenantId)
    }

    /// What every redirect back to the tenant carries besides the code or the error: its `state` (omitted when an
    /// OpenID client sent none), and for an OpenID request the issuer (RFC 9207), so a client talking to several
    /// providers knows which one answered.
    private func responseParameters(_ state: SealedSignInState) -> [(String, String?)] {
        guard state.openID != nil else { return [("state", state.tenantState)] }
        return [("state", state.tenantState.isEmpty ? nil : state.tenantState), ("iss", config.issuer)]
    }

    /// How the Atlassian side of a callback ended: the user's tokens and profile, or what the tenant is told.
    private enum AtlassianSignIn {
        case signedIn(TokenResponse, AtlassianProfile)
        case failed([(String, String?)])
    }

    /// Atlassian's side of step 2: the code from the callback, exchanged with the app's credentials, then `/me`.
    private func signInAtAtlassian(
        query: [String: String], context: GatewayDatabase.CallbackContext, tenantId: String, appId: String
    ) async -> AtlassianSignIn {
        let code: String
        do {
            code = try AtlassianClient.parseCallback(query: query).code
        } catch AtlassianError.oauth(let error, let description, _) {
            // The user declined (or Atlassian refused): the tenant hears it, with Atlassian's description (its text, not
            // the user's: it names no one) and its own state.
            return .failed([
                ("error", error == .accessDenied ? "access_denied" : "server_error"),
                ("error_description", description.map { String($0.prefix(Self.maxErrorDescription)) }),
            ])
        } catch {
            return .failed([("error", "invalid_request")])
        }
        let app: AtlassianAppCredentials
        do {
            app = try Self.credentials(
                of: context.app, sealedSecret: context.sealedSecret, box: box, shared: config.sharedApp)
        } catch {
            logger.error("sign-in for an app that is no longer configured", metadata: ["app": "\(appId)"])
            return .failed([("error", "server_error")])
        }
        do {
            let tokens = try await atlassian.exchangeCode(code, credentials: app)
            let profile = try await atlassian.me(accessToken: tokens.accessToken)
            return .signedIn(tokens, profile)
        } catch {
            logger.warning("sign-in failed at Atlassian", metadata: [
                "tenant": "\(tenantId)", "app": "\(appId)", "error": "\(Self.kind(of: error))",
            ])
            return .failed(Self.signInFailure(error))
        }
    }

    /// Stores the connection with its tokens sealed, records the state's use and enqueues the profile: one
    /// transaction (``GatewayDatabase/completeSignIn``).
    private func storeConnection(
        state: SealedSignInState, tokens: TokenResponse, profile: AtlassianProfile, test: Bool, now: Date
    ) async throws -> GatewayDatabase.SignInResult {
        let fetched = ProfileFetched(
            tenantId: state.tenantId, appId: state.appId, accountId: profile.accountId, name: profile.name,
            email: profile.email, nickname: profile.nickname, picture: profile.picture, fetchedAt: now)
        let box = self.box
        return try await database.completeSignIn(
            tenantId: state.tenantId, appId: state.appId, accountId: profile.accountId, test: test, profile: fetched,
            stateNonce: state.nonce, stateExpiresAt: state.expiresAt,
            seal: { connectionId in
                (
                    access: try box.seal(tokens.accessToken, context: TokenVault.context(connectionId, "access_token")),
                    refresh: try tokens.refreshToken.map {
                        try box.seal($0, context: TokenVault.context(connectionId, "refresh_token"))
                    },
                    profile: try ProfileDigests(profile).sealed(with: box, connectionId: connectionId)
                )
            },
            accessExpiresAt: now.addingTimeInterval(TimeInterval(tokens.expiresIn)), now: now)
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

    /// Longest `error_description` passed on to a tenant: enough for any OAuth message, too short to carry a payload.
    static let maxErrorDescription = 256

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
}

/// Nonces being handled by this process, so the same one is never handled twice at once.
final class InFlightNonces: Sendable {
    private let nonces = Mutex(Set<Data>())

    /// False when the nonce is already being handled.
    func claim(_ nonce: Data) -> Bool { nonces.withLock { $0.insert(nonce).inserted } }

    func release(_ nonce: Data) { _ = nonces.withLock { $0.remove(nonce) } }
}
