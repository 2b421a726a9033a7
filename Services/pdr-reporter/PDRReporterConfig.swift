import Contracts
import Foundation
import ServiceKit

/// Every setting of pdr-reporter, read and validated at start. See README "Configuration".
struct PDRReporterConfig: Sendable {
    /// HTTP_HOST / HTTP_PORT (default 8082), KAFKA_BOOTSTRAP_SERVERS, LETHE_DATA_DIR.
    var standard: StandardServiceConfig
    /// `PDR_CYCLE_SECONDS` (default 604800, 7 days; ATLASSIAN.md §3.5): the cycle until Atlassian answers a
    /// `Cycle-Period` for an app. Tests shorten it to seconds.
    var cycle: Duration
    /// `PDR_REQUEST_INTERVAL_MS` (default 1000): minimum time between two PDR requests of one app — the per-app
    /// request rate. Atlassian publishes no limit (§3.5), so this is deliberately gentle; batches grow instead.
    var requestInterval: Duration
    /// `ATLASSIAN_AUTH_URL` / `ATLASSIAN_API_URL` (default the real hosts; the sandbox in every other environment).
    var atlassianAuthURL: URL
    var atlassianAPIURL: URL
    /// `LETHE_GATEWAY_URL` (default http://127.0.0.1:8080): where the reporting-token API is.
    var gatewayURL: URL
    /// `PDR_BATCH_WINDOW_MS` (default 1 % of the cycle): longest a partial batch waits for more accounts to come due
    /// (`ReportingSettings.batchWindow`): reports are late by at most this, never early.
    var batchWindow: Duration
    /// `LETHE_INTERNAL_TOKEN`: bearer for the gateway's reporting-token API; required (without it nothing can be
    /// reported), at least 16 characters. Never logged.
    var internalToken: String
    /// `LETHE_ADMIN_TOKEN`: bearer for `GET /v1/apps`; without it the route answers 401 to everyone. Never logged.
    var adminToken: String?
    /// `LETHE_TOPIC_NAMESPACE`, if set: unset in production (the architecture's topic names); tests set a unique
    /// prefix so runs sharing a broker never see each other's records. The group id gets the same prefix.
    var namespace: String?
    /// The topics, prefixed with the namespace.
    var topics: LetheTopics
    /// `PDR_RESTORE_TIMEOUT_SECONDS` (default 300): longest a partition restore may take before the instance gives up
    /// (and exits, so an orchestrator restarts it) rather than report from a half-restored registry.
    var restoreTimeout: Duration
    /// `PDR_RESTORE_PROGRESS_SECONDS` (default 5): how often a running partition restore logs how far it got (0: after
    /// every batch it applies), so an operator watching a restore of millions of records sees it move.
    var restoreProgressInterval: Duration

    init(reader: ConfigReader) throws {
        standard = try StandardServiceConfig(reader: reader, defaultPort: 8082)
        namespace = try TopicNamespace(reader: reader).prefix
        topics = LetheTopics(namespace: namespace)
        restoreTimeout = .seconds(try reader.int("PDR_RESTORE_TIMEOUT_SECONDS", default: 300, range: 1...86_400))
        restoreProgressInterval = .seconds(try reader.int("PDR_RESTORE_PROGRESS_SECONDS", default: 5, range: 0...3600))
        cycle = .seconds(try reader.int("PDR_CYCLE_SECONDS", default: 604_800, range: 1...(366 * 86_400)))
        requestInterval = .milliseconds(try reader.int("PDR_REQUEST_INTERVAL_MS", default: 1000, range: 1...3_600_000))
        // 1 % of the cycle: about 100 minutes of a 7-day cycle, which fills batches for apps of a few thousand accounts.
        batchWindow = .milliseconds(try reader.int(
            "PDR_BATCH_WINDOW_MS", default: Int(cycle.components.seconds) * 10, range: 0...86_400_000))
        atlassianAuthURL = try reader.url("ATLASSIAN_AUTH_URL", default: "https://auth.atlassian.com")
        atlassianAPIURL = try reader.url("ATLASSIAN_API_URL", default: "https://api.atlassian.com")
        gatewayURL = try reader.url("LETHE_GATEWAY_URL", default: "http://127.0.0.1:8080")
        internalToken = try reader.secret("LETHE_INTERNAL_TOKEN")
        adminToken = try reader.optionalString("LETHE_ADMIN_TOKEN").map { _ in try reader.secret("LETHE_ADMIN_TOKEN") }
    }

    /// The consumer group id of the reporter instances, prefixed like the topics.
    var groupId: String { TopicNamespace(prefix: namespace).name("pdr-reporter") }

    /// The reporter's pacing from this configuration; the other retry settings keep their production defaults.
    var reportingSettings: ReportingSettings {
        var settings = ReportingSettings()
        settings.requestInterval = requestInterval
        settings.batchWindow = batchWindow
        return settings
    }
}
