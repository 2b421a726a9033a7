import Contracts
import Foundation
import Hummingbird
import NIOCore
import ServiceKit

extension GatewayAPI {
    // MARK: OpenID Provider

    /// Discovery, the authorization endpoint and userinfo (the token endpoint's `authorization_code` grant is with
    /// the other grant in GatewayAPI+Tokens). docs/oauth-gateway.md "OpenID Connect".
    static func addOpenIDRoutes(to router: Router<LetheRequestContext>, gateway: Gateway) {
        addDiscovery("/.well-known/openid-configuration", gateway.discoveryDocument(), to: router)

        // OIDC Core §3.1.2.1: the authorization endpoint takes GET and form POST alike.
        router.get("/oauth/authorize") { request, context -> Response in
            try authorize(FormFields(query: request), request: request, context: context, gateway: gateway)
        }
        router.post("/oauth/authorize") { request, context -> Response in
            try authorize(
                try await FormFields(body: request, upTo: maxBody), request: request, context: context, gateway: gateway)
        }

        router.get("/oauth/userinfo") { request, _ -> Response in try userInfo(request, gateway: gateway) }
        router.post("/oauth/userinfo") { request, _ -> Response in try userInfo(request, gateway: gateway) }
    }

    private static func authorize(
        _ query: FormFields, request: Request, context: LetheRequestContext, gateway: Gateway
    ) throws -> Response {
        if let retryAfter = overLimit(
            "authorize", client: query["client_id"] ?? "", request: request, context: context, gateway: gateway)
        {
            throw tooManyRequests(retryAfter)
        }
        do {
            return redirect(try gateway.authorize(query))
        } catch .badRequest(let reason) {
            throw HTTPError(.badRequest, message: reason)
        } catch .redirect(let location) {
            return redirect(location)
        } catch .unavailable {
            throw HTTPError(.serviceUnavailable, message: "the sign-in cannot start right now; try again")
        }
    }

    /// RFC 6750 §2.1 bearer in the header; 401 with `WWW-Authenticate` for anything but a usable access token.
    private static func userInfo(_ request: Request, gateway: Gateway) throws -> Response {
        guard let token = BearerSecret.bearerToken(in: request), let info = try gateway.userInfo(accessToken: String(token))
        else {
            throw HTTPError(.unauthorized, headers: [.wwwAuthenticate: "Bearer error=\"invalid_token\""],
                            message: "a valid access token is required")
        }
        let body = try JSONEncoder.sortedKeys.encode(info)
        return Response(
            status: .ok, headers: [.contentType: "application/json", .cacheControl: "no-store"],
            body: .init(byteBuffer: ByteBuffer(data: body)))
    }
}

extension JSONEncoder {
    fileprivate static var sortedKeys: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }
}
