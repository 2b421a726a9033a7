import ServiceKit

/// Every setting of profile-store, read and validated at start. See README "Configuration".
struct ProfileStoreConfig: Sendable {
    /// HTTP_HOST / HTTP_PORT (default 8081), KAFKA_BOOTSTRAP_SERVERS, LETHE_DATA_DIR.
    var standard: StandardServiceConfig

    init(reader: ConfigReader) throws {
        standard = try StandardServiceConfig(reader: reader, defaultPort: 8081)
    }
}
