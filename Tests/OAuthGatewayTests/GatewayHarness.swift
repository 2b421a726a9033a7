import AsyncHTTPClient
import AtlassianClient
import Contracts
import Foundation
import Logging
import Messaging
import NIOCore
import NIOHTTP1
import Prometheus
import ServiceKit
import ServiceLifecycle
import Synchronization
import TestSupport

@testable import oauth_gateway

/// What the HTTP client saw: status, headers and body as text.
struct HTTPAnswer: Sendable {
    var status: Int
    var headers: HTTPHeaders
    var body: String

    var location: String? { headers.first(name: "location") }
    var json: [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any]) ?? [:]
    }
}

/// The sandbox as a process, the gateway in-process over a real SQLite file and the dev broker, and a client that
/// never follows redirects, so each hop of the sign-in flow is visible.
struct GatewayHarness: GatewayRequests {
    static let adminToken = "admin-token-0123456789"
    static let internalToken = "internal-token-0123456789"
    static let sharedAppId = "shared-test-app"
    static let sharedAppSecret = "shared-app-secret-9f8e7d"

    let sandbox: SandboxProcess
    let kafka: KafkaFixture
    let namespace: String
    let dataDirectory: TemporaryDirectory
    var directory: URL { dataDirectory.url }
    let masterKey: String
    /// Held for the harness's lifetime, so no parallel test picks it while a gateway restarts (see `ReservedPort`).
    let reservedPort: SandboxProcess.ReservedPort
    var port: Int { reservedPort.port }
    /// The internal listener's (reporting-token API, metrics), reserved likewise.
    let reservedInternalPort: SandboxProcess.ReservedPort
    var internalURL: String { "http://127.0.0.1:\(reservedInternalPort.port)" }
    let logs: RecordedLogs
    let http: HTTPClient

    var gatewayURL: String { "http://127.0.0.1:\(port)" }
    var sandboxURL: String { sandbox.baseURL.absoluteString.hasSuffix("/") ? String(sandbox.baseURL.absoluteString.dropLast()) : sandbox.baseURL.absoluteString }
    var callbackURL: String { gatewayURL + SignInRoutes.callbackPath }
    var topics: LetheTopics { LetheTopics(namespace: namespace) }

    func environment(extra: [String: String] = [:]) -> [String: String] {
        [
            "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrapServers, "LETHE_DATA_DIR": directory.path,
            "HTTP_PORT": String(port), "HTTP_INTERNAL_PORT": String(reservedInternalPort.port),
            "LETHE_GATEWAY_URL": gatewayURL, "LETHE_TOPIC_NAMESPACE": namespace,
            "KAFKA_TOPIC_PARTITIONS": "3", "ATLASSIAN_AUTH_URL": sandboxURL, "ATLASSIAN_API_URL": sandboxURL,
            "LETHE_ADMIN_TOKEN": Self.adminToken, "LETHE_INTERNAL_TOKEN": Self.internalToken,
            "LETHE_MASTER_KEY": masterKey, "LETHE_SHARED_APP_CLIENT_ID": Self.sharedAppId,
            "LETHE_SHARED_APP_CLIENT_SECRET": Self.sharedAppSecret,
        ].merging(extra) { $1 }
    }

    /// Starts the sandbox and the gateway, runs `body`, and stops both whatever happens.
    static func run<T: Sendable>(_ body: @Sendable (GatewayHarness, OAuthGatewayParts) async throws -> T) async throws -> T {
        try await setUp { harness in try await harness.withGateway { parts in try await body(harness, parts) } }
    }

