import ServiceKit

/// Every setting of pdr-reporter, read and validated at start. See README "Configuration".
struct PDRReporterConfig: Sendable {
    /// HTTP_HOST / HTTP_PORT (default 8082), KAFKA_BOOTSTRAP_SERVERS, LETHE_DATA_DIR.
    var standard: StandardServiceConfig

    init(reader: ConfigReader) throws {
        standard = try StandardServiceConfig(reader: reader, defaultPort: 8082)
    }
}
