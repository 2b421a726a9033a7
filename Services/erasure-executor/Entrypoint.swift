import Logging
import ServiceKit

/// erasure-executor: erasure fan-out, acknowledgements and the audit.
@main
struct ErasureExecutorEntrypoint {
    static func main() async {
        let (logger, registry) = ServiceBootstrap.bootstrap(label: "erasure-executor")
        let config = ServiceBootstrap.exitOnConfigError { try ErasureExecutorConfig(reader: ConfigReader()) }
        let parts = await ServiceBootstrap.exitOnStartError {
            try await buildErasureExecutor(config: config, logger: logger, registry: registry)
        }
        defer { withExtendedLifetime(parts.claim) {} }  // the claim on the data file lasts as long as the process
        await ServiceBootstrap.exitOnRunError { try await parts.group.run() }
    }
}