    /// Starts the sandbox and prepares a data directory, runs `body` (which starts gateways with ``withGateway``), and
    /// stops everything whatever happens.
    static func setUp<T: Sendable>(_ body: @Sendable (GatewayHarness) async throws -> T) async throws -> T {
        let sandbox = try await SandboxProcess.start()
        var configuration = HTTPClient.Configuration()
        configuration.redirectConfiguration = .disallow
        let harness = GatewayHarness(
            sandbox: sandbox, kafka: try KafkaFixture("oauth-gateway"), namespace: uniqueName("gw"),
            dataDirectory: try TemporaryDirectory("gateway-tests"), masterKey: Data((0..<32).map { _ in UInt8.random(in: 0...255) }).base64EncodedString(),
            reservedPort: try SandboxProcess.ReservedPort(), reservedInternalPort: try SandboxProcess.ReservedPort(),
            logs: RecordedLogs(),
            http: HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration))
        defer {
            harness.reservedPort.release()
            harness.reservedInternalPort.release()
        }
        do {
            let result = try await body(harness)
            try? await harness.http.shutdown()
            await sandbox.stop()
            return result
        } catch {
            try? await harness.http.shutdown()
            await sandbox.stop()
            throw error
        }
    }

    /// Runs a gateway (a fresh process's worth of state over the same SQLite file) for the duration of `body`.
    func withGateway<T: Sendable>(
        environment extra: [String: String] = [:], _ body: @Sendable (OAuthGatewayParts) async throws -> T
    ) async throws -> T {
        let logs = self.logs
        var logger = Logger(label: "oauth-gateway") { logs.handler(label: $0) }
        logger.logLevel = .trace
        let config = try OAuthGatewayConfig(reader: ConfigReader(environment: environment(extra: extra)))
        let parts = try await buildOAuthGateway(
            config: config, logger: logger, registry: PrometheusCollectorRegistry(), handleSignals: false)
        // Set when the service group ends on its own (a service failed to start): readiness stops waiting then.
        let failure = Mutex<(any Error)?>(nil)
        let task = Task {
            do {
                try await parts.group.run()
            } catch {
                failure.withLock { $0 = error }
                throw error
            }
        }
        do {
            let lastAnswer = Mutex("nothing answered")
            let ready = await eventually(timeout: .seconds(20)) {
                if failure.withLock({ $0 }) != nil { return true }
                do {
                    let answer = try await request(.GET, "/health/ready", timeout: .seconds(5))
                    lastAnswer.withLock { $0 = "\(answer.status) \(answer.body)" }
                    return answer.status == 200
                } catch {
                    lastAnswer.withLock { $0 = "\(error)" }
                    return false
                }
            }
            if let error = failure.withLock({ $0 }) {
                throw HarnessError(description: "the gateway on port \(port) failed to start: \(error)")
            }
            guard ready else {
                // Say why: a service that failed to start ends the group with its error.
                await parts.group.triggerGracefulShutdown()
                let ended: String
                do {
                    try await task.value
                    ended = "the service group returned"
                } catch {
                    ended = "the service group failed: \(error)"
                }
                throw HarnessError(description: "the gateway on port \(port) did not become ready in 20 s; last "
                    + "/health/ready: \(lastAnswer.withLock { $0 }); \(ended)")
            }
            let result = try await body(parts)
            await parts.group.triggerGracefulShutdown()
            _ = try? await task.value
            return result
        } catch {
            await parts.group.triggerGracefulShutdown()
            _ = try? await task.value
            throw error
        }
    }

    // MARK: HTTP

    func perform(_ method: HTTPMethod, _ url: String, headers: [(String, String)], body: String?) async throws
        -> HTTPAnswer
    {
        try await request(method, url, headers: headers, body: body)
    }

    func request(
        _ method: HTTPMethod, _ url: String, headers: [(String, String)] = [], body: String? = nil,
        timeout: TimeAmount = .seconds(30)
    ) async throws -> HTTPAnswer {
        var request = HTTPClientRequest(url: url.hasPrefix("http") ? url : gatewayURL + url)
        request.method = method
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let body { request.body = .bytes(ByteBuffer(string: body)) }
        let response = try await http.execute(request, timeout: timeout)
        let bytes = try await response.body.collect(upTo: 1 << 20)
        return HTTPAnswer(status: Int(response.status.code), headers: response.headers, body: String(buffer: bytes))
    }

    // MARK: Scenario steps

    /// Registers an app in the sandbox with the gateway's callback.
    func sandboxApp(_ clientId: String, secret: String) async throws {
        try await sandboxControl.registerApp(clientId: clientId, clientSecret: secret, callbackURL: callbackURL)
    }

    /// The sandbox's control API.
    var sandboxControl: SandboxControl { SandboxControl(baseURL: sandboxURL, http: http) }

    /// The tenant's own app, registered in the sandbox and at the gateway.
    func ownApp(_ tenant: TestTenant, clientId: String, secret: String) async throws {
        try await sandboxApp(clientId, secret: secret)
        let answer = try await send(
            .PUT, "/v1/tenants/\(tenant.id)/app", bearer: tenant.token,
            json: ["clientId": clientId, "clientSecret": secret, "callbackUrl": callbackURL])
        guard answer.status == 200 else { throw HarnessError(description: "app: \(answer.status) \(answer.body)") }
    }

    func sharedApp(_ tenant: TestTenant) async throws {
        let answer = try await send(.PUT, "/v1/tenants/\(tenant.id)/app", bearer: tenant.token, json: ["shared": true])
        guard answer.status == 200 else { throw HarnessError(description: "shared app: \(answer.status) \(answer.body)") }
    }

    func sandboxUser(_ accountId: String, name: String, email: String) async throws {
        try await sandboxControl.addUser(
            accountId, profile: ["name": name, "email": email, "nickname": name.lowercased()])
    }

    /// Follows the browser's hops by hand up to the gateway's callback URL (not requested): sign-in start → sandbox
    /// authorize (consenting as `accountId`) → the callback URL Atlassian would send the browser to.
    func callbackURL(tenant: String, accountId: String, returnURL: String = "https://tenant.example/return",
                     state: String = "tenant-state-1") async throws -> String {
        let start = try await get(
            "/v1/tenants/\(tenant)/signin/atlassian?redirect_uri=\(FormFields.encode(returnURL))&state=\(state)")
        guard start.status == 302, let authorize = start.location else {
            throw HarnessError(description: "sign-in start: \(start.status) \(start.body)")
        }
        let consent = try await get(authorize + "&sandbox_user=\(accountId)")
        guard consent.status == 302, let callback = consent.location else {
            throw HarnessError(description: "authorize: \(consent.status) \(consent.body)")
        }
        return callback
    }

    /// A whole sign-in: returns the query the tenant's return URL received.
    func signIn(tenant: String, accountId: String, state: String = "tenant-state-1") async throws -> [String: String] {
        let callback = try await callbackURL(tenant: tenant, accountId: accountId, state: state)
        let answer = try await get(callback)
        guard answer.status == 302, let back = answer.location else {
            throw HarnessError(description: "callback: \(answer.status) \(answer.body)")
        }
        return Self.query(of: back)
    }

    /// Signs in and exchanges the code: the exchange response.
    func signInAndExchange(_ tenant: TestTenant, accountId: String) async throws -> [String: Any] {
        let query = try await signIn(tenant: tenant.id, accountId: accountId)
        guard let code = query["code"] else { throw HarnessError(description: "no code: \(query)") }
        let answer = try await send(.POST, "/v1/signin/exchange", bearer: tenant.token, json: ["code": code])
        guard answer.status == 200 else { throw HarnessError(description: "exchange: \(answer.status) \(answer.body)") }
        return answer.json
    }

    /// The sandbox's token call log for an app: how many code exchanges and refreshes it answered.
    func tokenCalls(_ clientId: String) async throws -> (exchanges: Int, refreshes: Int) {
        let calls = try await get(sandboxURL + "/_sandbox/token-calls?clientId=\(clientId)").json["calls"] as? [[String: Any]] ?? []
        return (calls.filter { $0["grantType"] as? String == "authorization_code" }.count,
                calls.filter { $0["grantType"] as? String == "refresh_token" }.count)
    }

    func reportingToken(_ appId: String, exclude: [String] = []) async throws -> HTTPAnswer {
        try await send(.POST, internalURL + "/internal/v1/apps/\(appId)/reporting-token", bearer: Self.internalToken,
                       json: ["exclude": exclude])
    }

    /// A URL's query as a browser's page would read it (form decoding: `+` is a space).
    static func query(of url: String) -> [String: String] {
        FormFields(decoding: URLComponents(string: url)?.percentEncodedQuery ?? "").firstValues
    }

    /// The SQLite file and its WAL, as bytes.
    func databaseBytes() -> Data {
        var data = Data()
        for suffix in ["", "-wal"] {
            data.append((try? Data(contentsOf: directory.appendingPathComponent("oauth-gateway.sqlite\(suffix)"))) ?? Data())
        }
        return data
    }
}

extension Data {
    func contains(_ text: String) -> Bool { range(of: Data(text.utf8)) != nil }
}
