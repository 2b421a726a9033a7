import AtlassianClient
import Foundation
import ServiceKit

/// Every setting of oauth-gateway, read and validated at start. See docs/oauth-gateway.md "Configuration".
struct OAuthGatewayConfig: Sendable {
    /// HTTP_HOST / HTTP_PORT (default 8080), KAFKA_BOOTSTRAP_SERVERS, KAFKA_TOPIC_PARTITIONS, KAFKA_CREATE_TOPICS,
    /// LETHE_DATA_DIR, LETHE_TOPIC_NAMESPACE (its `topics` and consumer `group(_:)` names).
    var standard: StandardServiceConfig
    /// `LETHE_GATEWAY_URL`: the gateway's public base URL, without a trailing slash.
    var publicURL: String
    /// `LETHE_TOKEN_ISSUER` (default `LETHE_GATEWAY_URL`): `iss` of every token signed here. Every other service
    /// reads the same variable (`TenantAuthConfig`), so they agree by construction.
    var issuer: String
    /// `ATLASSIAN_AUTH_URL` / `ATLASSIAN_API_URL`.
    var atlassian: AtlassianClientConfig
    /// `LETHE_ADMIN_TOKEN`: the operator's bearer.
    var adminToken: String
    /// `LETHE_INTERNAL_TOKEN`: the other services' bearer for the internal API.
    var internalToken: String
    /// `LETHE_MASTER_KEY`: 32 bytes, base64. Wraps the data keys; never stored.
    var masterKey: Data
    /// `LETHE_MASTER_KEY_PREVIOUS`: the master key being replaced, for the start that wraps the data keys again
    /// under `LETHE_MASTER_KEY` (then remove it). Unset normally.
    var previousMasterKey: Data?
    /// The platform's shared test app, when configured.
    var sharedApp: SharedAppConfig?
    /// `GATEWAY_TENANT_TOKEN_SECONDS`: lifetime of tenant access tokens (default 900).
    var tenantTokenLifetime: TimeInterval
    /// `GATEWAY_CLIENT_RATE_PER_MINUTE` (default 6000): requests a minute one client (tenant) may make to the
    /// authorization endpoint (sign-in starts included) and, apart, to the token endpoint, per gateway process;
    /// bursts up to a tenth of a minute's worth.
    var clientRatePerMinute: Int
    /// `GATEWAY_SSF_RETRY_FOR_SECONDS` (default 3 days) and `GATEWAY_SSF_MAX_BACKOFF_SECONDS` (default 3600): how long
    /// a Security Event Token is retried before it is given up, and the longest wait between two tries.
    var securityEventDelivery: SecurityEventDelivery.Settings
    /// `GATEWAY_SSF_ALLOW_PRIVATE_ENDPOINTS` (default false): accept http and private, loopback or link-local push
    /// endpoints (the demo and tests, whose receivers run on the same machine).
    var ssfAllowPrivateEndpoints: Bool
    /// `GATEWAY_IP_RATE_PER_MINUTE` (default 600): the same, per client IP address, across clients: authorization
    /// requests, sign-in starts and callbacks together, token requests apart; bursts up to a tenth.
    var ipRatePerMinute: Int
    /// `GATEWAY_TRUSTED_PROXIES` (comma-separated CIDR blocks, default none): peers whose `X-Forwarded-For` names the
    /// client (a load balancer in front of the gateway). Without it, the socket's peer is the client.
    var trustedProxies: [CIDRBlock]
    /// `GATEWAY_ALLOWED_SCOPES` (space- or comma-separated, default none): Atlassian scopes every tenant may request
    /// beyond the required ones; the operator allows more per tenant (`PUT /v1/tenants/{t}/allowed-scopes`).
    var allowedScopes: [String]

    /// `LETHE_SHARED_APP_CLIENT_ID` / `LETHE_SHARED_APP_CLIENT_SECRET` / `LETHE_SHARED_APP_CALLBACK_URL`.
    struct SharedAppConfig: Sendable {
        var clientId: String
        var clientSecret: String
        var callbackURL: String
    }

