import Logging
import ServiceKit

/// erasure-executor: erasure fan-out, acknowledgements and the audit.
@main
struct ErasureExecutorEntrypoint {
    static func main() async throws {
        let (logger, registry) = ServiceBootstrap.bootstrap(label: "erasure-executor")
        let config = ServiceBootstrap.exitOnConfigError { try ErasureExecutorConfig(reader: ConfigReader()) }
        let parts = try await buildErasureExecutor(config: config, logger: logger, registry: registry)
        try await parts.group.run()
    }
}
