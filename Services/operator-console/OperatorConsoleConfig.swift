import Foundation
import ServiceKit

/// Every setting of operator-console, read and validated at start. See docs/operator-console.md.
struct OperatorConsoleConfig: Sendable {
    /// HTTP_HOST / HTTP_PORT (default 8084), KAFKA_BOOTSTRAP_SERVERS (dead-letter depths), LETHE_TOPIC_NAMESPACE.
    /// It keeps no SQLite file: everything it shows is asked for when the page is.
    var standard: StandardServiceConfig
    /// `LETHE_ADMIN_TOKEN` (secret, ≥ 16 characters): what the operator signs in with, and what the console presents
    /// to every service's operator API. Sessions are signed with a key derived from it, so changing it ends them.
    var adminToken: String
    /// `LETHE_GATEWAY_URL` (default http://127.0.0.1:8080): tenants and Shared Signals streams.
    var gatewayURL: URL
    /// `LETHE_EXECUTOR_URL` (default http://127.0.0.1:8083): erasures, participants, the audit.
    var executorURL: URL
    /// `LETHE_REPORTER_URLS` (comma-separated, default http://127.0.0.1:8082): pdr-reporter. Each reporter owns some
    /// partitions, so every replica is asked: a name that resolves to several addresses (a scaled compose service)
    /// counts as every one of them.
    var reporterURLs: [URL]
    /// `CONSOLE_SESSION_HOURS` (default 8, 1…24): how long a sign-in lasts.
    var sessionHours: Int
    /// `CONSOLE_SECURE_COOKIE` (default false): mark the session cookie `Secure`; set it when the console is served
    /// over https (behind a TLS-terminating proxy), so the browser never sends the cookie in clear.
    var secureCookie: Bool

    init(reader: ConfigReader) throws {
        standard = try StandardServiceConfig(reader: reader, defaultPort: 8084)
        adminToken = try reader.secret("LETHE_ADMIN_TOKEN", minimumLength: 16)
        gatewayURL = try reader.url("LETHE_GATEWAY_URL", default: "http://127.0.0.1:8080")
        executorURL = try reader.url("LETHE_EXECUTOR_URL", default: "http://127.0.0.1:8083")
        let reporters = reader.string("LETHE_REPORTER_URLS", default: "http://127.0.0.1:8082")
        reporterURLs = try reporters.split(separator: ",").map { raw in
            let text = raw.trimmingCharacters(in: .whitespaces)
            guard let url = URL(string: text), ["http", "https"].contains(url.scheme ?? ""), url.host != nil else {
                throw ConfigError(variable: "LETHE_REPORTER_URLS", reason: "must be comma-separated http(s) URLs")
            }
            return url
        }
        guard !reporterURLs.isEmpty else {
            throw ConfigError(variable: "LETHE_REPORTER_URLS", reason: "must name at least one reporter")
        }
        sessionHours = try reader.int("CONSOLE_SESSION_HOURS", default: 8, range: 1...24)
        secureCookie = try reader.bool("CONSOLE_SECURE_COOKIE", default: false)
    }
}
