import Hummingbird
import Logging

extension HTTPServerConfig {
    /// The Hummingbird configuration for this address, with the service's name in the `Server` header.
    package func applicationConfiguration(serverName: String) -> ApplicationConfiguration {
        ApplicationConfiguration(address: .hostname(host, port: port), serverName: serverName)
    }
}
