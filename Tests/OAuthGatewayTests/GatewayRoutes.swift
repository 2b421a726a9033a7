import AsyncHTTPClient
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import NIOHTTP1
import ServiceKit
import TestSupport

@testable import oauth_gateway

/// The gateway's routes over a real SQLite file, served in-process through its router: no broker, no sandbox, no
/// port. For tests of what the HTTP API answers; the sign-in flow and Kafka use ``GatewayHarness``.
struct GatewayRoutes: GatewayRequests {
    let client: any TestClientProtocol
    let database: GatewayDatabase
    let gateway: Gateway

    /// Builds the gateway as `buildOAuthGateway` does (``makeGateway``) in a directory of its own, runs `body` against
    /// its router, and removes everything. `live`: over a real socket on a free port (requests then have a peer
    /// address, which per-IP limits need), not in-process.
    static func run<T: Sendable>(
        environment extra: [String: String] = [:], live: Bool = false, _ body: @Sendable (GatewayRoutes) async throws -> T
    ) async throws -> T {
        let directory = try TemporaryDirectory("gateway-routes")
        // Nothing here connects: no consumer or producer is made, and no route under test calls Atlassian.
        let unreachable = "http://127.0.0.1:9"
        let config = try OAuthGatewayConfig(reader: ConfigReader(environment: [
            "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9", "LETHE_DATA_DIR": directory.url.path,
            "LETHE_GATEWAY_URL": "http://gateway.test", "ATLASSIAN_AUTH_URL": unreachable,
            "ATLASSIAN_API_URL": unreachable, "LETHE_ADMIN_TOKEN": GatewayHarness.adminToken,
            "LETHE_INTERNAL_TOKEN": GatewayHarness.internalToken,
            "LETHE_MASTER_KEY": Data((0..<32).map { _ in UInt8.random(in: 0...255) }).base64EncodedString(),
        ].merging(extra) { $1 }))
        let database = try GatewayDatabase(path: directory.file("oauth-gateway.sqlite"), topics: config.standard.topics)
        let gateway = try await makeGateway(
            config: config, database: database, httpClient: .shared, logger: makeTestLogger("gateway-routes"))
        let router = Router(context: LetheRequestContext.self)
        router.add(middleware: RequestLogMiddleware())
        GatewayAPI.addRoutes(to: router, gateway: gateway, adminToken: config.adminToken, issuer: config.issuer)
        return try await Application(router: router).test(live ? .live : .router) { client in
            try await body(GatewayRoutes(client: client, database: database, gateway: gateway))
        }
    }

    /// The callback URL the gateway registers with Atlassian apps.
    var callbackURL: String { "http://gateway.test" + SignInRoutes.callbackPath }

    func perform(_ method: NIOHTTP1.HTTPMethod, _ url: String, headers: [(String, String)], body: String?)
        async throws -> HTTPAnswer
    {
        var fields = HTTPFields()
        for (name, value) in headers { fields.append(HTTPField(name: HTTPField.Name(name)!, value: value)) }
        return try await client.execute(
            uri: url, method: HTTPRequest.Method(method.rawValue)!, headers: fields,
            body: body.map { ByteBuffer(string: $0) }
        ) { response in
            HTTPAnswer(
                status: Int(response.status.code),
                headers: HTTPHeaders(response.headers.map { ($0.name.rawName, $0.value) }),
                body: String(buffer: response.body))
        }
    }
}
