import AsyncHTTPClient
import AtlassianClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import Prometheus
import ServiceLifecycle
import ServiceKit
import Testing
import TestSupport
@testable import atlassian_sandbox

/// A real sandbox on 127.0.0.1:<ephemeral port>, a real `HTTPClient`, and the `AtlassianClient` pointed at both
/// hosts of the sandbox — everything goes over HTTP, as in production. One per test, so tests never share state.
struct Sandbox: Sendable {
    let baseURL: String
    let http: HTTPClient
    let client: AtlassianClient
    let app = AtlassianAppCredentials(
        clientId: "lethe-test-app", clientSecret: "test-secret-0123456789",
        redirectURI: "https://tenant.example.com/oauth/atlassian/callback")

    static let scopes = ["read:me", "read:account", "offline_access", "report:personal-data"]

    /// Starts a sandbox, registers the test app, runs `body`, and stops everything whatever happens.
    static func run<T: Sendable>(
        settings: SandboxSettings = SandboxSettings(),
        requestTimeout: Duration = .seconds(10),
        _ body: @Sendable (Sandbox) async throws -> T
    ) async throws -> T {
        let (ports, continuation) = AsyncStream.makeStream(of: Int.self)
        var logger = Logger(label: "atlassian-sandbox-test")
        logger.logLevel = .warning
        let app = buildApplication(
            config: SandboxConfig(http: .init(host: "127.0.0.1", port: 0), seed: 7, settings: settings),
            logger: logger, registry: PrometheusCollectorRegistry(),
            onServerRunning: { continuation.yield($0) })

        let services = ServiceGroup(configuration: .init(services: [app], logger: logger))
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await services.run() }
            // Graceful shutdown (not cancellation) so the server closes cleanly, whatever the test did.
            defer { group.addTask { await services.triggerGracefulShutdown() } }
            let port = try await withTimeout(.seconds(10)) {
                guard let port = await ports.first(where: { _ in true }) else {
                    throw SandboxStartError()
                }
                return port
            }
            var httpConfig = HTTPClient.Configuration()
            httpConfig.redirectConfiguration = .disallow
            let http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: httpConfig)
            let baseURL = URL(string: "http://127.0.0.1:\(port)")!
            var clientLogger = Logger(label: "atlassian-client-test")
            clientLogger.logLevel = .warning
            let sandbox = Sandbox(
                baseURL: baseURL.absoluteString, http: http,
                client: AtlassianClient(
                    config: .init(authURL: baseURL, apiURL: baseURL, requestTimeout: requestTimeout),
                    httpClient: http, logger: clientLogger))
            let result: Result<T, any Error>
            do {
                try await sandbox.registerApp()
                result = .success(try await body(sandbox))
            } catch {
                result = .failure(error)
            }
            try? await http.shutdown()
            return try result.get()
        }
    }

    struct SandboxStartError: Error, CustomStringConvertible {
        var description: String { "the sandbox did not report a listening port" }
    }

    // MARK: Raw HTTP

    struct RawResponse: Sendable {
        var status: Int
        var headers: [String: String]
        var body: Data

        func json() throws -> [String: Any] {
            try #require(try JSONSerialization.jsonObject(with: body) as? [String: Any])
        }
    }

    func raw(
        _ method: HTTPMethod, _ path: String, json: Any? = nil, body: Data? = nil, contentType: String? = nil,
        bearer: String? = nil
    ) async throws -> RawResponse {
        var request = HTTPClientRequest(url: path.hasPrefix("http") ? path : baseURL + path)
        request.method = method
        if let bearer { request.headers.add(name: "Authorization", value: "Bearer \(bearer)") }
        var payload = body
        if let json { payload = try JSONSerialization.data(withJSONObject: json) }
        if let payload {
            request.headers.add(name: "Content-Type", value: contentType ?? "application/json")
            request.body = .bytes(ByteBuffer(bytes: payload))
        }
        let response = try await http.execute(request, timeout: .seconds(10))
        let buffer = try await response.body.collect(upTo: 1 << 20)
        var headers: [String: String] = [:]
        for header in response.headers { headers[header.name.lowercased()] = header.value }
        return RawResponse(status: Int(response.status.code), headers: headers, body: Data(buffer.readableBytesView))
    }

    /// The sandbox's control API.
    var sandboxControl: SandboxControl { SandboxControl(baseURL: baseURL, http: http) }

    /// A control call (`/_sandbox<path>`); throws unless it answers 2xx.
    @discardableResult
    func control(_ path: String, _ json: [String: Any] = [:]) async throws -> SandboxControl.Answer {
        try await sandboxControl.post(path, json)
    }

    // MARK: Scenario helpers

    func registerApp(_ credentials: AtlassianAppCredentials? = nil) async throws {
        let app = credentials ?? self.app
        try await sandboxControl.registerApp(
            clientId: app.clientId, clientSecret: app.clientSecret, callbackURL: app.redirectURI)
    }

    @discardableResult
    func addUser(_ accountId: String, extra: [String: Any] = [:]) async throws -> String {
        try await sandboxControl.addUser(accountId, profile: extra)
        return accountId
    }

    /// Follows `/authorize` by hand (no browser): the sandbox's 302 `Location`, parsed.
    func authorize(_ url: URL) async throws -> (status: Int, location: [String: String], locationBase: String?) {
        let response = try await raw(.GET, url.absoluteString)
        guard let location = response.headers["location"], let components = URLComponents(string: location) else {
            return (response.status, [:], nil)
        }
        var query: [String: String] = [:]
        for item in components.queryItems ?? [] { query[item.name] = item.value }
        let base = location.split(separator: "?").first.map(String.init)
        return (response.status, query, base)
    }

    /// Consent as `accountId` and exchange the code with the test app: a signed-in user's tokens.
    func signIn(_ accountId: String, scopes: [String] = Sandbox.scopes, app: AtlassianAppCredentials? = nil)
        async throws -> TokenResponse {
        let app = app ?? self.app
        var url = client.authorizeURL(clientId: app.clientId, redirectURI: app.redirectURI, scopes: scopes,
                                      state: "state-1")
        url = URL(string: url.absoluteString + "&sandbox_user=\(accountId)")!
        let answer = try await authorize(url)
        #expect(answer.status == 302)
        let callback = try AtlassianClient.parseCallback(query: answer.location)
        return try await client.exchangeCode(callback.code, credentials: app)
    }

    func advanceClock(seconds: Double) async throws {
        try await control("/clock", ["advanceSeconds": seconds])
    }

    func settings(_ patch: [String: Any]) async throws { try await control("/settings", patch) }

    func faults(_ rule: [String: Any]) async throws { try await control("/faults", rule) }

    func calls(clientId: String? = nil) async throws -> [PDRCall] {
        let query = clientId.map { "?clientId=\($0)" } ?? ""
        let response = try await raw(.GET, "/_sandbox/calls" + query)
        return try JSONDecoder().decode([String: [PDRCall]].self, from: response.body)["calls"] ?? []
    }
}

/// Expects `body` to throw exactly `expected`.
func expectAtlassianError<T>(
    _ expected: AtlassianError, sourceLocation: SourceLocation = #_sourceLocation, _ body: () async throws -> T
) async {
    do {
        _ = try await body()
        Issue.record("expected \(expected), got a result", sourceLocation: sourceLocation)
    } catch let error as AtlassianError {
        #expect(error == expected, sourceLocation: sourceLocation)
    } catch {
        Issue.record("expected \(expected), got \(error)", sourceLocation: sourceLocation)
    }
}

/// The error `body` throws, for cases whose payload is only partly predictable.
func atlassianError<T>(_ body: () async throws -> T) async -> AtlassianError? {
    do {
        _ = try await body()
        return nil
    } catch {
        return error as? AtlassianError
    }
}
