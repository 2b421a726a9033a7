import ServiceKit

/// Every setting of oauth-gateway, read and validated at start. See README "Configuration".
struct OAuthGatewayConfig: Sendable {
    /// HTTP_HOST / HTTP_PORT (default 8080), KAFKA_BOOTSTRAP_SERVERS, LETHE_DATA_DIR.
    var standard: StandardServiceConfig

    init(reader: ConfigReader) throws {
        standard = try StandardServiceConfig(reader: reader, defaultPort: 8080)
    }
}
