import AsyncHTTPClient
import Foundation
import Hummingbird
import ServiceKit
import ServiceLifecycle
import TestSupport
import Testing
@testable import pdr_reporter

@Suite("GET /v1/apps and configuration")
struct StatusAndConfigTests {
    static let token = "admin-token-0123456789abcdef"
    static let sample = AppReportingStatus(
        appId: "app-1", accountsHeld: 3, dueNow: 1, reportedInCurrentCycle: 2, rejected: 0, rejectedAccountIds: [],
        lastCallAt: nil,
        lastOutcome: "ok",
        health: AppHealth(state: .failing, reason: "no-usable-grant", since: Date(timeIntervalSince1970: 1_750_000_000),
                          overdueAccounts: 1, oldestOverdueSeconds: 700),
        rateLimitedCount: 4, orphaned: true, cyclePeriodSeconds: 604_800)

    /// One answer of the route as served by Hummingbird (status, `WWW-Authenticate`, body).
    struct Answer { var status: Int; var challenge: String?; var body: Data }

    /// Serves `endpoint` on a free loopback port for the duration of `body`, as `buildPDRReporter` wires it (behind
    /// `RequestLogMiddleware`), so the bodies checked are the ones every service renders, not this code's.
    static func withServedEndpoint(
        _ endpoint: AppsStatusEndpoint, _ body: @Sendable (@Sendable (String?) async throws -> Answer) async throws -> Void
    ) async throws {
        let router = Router()
        router.add(middleware: RequestLogMiddleware())
        router.addAppsStatusRoute(endpoint)
        let (ports, continuation) = AsyncStream.makeStream(of: Int.self)
        let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
                              onServerRunning: { continuation.yield($0.localAddress?.port ?? 0) },
                              logger: makeTestLogger("pdr-status"))
        let group = ServiceGroup(configuration: .init(services: [app], logger: makeTestLogger()))
        let http = HTTPClient(eventLoopGroupProvider: .singleton)
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            let result: Result<Void, any Error>
            do {
                let port = try #require(await ports.first { _ in true })
                result = .success(try await body { authorization in
                    var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)/v1/apps")
                    if let authorization { request.headers.add(name: "Authorization", value: authorization) }
                    let response = try await http.execute(request, timeout: .seconds(10))
                    let bytes = try await response.body.collect(upTo: 1 << 20)
                    return Answer(status: Int(response.status.code),
                                  challenge: response.headers.first(name: "WWW-Authenticate"),
                                  body: Data(bytes.readableBytesView))
                })
            } catch {
                result = .failure(error)
            }
            try? await http.shutdown()
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
            try result.get()
        }
    }


    @Test("only the admin bearer gets the per-app status; no configured token lets nobody in")
    func adminTokenGuardsStatus() async throws {
        try await Self.withServedEndpoint(AppsStatusEndpoint(adminToken: Self.token) { [Self.sample] }) { get in
            let ok = try await get("Bearer \(Self.token)")
            #expect(ok.status == 200)
            let decoder = JSONDecoder()
            decoder.dateDecodingStrategy = .iso8601
            let decoded = try decoder.decode([String: [AppReportingStatus]].self, from: ok.body)
            #expect(decoded["apps"] == [Self.sample])
            for header in [nil, "Bearer wrong", "Bearer \(Self.token)x", Self.token, "Bearer "] {
                #expect(try await get(header).status == 401, "\(String(describing: header))")
            }
        }
        try await Self.withServedEndpoint(AppsStatusEndpoint(adminToken: nil) { [Self.sample] }) { get in
            let empty = try await get("Bearer ")
            let right = try await get("Bearer \(Self.token)")
            #expect(empty.status == 401 && right.status == 401)
        }
    }

    @Test("errors of GET /v1/apps are the shape of every service, {error, message, requestId}, with a Bearer challenge on 401")
    func errorsAreTheHouseShape() async throws {
        struct RegistryDown: Error {}
        try await Self.withServedEndpoint(AppsStatusEndpoint(adminToken: Self.token) { throw RegistryDown() }) { get in
            let unauthorized = try await get("Bearer wrong")
            #expect(unauthorized.status == 401 && unauthorized.challenge == "Bearer")
            let body = String(decoding: unauthorized.body, as: UTF8.self)
            let refusal = try JSONDecoder().decode(ErrorBody.self, from: unauthorized.body)
            #expect(refusal.error == "unauthorized" && refusal.message == "admin token required", "\(body)")
            let failed = try await get("Bearer \(Self.token)")
            #expect(failed.status == 500)
            let detail = try JSONDecoder().decode(ErrorBody.self, from: failed.body).message
            // No internals: not the error's type or description.
            #expect(detail == "reporting status unavailable" && !detail.contains("RegistryDown"))
        }
        try await Self.withServedEndpoint(AppsStatusEndpoint(adminToken: nil) { [Self.sample] }) { get in
            let closed = try await get(nil)
            #expect(try JSONDecoder().decode(ErrorBody.self, from: closed.body).message == "admin token required")
        }
    }

    @Test("PDR_CYCLE_SECONDS and PDR_REQUEST_INTERVAL_MS are read and validated; defaults are 7 days and 1 s")
    func config() throws {
        let base = [
            "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092", "LETHE_DATA_DIR": FileManager.default.temporaryDirectory.path,
            "LETHE_INTERNAL_TOKEN": "internal-token-0123456789",
        ]
        let defaults = try PDRReporterConfig(reader: ConfigReader(environment: base))
        #expect(defaults.cycle == .seconds(604_800) && defaults.requestInterval == .seconds(1))
        #expect(defaults.adminToken == nil && defaults.internalToken == "internal-token-0123456789")
        // The batch window defaults to 1 % of the cycle.
        #expect(defaults.batchWindow == .seconds(6048) && defaults.reportingSettings.batchWindow == .seconds(6048))
        #expect(throws: ConfigError(variable: "LETHE_INTERNAL_TOKEN", reason: "is required but not set")) {
            try PDRReporterConfig(reader: ConfigReader(environment: base.merging(["LETHE_INTERNAL_TOKEN": ""]) { $1 }))
        }
        #expect(defaults.schedule.cycleBounds == Schedule.productionBounds && !defaults.allowShortCycle)
        // A cycle shorter than a day only on purpose (tests, the demo); never longer than 31 days.
        #expect(throws: ConfigError(variable: "PDR_CYCLE_SECONDS", reason: "must be between 86400 (1 day) and 2678400 (31 days); shorter cycles need PDR_ALLOW_SHORT_CYCLE=1, for tests and demos only")) {
            try PDRReporterConfig(reader: ConfigReader(environment: base.merging(["PDR_CYCLE_SECONDS": "5"]) { $1 }))
        }
        #expect(throws: ConfigError.self) {
            try PDRReporterConfig(reader: ConfigReader(environment: base.merging(["PDR_CYCLE_SECONDS": "2678401"]) { $1 }))
        }
        #expect(try PDRReporterConfig(reader: ConfigReader(environment: base.merging(["PDR_CYCLE_SECONDS": "86400"]) { $1 }))
            .cycle == .seconds(86_400))
        let custom = try PDRReporterConfig(reader: ConfigReader(environment: base.merging([
            "PDR_CYCLE_SECONDS": "5", "PDR_ALLOW_SHORT_CYCLE": "1", "PDR_REQUEST_INTERVAL_MS": "250",
            "LETHE_ADMIN_TOKEN": Self.token,
        ]) { $1 }))
        #expect(custom.schedule.cycleBounds == Schedule.shortCycleBounds)
        #expect(custom.cycle == .seconds(5) && custom.reportingSettings.requestInterval == .milliseconds(250))
        #expect(custom.batchWindow == .milliseconds(50))
        #expect(custom.adminToken == Self.token)
        #expect(throws: ConfigError(variable: "PDR_CYCLE_SECONDS", reason: "must be between 1 and 2678400 (31 days)")) {
            try PDRReporterConfig(reader: ConfigReader(environment: base.merging([
                "PDR_CYCLE_SECONDS": "0", "PDR_ALLOW_SHORT_CYCLE": "1",
            ]) { $1 }))
        }
        #expect(throws: ConfigError.self) {
            try PDRReporterConfig(reader: ConfigReader(environment: base.merging(["LETHE_ADMIN_TOKEN": "short"]) { $1 }))
        }
    }
}
