import Foundation
import ServiceKit

/// Every setting of the sandbox, read and validated once at start (STYLE.md "Configuration").
///
/// The behaviour settings (`Cycle-Period`, rate limit, `Retry-After` form) are only the initial values: tests and
/// tenants change them at run time with `POST /_sandbox/settings`, and `POST /_sandbox/reset` restores these.
struct SandboxConfig: Sendable, Equatable {
    /// `HTTP_HOST` (default 127.0.0.1) and `HTTP_PORT` (default 8090; 0 picks a free port, as tests do).
    var http: HTTPServerConfig
    /// `SANDBOX_SEED` (default 1): seeds every id, token, code and random fault, so a run is repeatable.
    var seed: UInt64
    /// The behaviour the sandbox starts with.
    var settings: SandboxSettings

    init(http: HTTPServerConfig = .init(host: "127.0.0.1", port: 0), seed: UInt64 = 1,
         settings: SandboxSettings = .init()) {
        self.http = http
        self.seed = seed
        self.settings = settings
    }

    /// Reads `HTTP_HOST`, `HTTP_PORT`, `SANDBOX_SEED`, `SANDBOX_CYCLE_PERIOD_SECONDS` (default 604800, ATLASSIAN.md
    /// §3.5's 7 days), `SANDBOX_CYCLE_PERIOD_FORMAT` (`seconds` | `iso` | `none`, default `seconds`; the real format is
    /// an open question, §7.1), `SANDBOX_RATE_LIMIT` (PDR requests per app per window, default 60; 0 = unlimited),
    /// `SANDBOX_RATE_LIMIT_WINDOW_SECONDS` (default 60), `SANDBOX_RETRY_AFTER_FORMAT` (`seconds` | `http-date`,
    /// default `seconds` as §3.4 documents) and `SANDBOX_DELETION_GRACE_SECONDS` (default 1209600, the 14 days of
    /// ATLASSIAN.md "Read first"; 0 makes a deletion close the account at once).
    init(reader: ConfigReader) throws {
        http = try HTTPServerConfig(reader: reader, defaultPort: 8090)
        seed = UInt64(try reader.int("SANDBOX_SEED", default: 1, range: 0...Int.max))
        var settings = SandboxSettings()
        settings.cyclePeriodSeconds = try reader.int(
            "SANDBOX_CYCLE_PERIOD_SECONDS", default: settings.cyclePeriodSeconds, range: 1...(366 * 86_400))
        settings.cyclePeriodFormat = SandboxSettings.CyclePeriodFormat(rawValue: try reader.oneOf(
            "SANDBOX_CYCLE_PERIOD_FORMAT", ["seconds", "iso", "none"], default: "seconds"))!
        settings.rateLimitRequests = try reader.int(
            "SANDBOX_RATE_LIMIT", default: settings.rateLimitRequests, range: 0...1_000_000)
        settings.rateLimitWindowSeconds = try reader.int(
            "SANDBOX_RATE_LIMIT_WINDOW_SECONDS", default: settings.rateLimitWindowSeconds, range: 1...86_400)
        settings.retryAfterFormat = SandboxSettings.RetryAfterFormat(rawValue: try reader.oneOf(
            "SANDBOX_RETRY_AFTER_FORMAT", ["seconds", "http-date"], default: "seconds"))!
        settings.deletionGraceSeconds = try reader.int(
            "SANDBOX_DELETION_GRACE_SECONDS", default: settings.deletionGraceSeconds,
            range: SandboxSettings.deletionGraceRange)
        self.settings = settings
    }
}

/// Behaviour switches a test can flip at run time.
struct SandboxSettings: Codable, Sendable, Equatable {
    /// How `Cycle-Period` is written: integer seconds, an ISO-8601 duration, not at all, or `raw` (the verbatim
    /// `cyclePeriodRaw`, to test a client against garbage).
    enum CyclePeriodFormat: String, Codable, Sendable { case seconds, iso, none, raw }
    /// How `Retry-After` is written on a rate-limit 429.
    enum RetryAfterFormat: String, Codable, Sendable {
        case seconds
        case httpDate = "http-date"
    }

    var cyclePeriodSeconds: Int = 604_800
    var cyclePeriodFormat: CyclePeriodFormat = .seconds
    var cyclePeriodRaw: String?
    var rateLimitRequests: Int = 60
    var rateLimitWindowSeconds: Int = 60
    var retryAfterFormat: RetryAfterFormat = .seconds
    /// How long a deleted account stays `deleting` before PDR answers `closed` (ATLASSIAN.md "Read first", §2: 14
    /// days). Read when an account is deleted; tests shorten it to seconds or jump it with `/_sandbox/clock`.
    var deletionGraceSeconds: Int = 1_209_600

    /// 0 (a deletion closes at once) up to a year, for the variable and for `POST /_sandbox/settings` alike.
    static let deletionGraceRange = 0...(366 * 86_400)

    /// The header value to send, or nil for none.
    var cyclePeriodHeader: String? {
        switch cyclePeriodFormat {
        case .seconds: return String(cyclePeriodSeconds)
        case .iso:
            return cyclePeriodSeconds % 86_400 == 0 ? "P\(cyclePeriodSeconds / 86_400)D" : "PT\(cyclePeriodSeconds)S"
        case .none: return nil
        case .raw: return cyclePeriodRaw
        }
    }
}
