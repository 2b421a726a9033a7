import Logging
import ServiceKit

/// operator-console: one page for the operator, gathered from every service's API and the broker.
@main
struct OperatorConsoleEntrypoint {
    static func main() async {
        let (logger, registry) = ServiceBootstrap.bootstrap(label: "operator-console")
        let config = ServiceBootstrap.exitOnConfigError { try OperatorConsoleConfig(reader: ConfigReader()) }
        let parts = await ServiceBootstrap.exitOnStartError {
            try await buildOperatorConsole(config: config, logger: logger, registry: registry)
        }
        await ServiceBootstrap.exitOnRunError { try await parts.group.run() }
    }
}
