import AsyncHTTPClient
import AtlassianClient
import Contracts
import Foundation
import GRDB
import Hummingbird
import JWTKit
import Logging
import Messaging
import NIOCore
import ServiceLifecycle
import Synchronization
import Testing
import TestSupport

@testable import oauth_gateway

/// A Shared Signals receiver on a free port: it answers each push with the status `answer` chooses (by how many it
/// was sent so far) and keeps every SET it was sent, with the `Authorization` header it came with.
final class TestReceiver: Sendable {
    struct Received: Sendable {
        var token: String
        var authorization: String?
        var status: Int
    }

    let received = Mutex<[Received]>([])
    private let answer: @Sendable (Int) -> Int
    /// How long after it counts an event the receiver answers: the gateway learns of a delivery that much later.
    private let answerDelay: Duration

    init(answerDelay: Duration = .zero, answer: @escaping @Sendable (Int) -> Int = { _ in 202 }) {
        self.answerDelay = answerDelay
        self.answer = answer
    }

    /// The tokens answered with a 2xx, in order.
    var accepted: [String] { received.withLock { $0.filter { (200..<300).contains($0.status) }.map(\.token) } }

    func run<T: Sendable>(_ body: @Sendable (_ url: String) async throws -> T) async throws -> T {
        let router = Router()
        router.post("/events") { [self] request, _ -> Response in
            let token = String(buffer: try await request.body.collect(upTo: 1 << 16))
            let status = received.withLock { list in
                let status = answer(list.count)
                list.append(Received(token: token, authorization: request.headers[.authorization], status: status))
                return status
            }
            if answerDelay > .zero { try await Task.sleep(for: answerDelay) }
            let body = status == 202 ? "" : #"{"err":"invalid_request","description":"not now"}"#
            return Response(status: .init(code: status), body: .init(byteBuffer: ByteBuffer(string: body)))
        }
        let (ports, continuation) = AsyncStream.makeStream(of: Int.self)
        let app = Application(
            router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { continuation.yield($0.localAddress?.port ?? 0) }, logger: makeTestLogger("receiver"))
        let group = ServiceGroup(configuration: .init(services: [app], logger: makeTestLogger("receiver")))
        return try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            defer { tasks.addTask { await group.triggerGracefulShutdown() } }
            guard let port = await ports.first(where: { _ in true }) else { throw CancellationError() }
            return try await body("http://127.0.0.1:\(port)/events")
        }
    }
}

/// Verifies Security Event Tokens with the gateway's JWKS, as a receiver would.
struct SETVerifier {
    let keys: JWTKeyCollection

    init(jwks: String) async throws {
        keys = JWTKeyCollection()
        try await keys.add(jwksJSON: jwks)
    }

    func verify(_ token: String) async throws -> SecurityEventClaims {
        let header = try JSONDecoder().decode(
            [String: String].self, from: Base64URL.decode(String(token.split(separator: ".")[0])) ?? Data())
        #expect(header["typ"] == "secevent+jwt" && header["alg"] == "ES256", "\(header)")
        return try await keys.verify(token, as: SecurityEventClaims.self)
    }
}

@Suite("oauth-gateway as a Shared Signals transmitter")
struct SharedSignalsTests {
    static let environment = ["GATEWAY_SSF_ALLOW_PRIVATE_ENDPOINTS": "true"]

    @Test("""
        discovery; one stream per tenant with its token: create (endpoint checked), read, change, status, verify, \
        delete; another tenant sees none of it; poll delivery with acknowledgements (RFC 8936)
        """)
    func streamManagementAndPoll() async throws {
        try await GatewayRoutes.run(environment: Self.environment) { routes in
            try await Self.expectDiscovery(routes)
            let acme = try await routes.createTenant("acme")
            let other = try await routes.createTenant("other")
            let streamId = try await Self.createPushStream(routes, tenant: acme)

            let listed = try await routes.get("/ssf/streams", bearer: acme.token)
            #expect(listed.status == 200 && listed.body.contains(streamId))
            #expect(try await routes.get("/ssf/streams", bearer: other.token).body == "[]")
            #expect(try await routes.get("/ssf/streams?stream_id=\(streamId)", bearer: other.token).status == 404)
            #expect(try await routes.get("/ssf/status?stream_id=\(streamId)", bearer: other.token).status == 404)

            try await Self.changePauseVerifyReplaceAndDelete(routes, streamId: streamId, tenant: acme)
            try await Self.pollWithAcknowledgements(routes, tenant: acme, other: other)
        }
    }

