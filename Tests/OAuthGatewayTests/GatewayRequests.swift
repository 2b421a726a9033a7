import Foundation
import NIOHTTP1

/// A tenant with a client secret and an access token.
struct TestTenant: Sendable {
    var id: String
    var secret: String
    var token: String
}

struct HarnessError: Error, CustomStringConvertible {
    var description: String
}

/// Requests to a gateway and the steps tests build from them, whatever carries them: the network to a running
/// gateway (``GatewayHarness``) or its router in-process (``GatewayRoutes``, no broker and no sandbox).
protocol GatewayRequests: Sendable {
    /// Sends one request (`url` a path, or absolute for the harness) and reads the whole answer.
    func perform(_ method: HTTPMethod, _ url: String, headers: [(String, String)], body: String?) async throws
        -> HTTPAnswer
}

extension GatewayRequests {
    func get(_ url: String, bearer: String? = nil) async throws -> HTTPAnswer {
        try await perform(.GET, url, headers: bearer.map { [("authorization", "Bearer \($0)")] } ?? [], body: nil)
    }

    func send(_ method: HTTPMethod, _ url: String, bearer: String?, json: Any) async throws -> HTTPAnswer {
        var headers = [("content-type", "application/json")]
        if let bearer { headers.append(("authorization", "Bearer \(bearer)")) }
        let body = String(decoding: try JSONSerialization.data(withJSONObject: json), as: UTF8.self)
        return try await perform(method, url, headers: headers, body: body)
    }

    /// `POST /oauth/token` with a form body.
    func token(form: String, headers: [(String, String)] = []) async throws -> HTTPAnswer {
        try await perform(
            .POST, "/oauth/token", headers: [("content-type", "application/x-www-form-urlencoded")] + headers, body: form)
    }

    /// Creates `id` with the operator's token, gets its access token and sets its return URL and policy.
    func createTenant(_ id: String, returnURL: String = "https://tenant.example/return", policy: String = "delete")
        async throws -> TestTenant
    {
        let created = try await send(.POST, "/v1/tenants", bearer: GatewayHarness.adminToken, json: ["tenantId": id])
        guard created.status == 201, let secret = created.json["clientSecret"] as? String else {
            throw HarnessError(description: "create tenant: \(created.status) \(created.body)")
        }
        let token = try await tenantToken(id, secret: secret)
        let settings = try await send(
            .PUT, "/v1/tenants/\(id)/settings", bearer: token, json: ["returnUrls": [returnURL], "erasurePolicy": policy])
        guard settings.status == 200 else { throw HarnessError(description: "settings: \(settings.status) \(settings.body)") }
        return TestTenant(id: id, secret: secret, token: token)
    }

    func tenantToken(_ id: String, secret: String) async throws -> String {
        let answer = try await token(form: "grant_type=client_credentials&client_id=\(id)&client_secret=\(secret)")
        guard answer.status == 200, let token = answer.json["access_token"] as? String else {
            throw HarnessError(description: "token: \(answer.status) \(answer.body)")
        }
        return token
    }
}
