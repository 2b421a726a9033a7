import Contracts
import Foundation
import ServiceKit

/// Every setting of pdr-reporter, read and validated at start. See README "Configuration".
struct PDRReporterConfig: Sendable {
    /// HTTP_HOST / HTTP_PORT (default 8082), KAFKA_BOOTSTRAP_SERVERS, KAFKA_TOPIC_PARTITIONS, KAFKA_CREATE_TOPICS,
    /// LETHE_DATA_DIR, LETHE_TOPIC_NAMESPACE (its `topics` and consumer `group(_:)` names).
    var standard: StandardServiceConfig
    /// `PDR_CYCLE_SECONDS` (default 604800, 7 days; ATLASSIAN.md §3.5): the cycle until Atlassian answers a
    /// `Cycle-Period` for an app; one to 31 days, or from 1 s with `PDR_ALLOW_SHORT_CYCLE`.
    var cycle: Duration
    /// `PDR_ALLOW_SHORT_CYCLE` (default false): allows cycles shorter than a day — `PDR_CYCLE_SECONDS` and answered
    /// `Cycle-Period` values down to 1 s — for tests and the demo against the sandbox. Never in production: a short
    /// cycle reports every account more often than Atlassian allows.
    var allowShortCycle: Bool
    /// `PDR_REQUEST_INTERVAL_MS` (default 1000): minimum time between two PDR requests of one app — the per-app
    /// request rate. Atlassian publishes no limit (§3.5), so this is deliberately gentle; batches grow instead.
    var requestInterval: Duration
    /// `ATLASSIAN_AUTH_URL` / `ATLASSIAN_API_URL` (default the real hosts; the sandbox in every other environment).
    var atlassianAuthURL: URL
    var atlassianAPIURL: URL
    /// `LETHE_GATEWAY_INTERNAL_URL` (default http://127.0.0.1:9080): the gateway's internal listener, where the
    /// reporting-token API is (never its public URL).
    var gatewayInternalURL: URL
    /// `PDR_BATCH_WINDOW_MS` (default 1 % of the cycle): longest a partial batch waits for more accounts to come due
    /// (`ReportingSettings.batchWindow`): reports are late by at most this, never early.
    var batchWindow: Duration
    /// `LETHE_INTERNAL_TOKEN`: bearer for the gateway's reporting-token API; required (without it nothing can be
    /// reported), at least 16 characters. Never logged.
    var internalToken: String
    /// `LETHE_ADMIN_TOKEN`: bearer for `GET /v1/apps`; without it the route answers 401 to everyone. Never logged.
    var adminToken: String?
    /// `PDR_RESTORE_TIMEOUT_SECONDS` (default 300): longest a partition restore may take before the instance gives up
    /// (and exits, so an orchestrator restarts it) rather than report from a half-restored registry.
    var restoreTimeout: Duration
    /// `PDR_RESTORE_PROGRESS_SECONDS` (default 5): how often a running partition restore logs how far it got (0: after
    /// every batch it applies), so an operator watching a restore of millions of records sees it move.
    var restoreProgressInterval: Duration

    init(reader: ConfigReader) throws {
        standard = try StandardServiceConfig(reader: reader, defaultPort: 8082)
        restoreTimeout = .seconds(try reader.int("PDR_RESTORE_TIMEOUT_SECONDS", default: 300, range: 1...86_400))
        restoreProgressInterval = .seconds(try reader.int("PDR_RESTORE_PROGRESS_SECONDS", default: 5, range: 0...3600))
        allowShortCycle = try reader.bool("PDR_ALLOW_SHORT_CYCLE", default: false)
        let bounds = allowShortCycle ? Schedule.shortCycleBounds : Schedule.productionBounds
        let cycleSeconds = try reader.int("PDR_CYCLE_SECONDS", default: 604_800)
        guard bounds.contains(.seconds(cycleSeconds)) else {
            throw ConfigError(variable: "PDR_CYCLE_SECONDS", reason: allowShortCycle
                ? "must be between 1 and \(31 * 86_400) (31 days)"
                : "must be between 86400 (1 day) and \(31 * 86_400) (31 days); shorter cycles need PDR_ALLOW_SHORT_CYCLE=1, for tests and demos only")
        }
        cycle = .seconds(cycleSeconds)
        requestInterval = .milliseconds(try reader.int("PDR_REQUEST_INTERVAL_MS", default: 1000, range: 1...3_600_000))
        // 1 % of the cycle: about 100 minutes of a 7-day cycle, which fills batches for apps of a few thousand accounts.
        batchWindow = .milliseconds(try reader.int(
            "PDR_BATCH_WINDOW_MS", default: Int(cycle.components.seconds) * 10, range: 0...86_400_000))
        atlassianAuthURL = try reader.url("ATLASSIAN_AUTH_URL", default: "https://auth.atlassian.com")
        atlassianAPIURL = try reader.url("ATLASSIAN_API_URL", default: "https://api.atlassian.com")
        gatewayInternalURL = try reader.url("LETHE_GATEWAY_INTERNAL_URL", default: "http://127.0.0.1:9080")
        internalToken = try reader.secret("LETHE_INTERNAL_TOKEN")
        adminToken = try reader.optionalString("LETHE_ADMIN_TOKEN").map { _ in try reader.secret("LETHE_ADMIN_TOKEN") }
    }

    /// When accounts are due, and the cycles an answered `Cycle-Period` is followed within.
    var schedule: Schedule {
        Schedule(defaultCycle: cycle, cycleBounds: allowShortCycle ? Schedule.shortCycleBounds : Schedule.productionBounds)
    }

    /// The reporter's pacing from this configuration; the other retry settings keep their production defaults.
    var reportingSettings: ReportingSettings {
        var settings = ReportingSettings()
        settings.requestInterval = requestInterval
        settings.batchWindow = batchWindow
        return settings
    }
}
