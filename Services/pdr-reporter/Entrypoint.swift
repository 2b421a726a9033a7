import Logging
import ServiceKit

/// pdr-reporter: per-app Personal Data Reporting cycles.
@main
struct PDRReporterEntrypoint {
    static func main() async {
        let (logger, registry) = ServiceBootstrap.bootstrap(label: "pdr-reporter")
        let config = ServiceBootstrap.exitOnConfigError { try PDRReporterConfig(reader: ConfigReader()) }
        let parts = await ServiceBootstrap.exitOnStartError {
            try await buildPDRReporter(config: config, logger: logger, registry: registry)
        }
        await ServiceBootstrap.exitOnRunError { try await parts.group.run() }
    }
}
