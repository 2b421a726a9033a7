import AsyncHTTPClient
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import NIOHTTP1
import ServiceKit
import ServiceLifecycle
import ServiceRuntime
import Testing
import TestSupport

/// Two replicas of a leased service in one process, over the dev broker and real HTTP listeners: the standby forwards
/// what it receives to the active replica.
@Suite("A standby forwards requests to the active replica (ReplicaLease, ActiveReplicaMiddleware)")
struct StandbyForwardingTests {
    /// One replica: its context (lease), its service group running, and its listeners' URLs once bound.
    struct Replica {
        var context: ServiceContext
        var group: ServiceGroup
        var running: Task<Void, any Error>

        var urls: (url: String, internalUrl: String?)? { context.address.urls }

        static func start(_ name: String, namespace: String) async throws -> Replica {
            let context = try ServiceContextTests.context(
                namespace: namespace, partitions: 1, createTopics: true, extra: ["HTTP_INTERNAL_PORT": "0"],
                name: "forwarding-test", singleActive: true)
            try await context.ensureTopics([], deadLettered: [])
            let http = context.httpServers(
                database: nil,
                internalRoutes: { $0.get("/internal/v1/who") { _, _ in "\(name)-internal" } }
            ) { router in
                router.get("/v1/who") { _, _ in name }
                router.post("/v1/echo") { request, _ in
                    let body = try await request.body.collect(upTo: 1 << 20)
                    let note = request.headers[HTTPField.Name("X-Note")!] ?? "none"
                    return Response(
                        status: .created, headers: [.contentType: "text/plain", HTTPField.Name("X-Echoed-Note")!: note],
                        body: ResponseBody(byteBuffer: body))
                }
                router.get("/v1/redirect") { _, _ in Response(status: .found, headers: [.location: "/elsewhere"]) }
            }
            let group = context.serviceGroup([], http: http, handleSignals: false)
            return Replica(context: context, group: group, running: Task { try await group.run() })
        }

        func stop() async {
            await group.triggerGracefulShutdown()
            _ = await running.result
        }
    }

    struct Answer {
        var status: Int
        var body: String
        var headers: [String: String]
    }

    /// A client that never follows redirects, as a browser's fetch with `redirect: manual` would see them.
    static func request(
        _ client: HTTPClient, _ url: String, method: HTTPMethod = .GET, body: String? = nil,
        headers: [String: String] = [:]
    ) async throws -> Answer {
        var request = HTTPClientRequest(url: url)
        request.method = method
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let body { request.body = .bytes(ByteBuffer(string: body)) }
        let response = try await client.execute(request, timeout: .seconds(10))
        let collected = try await response.body.collect(upTo: 1 << 20)
        var fields: [String: String] = [:]
        for header in response.headers { fields[header.name.lowercased(), default: ""] += header.value }
        return Answer(status: Int(response.status.code), body: String(buffer: collected), headers: fields)
    }

    @Test("""
        the standby's public and internal routes answer with the active replica's answer: body, status, headers and \
        redirects as they are, one request id in both replicas; a request already forwarded is refused (503); once \
        the active replica stops, the standby takes over and answers itself
        """)
    func standbyForwards() async throws {
        let namespace = uniqueName("fwd")
        let client = HTTPClient(
            eventLoopGroupProvider: .singleton, configuration: .init(redirectConfiguration: .disallow))
        let first = try await Replica.start("first", namespace: namespace)
        var second: Replica?
        do {
            let firstActive = await eventually(timeout: .seconds(30), every: .milliseconds(100)) {
                first.context.lease?.current == .active && first.urls != nil
            }
            try #require(firstActive, "the first replica never became active")
            let started = try await Replica.start("second", namespace: namespace)
            second = started
            let standby = await eventually(timeout: .seconds(30), every: .milliseconds(100)) {
                started.context.lease?.current == .standby && started.urls != nil
            }
            try #require(standby, "the second replica never became a standby")
            let (url, internalUrl) = try #require(started.urls)

            let forwards = await eventually(timeout: .seconds(15), every: .milliseconds(100)) {
                (try? await Self.request(client, url + "/v1/who"))?.body == "first"
            }
            #expect(forwards, "the standby never answered with the active replica's answer")
            let internalAnswer = try await Self.request(client, try #require(internalUrl) + "/internal/v1/who")
            #expect(internalAnswer.status == 200 && internalAnswer.body == "first-internal", "\(internalAnswer)")

            let echoed = try await Self.request(
                client, url + "/v1/echo", method: .POST, body: "a body to pass on",
                headers: ["X-Note": "kept", "Content-Type": "text/plain"])
            #expect(echoed.status == 201 && echoed.body == "a body to pass on", "\(echoed)")
            #expect(echoed.headers["x-echoed-note"] == "kept" && echoed.headers["server"] == "forwarding-test")

            let redirect = try await Self.request(client, url + "/v1/redirect")
            #expect(redirect.status == 302 && redirect.headers["location"] == "/elsewhere", "\(redirect)")

            // The active replica's error, in the error shape, with the id the standby answered under.
            let missing = try await Self.request(client, url + "/v1/missing")
            let requestId = try #require(missing.headers["x-request-id"])
            #expect(missing.status == 404 && missing.body.contains("\"requestId\":\"\(requestId)\""), "\(missing)")

            let looped = try await Self.request(client, url + "/v1/who", headers: ["Lethe-Forwarded-By": "r-other"])
            #expect(looped.status == 503 && looped.body.contains("already forwarded"), "\(looped)")
            // Its readiness stays red, naming the replica it forwards to.
            let ready = try await Self.request(client, url + "/health/ready")
            let firstURL = try #require(first.urls?.url)
            #expect(ready.status == 503 && ready.body.contains("requests forwarded to replica r-"), "\(ready)")
            #expect(ready.body.replacingOccurrences(of: "\\/", with: "/").contains(firstURL), "\(ready.body)")

            await first.stop()
            let tookOver = await eventually(timeout: .seconds(30), every: .milliseconds(100)) {
                (try? await Self.request(client, url + "/v1/who"))?.body == "second"
            }
            #expect(tookOver, "the standby did not take over and answer itself")
        } catch {
            Issue.record(error)
        }
        await first.stop()
        await second?.stop()
        try await client.shutdown()
    }
}
