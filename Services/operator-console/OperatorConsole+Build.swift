import AsyncHTTPClient
import Foundation
import Logging
import Prometheus
import ServiceKit
import ServiceLifecycle
import ServiceRuntime

/// operator-console's parts, built and wired, so tests can reach into them.
struct OperatorConsoleParts {
    var group: ServiceGroup
    var console: Console
}

/// Wires operator-console in the start sequence of every service (``ServiceContext``), with the steps it does not
/// need left out: it keeps no SQLite file and creates no topic (it only reads the DLQs' watermarks). It is stateless,
/// so any number of replicas may serve it.
func buildOperatorConsole(
    config: OperatorConsoleConfig, logger: Logger, registry: PrometheusCollectorRegistry, handleSignals: Bool = true
) async throws -> OperatorConsoleParts {
    let context = try ServiceContext(
        name: "operator-console", config: config.standard, logger: logger, metrics: registry)
    let client = HTTPClient(eventLoopGroupProvider: .singleton)
    let console = Console(
        apis: ServiceAPIs(
            client: client, adminToken: config.adminToken, gateway: config.gatewayURL, executor: config.executorURL,
            reporters: config.reporterURLs, logger: logger),
        deadLetters: DeadLetterDepths(admin: context.admin, namespace: config.standard.namespace),
        session: ConsoleSession(adminToken: config.adminToken, lifetime: TimeInterval(config.sessionHours * 3600)),
        admin: BearerSecret(config.adminToken, realm: "admin token"), secureCookie: config.secureCookie,
        logger: logger)
    let http = context.httpServers(database: nil) { router in ConsoleRoutes.add(to: router, console: console) }
    let group = context.serviceGroup(
        [], resources: [HTTPClientService(client: client)], http: http, handleSignals: handleSignals)
    return OperatorConsoleParts(group: group, console: console)
}
