import AsyncHTTPClient
import AtlassianClient
import Contracts
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import ServiceLifecycle
import TestSupport
import Testing
@testable import pdr_reporter

/// The sandbox process driven over HTTP: control API, sign-ins for real reporting tokens, and the PDR call log.
struct SandboxDriver: Sendable {
    let process: SandboxProcess
    let http: HTTPClient
    let client: AtlassianClient

    static let callback = "https://lethe.example.com/oauth/atlassian/callback"
    static let secret = "test-secret-0123456789"

    /// One call of the sandbox's PDR log.
    struct Call: Decodable, Sendable {
        struct Account: Decodable, Sendable { var accountId: String }
        var sequence: Int
        var clientId: String?
        var accounts: [Account]
        var status: Int
        var time: String
        var date: Date { RFC3339.date(from: time) ?? .distantPast }
        var succeeded: Bool { status == 200 || status == 204 }
    }

    /// The sandbox's control API.
    var sandboxControl: SandboxControl { SandboxControl(baseURL: process.baseURL.absoluteString, http: http) }

    /// A control call (`/_sandbox<path>`); throws unless it answers 2xx.
    @discardableResult
    func control(_ path: String, _ json: [String: Any] = [:]) async throws -> SandboxControl.Answer {
        try await sandboxControl.post(path, json)
    }

    func registerApp(_ clientId: String) async throws {
        try await sandboxControl.registerApp(clientId: clientId, clientSecret: Self.secret, callbackURL: Self.callback)
    }

    func addUser(_ accountId: String) async throws {
        try await sandboxControl.addUser(accountId)
    }

    /// A real sign-in through `/authorize` and `/oauth/token`: the access token a gateway connection would hold.
    func signIn(_ accountId: String, app clientId: String,
                scopes: [String] = ["read:me", "offline_access", "report:personal-data"]) async throws -> String {
        let credentials = AtlassianAppCredentials(clientId: clientId, clientSecret: Self.secret,
                                                  redirectURI: Self.callback)
        let url = client.authorizeURL(clientId: clientId, redirectURI: Self.callback,
                                      scopes: scopes, state: "s")
        let response = try await http.execute(
            HTTPClientRequest(url: url.absoluteString + "&sandbox_user=\(accountId)"), timeout: .seconds(10))
        _ = try await response.body.collect(upTo: 1 << 20)
        let location = try #require(response.headers.first(name: "Location"), "authorize did not redirect")
        let items = URLComponents(string: location)?.queryItems ?? []
        let code = try #require(items.first { $0.name == "code" }?.value, "no code in the redirect")
        return try await client.exchangeCode(code, credentials: credentials).accessToken
    }

    func calls(clientId: String? = nil) async throws -> [Call] {
        let query = clientId.map { "?clientId=\($0)" } ?? ""
        let response = try await http.execute(
            HTTPClientRequest(url: process.baseURL.absoluteString + "/_sandbox/calls" + query), timeout: .seconds(10))
        let body = try await response.body.collect(upTo: 64 << 20)
        return try JSONDecoder().decode([String: [Call]].self, from: Data(body.readableBytesView))["calls"] ?? []
    }

    /// Successful report times per accountId for one app, in order.
    func successes(clientId: String) async throws -> [String: [Date]] {
        var result: [String: [Date]] = [:]
        for call in try await calls(clientId: clientId) where call.succeeded {
            for account in call.accounts { result[account.accountId, default: []].append(call.date) }
        }
        return result
    }
}

/// The gateway's role in tests: hands out real sandbox access tokens, one per signed-in connection, honouring
/// `excluding` as the gateway does; no connection left → `noUsableGrant` (the gateway's 409).
actor SandboxTokens: ReportingTokenProvider {
    private var connections: [String: [(id: String, token: String)]] = [:]
    private(set) var exclusionsSeen: [Set<String>] = []

    /// Adds a connection; `first` puts it before the others, so it is the one tried first.
    func add(appId: String, connectionId: String, token: String, first: Bool = false) {
        connections[appId, default: []].insert((connectionId, token), at: first ? 0 : connections[appId]?.count ?? 0)
    }

    func token(appId: String, excluding: Set<String>) throws -> ReportingToken {
        if !excluding.isEmpty { exclusionsSeen.append(excluding) }
        guard let usable = connections[appId]?.first(where: { !excluding.contains($0.id) }) else {
            throw ReportingTokenError.noUsableGrant
        }
        return ReportingToken(accessToken: usable.token, connectionId: usable.id,
                              expiresAt: Date().addingTimeInterval(3600))
    }
}

