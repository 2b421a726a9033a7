import Foundation
import ServiceKit
import Testing
@testable import pdr_reporter

@Suite("GET /v1/apps and configuration")
struct StatusAndConfigTests {
    static let token = "admin-token-0123456789abcdef"
    static let sample = AppReportingStatus(
        appId: "app-1", accountsHeld: 3, dueNow: 1, reportedInCurrentCycle: 2, rejected: 0, lastCallAt: nil,
        lastOutcome: "ok", rateLimitedCount: 4, orphaned: true, cyclePeriodSeconds: 604_800)

    @Test("only the admin bearer gets the per-app status; no configured token lets nobody in")
    func adminTokenGuardsStatus() async throws {
        let endpoint = AppsStatusEndpoint(adminToken: Self.token) { [Self.sample] }
        let ok = await endpoint.respond(authorization: "Bearer \(Self.token)")
        #expect(ok.status == 200)
        let decoded = try JSONDecoder().decode([String: [AppReportingStatus]].self, from: ok.body)
        #expect(decoded["apps"] == [Self.sample])
        for header in [nil, "Bearer wrong", "Bearer \(Self.token)x", Self.token, "Bearer "] {
            #expect(await endpoint.respond(authorization: header).status == 401, "\(String(describing: header))")
        }
        let closed = AppsStatusEndpoint(adminToken: nil) { [Self.sample] }
        #expect(await closed.respond(authorization: "Bearer ").status == 401)
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
        let custom = try PDRReporterConfig(reader: ConfigReader(environment: base.merging([
            "PDR_CYCLE_SECONDS": "5", "PDR_REQUEST_INTERVAL_MS": "250", "LETHE_ADMIN_TOKEN": Self.token,
        ]) { $1 }))
        #expect(custom.cycle == .seconds(5) && custom.reportingSettings.requestInterval == .milliseconds(250))
        #expect(custom.batchWindow == .milliseconds(50))
        #expect(custom.adminToken == Self.token)
        #expect(throws: ConfigError(variable: "PDR_CYCLE_SECONDS", reason: "must be between 1 and 31622400")) {
            try PDRReporterConfig(reader: ConfigReader(environment: base.merging(["PDR_CYCLE_SECONDS": "0"]) { $1 }))
        }
        #expect(throws: ConfigError.self) {
            try PDRReporterConfig(reader: ConfigReader(environment: base.merging(["LETHE_ADMIN_TOKEN": "short"]) { $1 }))
        }
    }
}
