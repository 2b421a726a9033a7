import ServiceKit

/// `swift run atlassian-sandbox`: an in-memory Atlassian (auth + API + control API) on port 8090.
@main
enum AtlassianSandbox {
    static func main() async {
        let (logger, registry) = ServiceBootstrap.bootstrap(label: "atlassian-sandbox")
        let config = ServiceBootstrap.exitOnConfigError { try SandboxConfig(reader: ConfigReader()) }
        let app = buildApplication(config: config, logger: logger, registry: registry)
        await ServiceBootstrap.exitOnRunError { try await app.runService() }
    }
}