    init(reader: ConfigReader) throws {
        // The internal listener (HTTP_INTERNAL_PORT, default 9080) serves the reporting-token API and /metrics.
        standard = try StandardServiceConfig(reader: reader, defaultPort: 8080, defaultInternalPort: 9080)
        var url = try reader.url("LETHE_GATEWAY_URL", default: "http://127.0.0.1:8080").absoluteString
        while url.hasSuffix("/") { url.removeLast() }
        publicURL = url
        issuer = reader.string("LETHE_TOKEN_ISSUER", default: url)
        atlassian = AtlassianClientConfig(
            authURL: try reader.url("ATLASSIAN_AUTH_URL", default: "https://auth.atlassian.com"),
            apiURL: try reader.url("ATLASSIAN_API_URL", default: "https://api.atlassian.com"))
        adminToken = try reader.secret("LETHE_ADMIN_TOKEN")
        internalToken = try reader.secret("LETHE_INTERNAL_TOKEN")
        func decodedKey(_ name: String, _ raw: String) throws -> Data {
            guard let key = Data(base64Encoded: raw), key.count == 32 else {
                throw ConfigError(variable: name, reason: "must be 32 random bytes in base64 (openssl rand -base64 32)")
            }
            return key
        }
        masterKey = try decodedKey("LETHE_MASTER_KEY", try reader.requiredString("LETHE_MASTER_KEY"))
        previousMasterKey = try reader.optionalString("LETHE_MASTER_KEY_PREVIOUS").map {
            try decodedKey("LETHE_MASTER_KEY_PREVIOUS", $0)
        }
        switch (reader.optionalString("LETHE_SHARED_APP_CLIENT_ID"), reader.optionalString("LETHE_SHARED_APP_CLIENT_SECRET")) {
        case (nil, nil):
            sharedApp = nil
        case (let id?, let secret?):
            let callback = try reader.url("LETHE_SHARED_APP_CALLBACK_URL", default: url + SignInRoutes.callbackPath)
            sharedApp = SharedAppConfig(clientId: id, clientSecret: secret, callbackURL: callback.absoluteString)
        case (nil, _):
            throw ConfigError(variable: "LETHE_SHARED_APP_CLIENT_ID", reason: "must be set with LETHE_SHARED_APP_CLIENT_SECRET")
        case (_, nil):
            throw ConfigError(variable: "LETHE_SHARED_APP_CLIENT_SECRET", reason: "must be set with LETHE_SHARED_APP_CLIENT_ID")
        }
        tenantTokenLifetime = TimeInterval(try reader.int("GATEWAY_TENANT_TOKEN_SECONDS", default: 900, range: 60...86_400))
        clientRatePerMinute = try reader.int("GATEWAY_CLIENT_RATE_PER_MINUTE", default: 6000, range: 1...10_000_000)
        allowedScopes = (reader.optionalString("GATEWAY_ALLOWED_SCOPES") ?? "")
            .split(whereSeparator: { $0 == " " || $0 == "," }).map(String.init)
        securityEventDelivery = SecurityEventDelivery.Settings(
            retryFor: TimeInterval(try reader.int("GATEWAY_SSF_RETRY_FOR_SECONDS", default: 259_200, range: 1...2_592_000)),
            maxBackoff: TimeInterval(try reader.int("GATEWAY_SSF_MAX_BACKOFF_SECONDS", default: 3600, range: 1...86_400)))
        ssfAllowPrivateEndpoints = try reader.bool("GATEWAY_SSF_ALLOW_PRIVATE_ENDPOINTS", default: false)
        ipRatePerMinute = try reader.int("GATEWAY_IP_RATE_PER_MINUTE", default: 600, range: 1...10_000_000)
        trustedProxies = try (reader.optionalString("GATEWAY_TRUSTED_PROXIES") ?? "").split(separator: ",").map {
            guard let block = CIDRBlock(String($0)) else {
                throw ConfigError(
                    variable: "GATEWAY_TRUSTED_PROXIES", reason: "must be comma-separated CIDR blocks (10.0.0.0/8, ::1)")
            }
            return block
        }
        changelogInterval = .milliseconds(try reader.int("GATEWAY_CHANGELOG_INTERVAL_MS", default: 50, range: 1...60_000))
        keepAlive = KeepAliveSettings(
            after: TimeInterval(try reader.int("GATEWAY_KEEPALIVE_AFTER_DAYS", default: 30, range: 1...80)) * 86_400,
            batch: try reader.int("GATEWAY_KEEPALIVE_BATCH", default: 20, range: 1...10_000))
    }

    /// `GATEWAY_CHANGELOG_INTERVAL_MS` (default 50): how often the changelog's publisher looks for changes nobody
    /// waits for (background work: deliveries, keep-alive refreshes). A change acknowledged to anyone is published
    /// before the acknowledgement, whatever this says (``Durability``).
    var changelogInterval: Duration

    /// `GATEWAY_KEEPALIVE_AFTER_DAYS` (default 30, at most 80) and `GATEWAY_KEEPALIVE_BATCH` (default 20 a minute):
    /// when a connection's refresh token is refreshed for its own sake, and how many a minute at most.
    var keepAlive: KeepAliveSettings
}