/// Collects what the Kafka producer will publish.
actor MemorySink: ReportSink {
    private(set) var reported: [AccountReported] = []
    private(set) var statuses: [AccountStatusReported] = []

    func publish(reported: [AccountReported], statuses: [AccountStatusReported]) {
        self.reported += reported
        self.statuses += statuses
    }
}

/// One test's world: a sandbox process, the reporter's parts wired to it, and the loop running.
struct ReporterWorld: Sendable {
    let sandbox: SandboxDriver
    let registry: InMemoryAccountRegistry
    let tokens: SandboxTokens
    let sink: MemorySink
    let loop: ReportingLoop
    let schedule: Schedule

    /// Fast settings: the behaviours are the production ones, only the waits are short.
    static func fastSettings() -> ReportingSettings {
        var settings = ReportingSettings()
        settings.requestInterval = .milliseconds(100)
        settings.idlePoll = .milliseconds(200)
        settings.backoffBase = .milliseconds(50)
        settings.backoffMax = .milliseconds(400)
        settings.defaultRetryAfter = .seconds(1)
        settings.orphanRetry = .milliseconds(300)
        return settings
    }

    /// Starts a sandbox (no rate limit, no `Cycle-Period` unless `sandboxSettings` says so), registers `apps` each
    /// with one signed-in connection, runs `setup` then the loop while `body` runs, and stops everything.
    static func run(
        apps: [String], cycle: Duration, settings: ReportingSettings = fastSettings(),
        sandboxSettings: [String: Any] = [:], cycleBounds: ClosedRange<Duration> = Schedule.shortCycleBounds,
        setup: @Sendable (ReporterWorld) async throws -> Void = { _ in },
        _ body: @Sendable (ReporterWorld) async throws -> Void
    ) async throws {
        try await withSandboxProcess { process in
            var config = HTTPClient.Configuration()
            config.redirectConfiguration = .disallow
            let http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: config)
            let logger = makeTestLogger("pdr-reporter-test")
            let client = AtlassianClient(
                config: .init(authURL: process.baseURL, apiURL: process.baseURL, requestTimeout: .seconds(5)),
                httpClient: http, logger: logger)
            let sandbox = SandboxDriver(process: process, http: http, client: client)
            let schedule = Schedule(defaultCycle: cycle, cycleBounds: cycleBounds)
            let registry = InMemoryAccountRegistry(schedule: schedule)
            let sink = MemorySink()
            let tokens = SandboxTokens()
            let loop = ReportingLoop(registry: registry, api: client, tokens: tokens, sink: sink, schedule: schedule,
                                     settings: settings, logger: logger)
            let world = ReporterWorld(sandbox: sandbox, registry: registry, tokens: tokens, sink: sink, loop: loop,
                                      schedule: schedule)
            let outcome: Result<Void, any Error>
            do {
                var patch: [String: Any] = ["rateLimitRequests": 0, "cyclePeriodFormat": "none"]
                patch.merge(sandboxSettings) { $1 }
                try await sandbox.control("/settings", patch)
                for app in apps {
                    try await sandbox.registerApp(app)
                    let owner = "owner-\(app)"
                    try await sandbox.addUser(owner)
                    await tokens.add(appId: app, connectionId: owner, token: try await sandbox.signIn(owner, app: app))
                }
                try await setup(world)
                let group = ServiceGroup(configuration: .init(services: [loop], logger: logger))
                outcome = try await withThrowingTaskGroup(of: Void.self) { tasks in
                    tasks.addTask { try await group.run() }
                    let result: Result<Void, any Error>
                    do { result = .success(try await body(world)) } catch { result = .failure(error) }
                    await group.triggerGracefulShutdown()
                    try await tasks.waitForAll()
                    return result
                }
            } catch {
                outcome = .failure(error)
            }
            try? await http.shutdown()
            try outcome.get()
        }
    }

    /// Holds `count` accounts per app (ids `<app>-acct-<n>`), all first seen now.
    func hold(apps: [String], count: Int, tenantIds: [String] = ["tenant-1"],
              updatedAt: Date = Date(timeIntervalSince1970: 1_700_000_000)) async throws {
        for app in apps {
            for index in 0..<count {
                try await loop.hold(HeldAccount(appId: app, accountId: "\(app)-acct-\(index)", updatedAt: updatedAt,
                                                tenantIds: tenantIds))
            }
        }
    }

    func status(_ appId: String) async throws -> AppReportingStatus? {
        try await loop.status().first { $0.appId == appId }
    }
}