    @Test("""
        a poll stream's events not polled in time are given up like a push stream's (dead, shown to its tenant and the \
        operator), and given-up events are deleted after a while; a push stream's queue is left to its retries
        """)
    func pollEventsExpire() async throws {
        try await GatewayRoutes.run(environment: Self.environment) { routes in
            let acme = try await routes.createTenant("acme")
            let other = try await routes.createTenant("other")
            let poll = try #require(try await routes.send(.POST, "/ssf/streams", bearer: acme.token, json: [:])
                .json["stream_id"] as? String)
            let push = try #require(try await routes.send(
                .POST, "/ssf/streams", bearer: other.token,
                json: ["delivery": ["method": "urn:ietf:rfc:8935", "endpoint_url": "http://127.0.0.1:9/events"]]
            ).json["stream_id"] as? String)
            for (tenant, stream) in [(acme, poll), (other, push)] {
                _ = try await routes.send(.POST, "/ssf/verify", bearer: tenant.token, json: ["stream_id": stream, "state": "s"])
            }
            let delivery = SecurityEventDelivery(
                gateway: routes.gateway, httpClient: .shared, settings: .init(), logger: makeTestLogger("ssf-expiry"))
            func state(_ tenant: TestTenant, _ stream: String) async throws -> (Int?, Int?) {
                let status = try await routes.get("/ssf/status?stream_id=\(stream)", bearer: tenant.token)
                let delivery = status.json["delivery"] as? [String: Any]
                return (delivery?["pending"] as? Int, delivery?["dead"] as? Int)
            }
            try await delivery.expire(now: Date().addingTimeInterval(3600))
            #expect(try await state(acme, poll) == (1, 0), "within the retry window")
            try await delivery.expire(now: Date().addingTimeInterval(4 * 86_400))
            #expect(try await state(acme, poll) == (0, 1))
            #expect(try await state(other, push) == (1, 0), "a push stream's event is given up by its own retries")
            let streams = try await routes.get("/v1/ssf/streams", bearer: GatewayHarness.adminToken)
            let rows = try #require(streams.json["streams"] as? [[String: Any]], "\(streams.body)")
            #expect(rows.first { $0["tenantId"] as? String == "acme" }?["dead"] as? Int == 1)
            #expect(rows.first { $0["tenantId"] as? String == "other" }?["endpointOrigin"] as? String == "http://127.0.0.1:9")
            #expect(try await routes.get("/v1/ssf/streams", bearer: acme.token).status == 401)
            try await delivery.expire(now: Date().addingTimeInterval(40 * 86_400))
            #expect(try await state(acme, poll) == (0, 0), "given up 36 days before: deleted")
        }
    }

    @Test("push endpoints: https only and never a private, loopback or link-local address, unless the operator allows it")
    func pushEndpointRules() {
        for (endpoint, refused) in [
            ("https://receiver.example/events", false), ("http://receiver.example/events", true),
            ("https://127.0.0.1/events", true), ("https://10.1.2.3/x", true), ("https://[::1]/x", true),
            ("https://169.254.169.254/latest", true), ("https://localhost:8443/x", true), ("https://192.168.1.9/", true),
            ("ftp://receiver.example/", true), ("https://receiver.example/#frag", true), ("not a url", true),
        ] {
            #expect((Gateway.endpointProblem(endpoint, allowPrivate: false) != nil) == refused, "\(endpoint)")
        }
        #expect(Gateway.endpointProblem("http://127.0.0.1:9/events", allowPrivate: true) == nil)
    }

    @Test("""
        an erasure of a signed-in user reaches the tenant's receiver as account-disabled, then account-purged once the \
        completion comes from Kafka, signed with the gateway's keys and naming the user as its ID tokens do; a receiver \
        answering 500 for a while and a gateway restart in between lose nothing and keep the order
        """)
    func pushDeliveryAcrossFailuresAndRestart() async throws {
        // Refuses (500) until the gateway has been restarted, then takes everything; answers late, as a receiver
        // across the internet does, so the test reads the stream's status while the gateway still waits for an answer.
        let accepting = Atomic<Bool>(false)
        let receiver = TestReceiver(answerDelay: .milliseconds(300)) { _ in accepting.load(ordering: .relaxed) ? 202 : 500 }
        try await receiver.run { url in
            try await GatewayHarness.setUp { harness in
                let environment = Self.environment.merging(["GATEWAY_SSF_MAX_BACKOFF_SECONDS": "1"]) { $1 }
                let (acme, userId, streamId) = try await harness.withGateway(environment: environment) { parts in
                    try await Self.eraseASignedInUserWhileTheReceiverRefuses(
                        harness, parts: parts, receiver: receiver, url: url)
                }
                #expect(receiver.accepted.isEmpty)

                // The erasure completes while the gateway is down; the next one reads it from the topic.
                try await Self.publishTheCompletion(harness)

                accepting.store(true, ordering: .relaxed)
                try await harness.withGateway(environment: environment) { parts in
                    let delivered = await eventually(timeout: .seconds(60)) { receiver.accepted.count >= 3 }
                    #expect(delivered, "accepted \(receiver.accepted.count) of 3")
                    try await Self.expectTheStreamCaughtUp(harness, parts: parts, tenant: acme, streamId: streamId)
                    try await Self.expectTheEventsInOrder(
                        harness, receiver: receiver, userId: userId, streamId: streamId)
                }
            }
        }
    }

    @Test("""
        Atlassian's updated: the tenant hears profile-changed naming the fields that changed (never their values); a \
        refresh that changed nothing the gateway publishes sends nothing
        """)
    func profileChanged() async throws {
        try await GatewayHarness.setUp { harness in try await harness.withGateway(environment: Self.environment) { parts in
            let ada = VaultTests.ada
            let acme = try await harness.createTenant("acme", policy: "scrub")
            try await harness.ownApp(acme, clientId: "acme-app", secret: "acme-app-secret-1234")
            try await harness.sandboxUser(ada, name: "Ada Lovelace", email: "ada@example.com")
            let userId = try #require(try await harness.signInAndExchange(acme, accountId: ada)["userId"] as? String)
            let created = try await harness.send(
                .POST, "/ssf/streams", bearer: acme.token,
                json: ["events_requested": [SecurityEvents.EventType.profileChanged.rawValue]])  // poll
            let streamId = try #require(created.json["stream_id"] as? String, "\(created.body)")
            let updated = AccountStatusReported(
                appId: "acme-app", accountId: ada, tenantIds: ["acme"], status: .updated, reportedAt: Date())

            // Nothing the gateway publishes changed (Atlassian's `updated` may be about another field).
            try await parts.gateway.refreshProfiles(updated)
            let path = "/ssf/poll/\(streamId)"
            let none = try await harness.send(.POST, path, bearer: acme.token, json: ["returnImmediately": true])
            #expect((none.json["sets"] as? [String: String])?.isEmpty == true, "\(none.body)")

            _ = try await harness.send(
                .POST, harness.sandboxURL + "/_sandbox/users/\(ada)/update", bearer: nil,
                json: ["name": "Ada King", "email": "ada.king@example.com"])
            try await parts.gateway.refreshProfiles(updated)
            let polled = try await harness.send(.POST, path, bearer: acme.token, json: ["returnImmediately": true])
            let sets = try #require(polled.json["sets"] as? [String: String], "\(polled.body)")
            #expect(sets.count == 1)
            let verifier = try await SETVerifier(jwks: try await harness.get("/.well-known/jwks.json").body)
            let claims = try await verifier.verify(try #require(sets.values.first))
            let event = try #require(claims.events[SecurityEvents.EventType.profileChanged.rawValue])
            #expect(event.changedFields == ["name", "email"] && claims.subId == .user(userId, issuer: harness.gatewayURL))
            let payload = String(decoding: Base64URL.decode(String(sets.values.first!.split(separator: ".")[1])) ?? Data(),
                                 as: UTF8.self)
            #expect(!payload.contains("King") && !payload.contains("@example.com") && !payload.contains(ada))

            // The digests are sealed at rest: the column holds no digest in clear (nor, of course, the name).
            let stored = try await parts.database.database.read { db in
                try Data.fetchOne(db, sql: "SELECT profile_digests FROM connections")
            }
            let digestOfName = ProfileDigests(AtlassianProfile(accountId: ada, name: "Ada King")).digests["name"]!
            #expect(stored != nil && !String(decoding: stored!, as: UTF8.self).contains(digestOfName))
            // They are of personal fields: scrub, which keeps the connection's row, drops them with the tokens.
            #expect(try await parts.database.erase(EraseSubject(
                erasureId: "erasure-digests", tenantId: "acme", appId: "acme-app", accountId: ada, policy: .scrub,
                cause: .tenantRequest, issuedAt: Date(), deadline: Date().addingTimeInterval(86_400))) == .scrubbed)
            let afterScrub = try await parts.database.database.read { db in
                try Bool.fetchOne(db, sql: "SELECT profile_digests IS NULL FROM connections")
            }
            #expect(afterScrub == true)
        } }
    }
}
