import Hummingbird
import Logging
import NIOCore
import Prometheus
import ServiceKit

/// The request context of the sandbox: the basic one plus the connection, which the `drop` fault closes to make a
/// client see a dropped connection instead of an answer.
struct SandboxRequestContext: RequestContext {
    var coreContext: CoreRequestContextStorage
    let channel: any Channel

    init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }
}

/// Builds the sandbox: state, Atlassian's routes, the control API and the operational routes. All wiring lives here so
/// tests run exactly what `swift run atlassian-sandbox` runs, on their own port.
///
/// - Parameters:
///   - state: pass one to reach the state directly from a test; a fresh one by default.
///   - onServerRunning: called with the bound port once listening (tests use port 0 and learn the port here).
func buildApplication(
    config: SandboxConfig,
    logger: Logger,
    registry: PrometheusCollectorRegistry,
    state: SandboxState? = nil,
    onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in }
) -> some ApplicationProtocol {
    let state = state ?? SandboxState(config: config)
    let router = Router(context: SandboxRequestContext.self)
    // Before the routes (it applies to those added after it); errors as thrown: the sandbox answers like Atlassian.
    router.add(middleware: RequestLogMiddleware(errorBodies: false))
    router.addOperationalRoutes(readiness: [], registry: registry)
    addAtlassianRoutes(router, state: state)
    addControlRoutes(router, state: state)
    let host = config.http.host
    return Application(
        router: router,
        configuration: config.http.applicationConfiguration(serverName: "atlassian-sandbox"),
        onServerRunning: { channel in
            let port = channel.localAddress?.port ?? config.http.port
            logger.info("atlassian-sandbox listening on http://\(host):\(port)")
            await onServerRunning(port)
        },
        logger: logger
    )
}
