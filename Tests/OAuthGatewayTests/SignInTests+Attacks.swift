import Contracts
import Foundation
import Testing
import TestSupport

@testable import oauth_gateway

/// The phases of ``SignInTests/attacksAreRefused()``.
extension SignInTests {
    /// Start: an unlisted return URL (or one that only starts like a listed one), a missing state, an unknown
    /// tenant — no redirect anywhere. `returnURL`: the listed one, form-encoded.
    static func expectTheStartRefused(_ harness: GatewayHarness, returnURL: String) async throws {
        let unlisted = try await harness.get(
            "/v1/tenants/acme/signin/atlassian?redirect_uri=\(FormFields.encode("https://evil.example/return"))&state=s")
        #expect(unlisted.status == 400 && unlisted.location == nil && unlisted.body.contains("return URLs"))
        let prefix = try await harness.get(
            "/v1/tenants/acme/signin/atlassian?redirect_uri=\(FormFields.encode("https://tenant.example/return/x"))&state=s")
        #expect(prefix.status == 400)
        #expect(try await harness.get("/v1/tenants/acme/signin/atlassian?redirect_uri=\(returnURL)").status == 400)
        #expect(try await harness.get("/v1/tenants/nobody/signin/atlassian?redirect_uri=\(returnURL)&state=s").status == 404)
    }

    /// Callback: with the real code from `callback`, a forged state, none, an expired one, the real one altered, and a
    /// sealed value of another purpose are all refused, without redirecting.
    static func expectBadStatesRefused(
        _ harness: GatewayHarness, parts: OAuthGatewayParts, callback: String
    ) async throws {
        let code = try #require(GatewayHarness.query(of: callback)["code"])
        let forged = try await harness.get(SignInRoutes.callbackPath + "?code=\(code)&state=forged")
        #expect(forged.status == 400 && forged.location == nil)
        #expect(try await harness.get(SignInRoutes.callbackPath + "?code=\(code)").status == 400)
        // A state sealed by this gateway but expired; the real state altered by one character; a sealed value of
        // another purpose (a sign-in code's box for the same tenant) presented as a state.
        let realState = try #require(GatewayHarness.query(of: callback)["state"])
        let expiredState = try SealedSignInState(
            tenantId: "acme", appId: "acme-app", returnURLHash: OneTimeValue.hash("https://tenant.example/return"),
            tenantState: "s", expiresAt: Date().addingTimeInterval(-1), nonce: SignInNonce.make()
        ).seal(with: parts.gateway.box)
        #expect(try await harness.get(SignInRoutes.callbackPath + "?code=\(code)&state=\(expiredState)").status == 400)
        var tampered = Array(realState)
        tampered[tampered.count / 2] = tampered[tampered.count / 2] == "A" ? "B" : "A"
        let tamperedAnswer = try await harness.get(SignInRoutes.callbackPath + "?code=\(code)&state=\(String(tampered))")
        #expect(tamperedAnswer.status == 400)
        let otherPurpose = try SealedSignInCode(
            connectionId: "c", payload: SignInPayload(userId: "u", accountId: "a", appId: "acme-app", test: false,
                                                      profile: .init()),
            expiresAt: Date().addingTimeInterval(60), nonce: SignInNonce.make()
        ).seal(with: parts.gateway.box, tenantId: "acme")
        let otherAnswer = try await harness.get(SignInRoutes.callbackPath + "?code=\(code)&state=\(otherPurpose)")
        #expect(otherAnswer.status == 400)
    }

    /// The sign-in code: another tenant cannot use it (and does not burn it), nor can a request without a token; it
    /// works once for its tenant; an exchange without a code is refused.
    static func expectTheCodeWorksOnceForItsTenant(
        _ harness: GatewayHarness, code signInCode: String, tenant acme: TestTenant, other: TestTenant
    ) async throws {
        let foreign = try await harness.send(.POST, "/v1/signin/exchange", bearer: other.token, json: ["code": signInCode])
        #expect(foreign.status == 400)
        #expect(try await harness.send(.POST, "/v1/signin/exchange", bearer: nil, json: ["code": signInCode]).status == 401)
        let exchanged = try await harness.send(.POST, "/v1/signin/exchange", bearer: acme.token, json: ["code": signInCode])
        #expect(exchanged.status == 200)
        let reused = try await harness.send(.POST, "/v1/signin/exchange", bearer: acme.token, json: ["code": signInCode])
        #expect(reused.status == 400 && reused.body.contains("invalid or expired code"))
        #expect(try await harness.send(.POST, "/v1/signin/exchange", bearer: acme.token, json: [:]).status == 400)
    }
}
