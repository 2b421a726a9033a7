import Foundation
import Logging
import ServiceKit

/// profile-store: the system of record for Atlassian profiles.
@main
struct ProfileStoreEntrypoint {
    static func main() async {
        if CommandLine.arguments.dropFirst().first == IngestBaseline.command {
            exit(await IngestBaseline.run(Array(CommandLine.arguments.dropFirst(2))))
        }
        let (logger, registry) = ServiceBootstrap.bootstrap(label: "profile-store")
        let config = ServiceBootstrap.exitOnConfigError { try ProfileStoreConfig(reader: ConfigReader()) }
        let parts = await ServiceBootstrap.exitOnStartError {
            try await buildProfileStore(config: config, logger: logger, registry: registry)
        }
        await ServiceBootstrap.exitOnRunError { try await parts.group.run() }
    }
}
