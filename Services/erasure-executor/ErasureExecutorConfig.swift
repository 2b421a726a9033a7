import ServiceKit

/// Every setting of erasure-executor, read and validated at start. See README "Configuration".
struct ErasureExecutorConfig: Sendable {
    /// HTTP_HOST / HTTP_PORT (default 8083), KAFKA_BOOTSTRAP_SERVERS, LETHE_DATA_DIR.
    var standard: StandardServiceConfig

    init(reader: ConfigReader) throws {
        standard = try StandardServiceConfig(reader: reader, defaultPort: 8083)
    }
}
