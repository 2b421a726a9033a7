import AsyncHTTPClient
import ServiceLifecycle

/// Owns an `HTTPClient`'s lifetime in a service group: shuts it down once graceful shutdown reaches it. List it
/// before the services that use the client, so that it stops after them (a group stops in reverse order).
package struct HTTPClientService: Service {
    package let client: HTTPClient

    package init(client: HTTPClient) { self.client = client }

    package func run() async throws {
        try? await gracefulShutdown()
        try await client.shutdown()
    }
}
