import Contracts
import Foundation
import Hummingbird
import ServiceKit

extension GatewayAPI {
    // MARK: Sign-in

    /// The sign-in flow: the tenant's redirect to Atlassian, Atlassian's callback, and the tenant's code exchange.
    static func addSignInRoutes(to router: Router<LetheRequestContext>, gateway: Gateway, issuer: String) {
        router.get("/v1/tenants/:tenant/signin/atlassian") { request, context -> Response in
            let tenantId = try context.parameters.require("tenant")
            if let retryAfter = overLimit(
                "authorize", client: tenantId, request: request, context: context, gateway: gateway)
            {
                throw tooManyRequests(retryAfter)
            }
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
            } catch Gateway.SignInError.disabledTenant {
                throw HTTPError(.forbidden, message: "the tenant is disabled")
            } catch Gateway.SignInError.returnURLNotAllowed {
                throw HTTPError(.badRequest, message: "redirect_uri is not one of the tenant's return URLs")
            } catch Gateway.SignInError.noApp {
                throw HTTPError(.badRequest, message: "the tenant has no Atlassian app configured")
            }
        }

        router.get(RouterPath(stringLiteral: SignInRoutes.callbackPath)) { request, context -> Response in
            // Per address only: the browser coming back from Atlassian has no client of ours to name.
            if let retryAfter = overLimit("authorize", client: nil, request: request, context: context, gateway: gateway) {
                throw tooManyRequests(retryAfter)
            }
            do {
                return Self.redirect(try await gateway.completeSignIn(query: FormFields(query: request).firstValues))
            } catch Gateway.SignInError.badState {
                throw HTTPError(.badRequest, message: "missing, unknown, expired or already used state")
            }
        }

        router.post("/v1/signin/exchange") { request, context -> Response in
            let claims = try await bearerTenant(request, gateway: gateway, issuer: issuer)
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
    }
}

/// Paths of the sign-in flow that other parts of the gateway refer to.
enum SignInRoutes {
    /// Where Atlassian sends the browser back; every app's registered callback URL is `<public URL>` + this.
    static let callbackPath = "/v1/signin/atlassian/callback"
}
