import Logging
import ServiceKit

/// oauth-gateway: tenants, Atlassian apps, sign-in, the token vault. See docs/oauth-gateway.md.
@main
struct OAuthGatewayEntrypoint {
    static func main() async {
        let (logger, registry) = ServiceBootstrap.bootstrap(label: "oauth-gateway")
        let config = ServiceBootstrap.exitOnConfigError { try OAuthGatewayConfig(reader: ConfigReader()) }
        let parts = await ServiceBootstrap.exitOnStartError {
            try await buildOAuthGateway(config: config, logger: logger, registry: registry)
        }
        await ServiceBootstrap.exitOnRunError { try await parts.group.run() }
    }
}
