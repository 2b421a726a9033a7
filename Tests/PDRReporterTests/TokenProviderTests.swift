import AsyncHTTPClient
import Foundation
import Hummingbird
import ServiceLifecycle
import TestSupport
import Testing
@testable import pdr_reporter

/// `HTTPReportingTokenProvider` against a stand-in for the gateway's one internal endpoint (the gateway's own
/// implementation is another issue; the end-to-end test will use the real one).
@Suite("Reporting tokens from the gateway")
struct TokenProviderTests {
    /// What the fake gateway saw and answers.
    actor Gateway {
        var requests: [(authorization: String?, exclude: [String])] = []
        var connections = ["conn-1", "conn-2"]
        var expiresIn: TimeInterval = 3600

        func answer(authorization: String?, exclude: [String]) -> (Int, String) {
            requests.append((authorization, exclude))
            guard authorization == "Bearer internal-token-0123456789" else { return (401, "{}") }
            guard let connection = connections.first(where: { !exclude.contains($0) }) else {
                return (409, #"{"error":"no_usable_grant"}"#)
            }
            let expiresAt = ISO8601DateFormatter().string(from: Date().addingTimeInterval(expiresIn))
            return (200, #"{"accessToken":"tok-\#(connection)-\#(requests.count)","connectionId":"\#(connection)","expiresAt":"\#(expiresAt)"}"#)
        }

        func setExpiresIn(_ value: TimeInterval) { expiresIn = value }
    }

    struct Body: Decodable { var exclude: [String] }

    @Test("caches per app until near expiry, re-asks excluding a 401'd connection, maps 409 to noUsableGrant")
    func cacheExcludeAndConflict() async throws {
        let gateway = Gateway()
        let router = Router()
        router.post("/internal/v1/apps/{appId}/reporting-token") { request, context -> Response in
            let body = try await request.decode(as: Body.self, context: context)
            let (status, json) = await gateway.answer(
                authorization: request.headers[.authorization], exclude: body.exclude)
            return Response(status: .init(code: status), headers: [.contentType: "application/json"],
                            body: .init(byteBuffer: ByteBuffer(string: json)))
        }
        let (ports, continuation) = AsyncStream.makeStream(of: Int.self)
        let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
                              onServerRunning: { continuation.yield($0.localAddress?.port ?? 0) },
                              logger: makeTestLogger("fake-gateway"))
        let group = ServiceGroup(configuration: .init(services: [app], logger: makeTestLogger()))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            let port = try #require(await ports.first { _ in true })
            let http = HTTPClient(eventLoopGroupProvider: .singleton)
            let outcome: Result<Void, any Error>
            do {
                try await Self.exercise(port: port, http: http, gateway: gateway)
                outcome = .success(())
            } catch {
                outcome = .failure(error)
            }
            try await http.shutdown()
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
            try outcome.get()
        }
    }

    static func exercise(port: Int, http: HTTPClient, gateway: Gateway) async throws {
        let provider = HTTPReportingTokenProvider(
            gatewayURL: URL(string: "http://127.0.0.1:\(port)")!, internalToken: "internal-token-0123456789",
            httpClient: http)

        let first = try await provider.token(appId: "app-1", excluding: [])
        #expect(first.connectionId == "conn-1")
        #expect(try await provider.token(appId: "app-1", excluding: []) == first, "cached")
        #expect(await gateway.requests.count == 1)
        #expect(!first.description.contains(first.accessToken), "the description never shows the token")

        let second = try await provider.token(appId: "app-1", excluding: ["conn-1"])
        #expect(second.connectionId == "conn-2")
        #expect(await gateway.requests.last?.exclude == ["conn-1"])
        #expect(await gateway.requests.last?.authorization == "Bearer internal-token-0123456789")

        await #expect(throws: ReportingTokenError.noUsableGrant) {
            try await provider.token(appId: "app-1", excluding: ["conn-1", "conn-2"])
        }

        // A token about to expire (inside the 2-minute margin) is not reused.
        await gateway.setExpiresIn(60)
        let short = try await provider.token(appId: "app-2", excluding: [])
        let again = try await provider.token(appId: "app-2", excluding: [])
        #expect(short.accessToken != again.accessToken)

        let wrongSecret = HTTPReportingTokenProvider(
            gatewayURL: URL(string: "http://127.0.0.1:\(port)")!, internalToken: "wrong-token-0123456789",
            httpClient: http)
        await #expect(throws: ReportingTokenError.unavailable("gateway answered HTTP 401")) {
            try await wrongSecret.token(appId: "app-1", excluding: [])
        }
    }
}
