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

    init(answer: @escaping @Sendable (Int) -> Int = { _ in 202 }) { self.answer = answer }

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
            let discovery = try await routes.get("/.well-known/ssf-configuration")
            #expect(discovery.status == 200 && discovery.json["spec_version"] as? String == "1_0")
            #expect(discovery.json["issuer"] as? String == "http://gateway.test")
            #expect(discovery.json["configuration_endpoint"] as? String == "http://gateway.test/ssf/streams")
            #expect(discovery.json["delivery_methods_supported"] as? [String] == ["urn:ietf:rfc:8935", "urn:ietf:rfc:8936"])

            let acme = try await routes.createTenant("acme")
            let other = try await routes.createTenant("other")
            let purged = SecurityEvents.EventType.accountPurged.rawValue
            let disabled = SecurityEvents.EventType.accountDisabled.rawValue
            let push = ["method": "urn:ietf:rfc:8935", "endpoint_url": "https://receiver.example/events",
                        "authorization_header": "Bearer receiver-secret"]
            #expect(try await routes.send(.POST, "/ssf/streams", bearer: nil, json: ["delivery": push]).status == 401)
            for (delivery, reason) in [
                (["method": "push"], "delivery.method"),
                (["method": "urn:ietf:rfc:8935"], "endpoint_url is required"),
                (["method": "urn:ietf:rfc:8936", "endpoint_url": "https://x.example/"], "transmitter supplies"),
            ] {
                let refused = try await routes.send(
                    .POST, "/ssf/streams", bearer: acme.token, json: ["delivery": delivery])
                #expect(refused.status == 400 && refused.body.contains(reason), "\(delivery): \(refused.body)")
            }
            let created = try await routes.send(
                .POST, "/ssf/streams", bearer: acme.token,
                json: ["delivery": push, "events_requested": [purged, "urn:example:unknown"], "description": "acme"])
            #expect(created.status == 201, "\(created.body)")
            let streamId = try #require(created.json["stream_id"] as? String)
            #expect(created.json["aud"] as? String == "acme" && created.json["iss"] as? String == "http://gateway.test")
            #expect(created.json["events_delivered"] as? [String] == [purged])
            #expect(!created.body.contains("receiver-secret"), "the authorization header is never shown back")
            #expect(try await routes.send(.POST, "/ssf/streams", bearer: acme.token, json: ["delivery": push]).status == 409)

            let listed = try await routes.get("/ssf/streams", bearer: acme.token)
            #expect(listed.status == 200 && listed.body.contains(streamId))
            #expect(try await routes.get("/ssf/streams", bearer: other.token).body == "[]")
            #expect(try await routes.get("/ssf/streams?stream_id=\(streamId)", bearer: other.token).status == 404)
            #expect(try await routes.get("/ssf/status?stream_id=\(streamId)", bearer: other.token).status == 404)

            let patched = try await routes.send(
                .PATCH, "/ssf/streams", bearer: acme.token, json: ["stream_id": streamId, "events_requested": [purged, disabled]])
            #expect(patched.status == 200 && patched.json["events_delivered"] as? [String] == [disabled, purged])
            #expect(patched.json["description"] as? String == "acme", "a PATCH keeps what it omits")

            let paused = try await routes.send(
                .POST, "/ssf/status", bearer: acme.token, json: ["stream_id": streamId, "status": "paused", "reason": "maintenance"])
            #expect(paused.status == 200 && paused.json["status"] as? String == "paused")
            let delivery = try #require(paused.json["delivery"] as? [String: Any])
            #expect(delivery["pending"] as? Int == 1, "the stream-updated event waits: \(paused.body)")
            #expect(try await routes.send(.POST, "/ssf/verify", bearer: acme.token, json: ["stream_id": streamId, "state": "s1"])
                .status == 204)
            let status = try await routes.get("/ssf/status?stream_id=\(streamId)", bearer: acme.token)
            #expect((status.json["delivery"] as? [String: Any])?["pending"] as? Int == 2)
            // A replacement without delivery is polled (SSF: the transmitter assumes poll), and drops what it omits.
            let put = try await routes.send(.PUT, "/ssf/streams", bearer: acme.token, json: ["stream_id": streamId])
            #expect(put.status == 200 && (put.json["delivery"] as? [String: Any])?["method"] as? String == "urn:ietf:rfc:8936")
            #expect(put.json["events_requested"] as? [String] == [] && put.json["description"] == nil, "\(put.body)")
            #expect(try await routes.perform(.DELETE, "/ssf/streams?stream_id=\(streamId)",
                                             headers: [("authorization", "Bearer \(acme.token)")], body: nil).status == 204)
            #expect(try await routes.get("/ssf/status?stream_id=\(streamId)", bearer: acme.token).status == 404)

            // Poll delivery: the transmitter names the endpoint; events come until acknowledged.
            let polled = try await routes.send(.POST, "/ssf/streams", bearer: acme.token, json: [:])  // poll by default
            let pollId = try #require(polled.json["stream_id"] as? String)
            let pollURL = try #require((polled.json["delivery"] as? [String: Any])?["endpoint_url"] as? String)
            #expect(pollURL == "http://gateway.test/ssf/poll/\(pollId)")
            for state in ["a", "b"] {
                _ = try await routes.send(.POST, "/ssf/verify", bearer: acme.token, json: ["stream_id": pollId, "state": state])
            }
            let path = "/ssf/poll/\(pollId)"
            let first = try await routes.send(.POST, path, bearer: acme.token, json: ["maxEvents": 1, "returnImmediately": true])
            let firstSets = try #require(first.json["sets"] as? [String: String])
            #expect(firstSets.count == 1 && first.json["moreAvailable"] as? Bool == true)
            let verifier = try await SETVerifier(jwks: try await routes.get("/.well-known/jwks.json").body)
            let (jti, token) = try #require(firstSets.first)
            let claims = try await verifier.verify(token)
            #expect(claims.jti == jti && claims.aud == "acme" && claims.iss == "http://gateway.test")
            #expect(claims.subId == .stream(pollId) && claims.events[SecurityEvents.EventType.verification.rawValue]?.state == "a")
            let second = try await routes.send(.POST, path, bearer: acme.token, json: ["ack": [jti], "returnImmediately": true])
            let secondSets = try #require(second.json["sets"] as? [String: String])
            #expect(secondSets.count == 1 && second.json["moreAvailable"] as? Bool == false)
            let last = try await verifier.verify(try #require(secondSets.values.first))
            #expect(last.events.values.first?.state == "b")
            let empty = try await routes.send(
                .POST, path, bearer: acme.token, json: ["setErrs": [last.jti: ["err": "invalid_request"]], "returnImmediately": true])
            #expect((empty.json["sets"] as? [String: String])?.isEmpty == true)
            #expect(try await routes.send(.POST, path, bearer: other.token, json: [:]).status == 404)
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
        // Refuses (500) until the gateway has been restarted, then takes everything.
        let accepting = Atomic<Bool>(false)
        let receiver = TestReceiver { _ in accepting.load(ordering: .relaxed) ? 202 : 500 }
        try await receiver.run { url in
            try await GatewayHarness.setUp { harness in
                let environment = Self.environment.merging(["GATEWAY_SSF_MAX_BACKOFF_SECONDS": "1"]) { $1 }
                let ada = VaultTests.ada
                let (acme, userId, streamId) = try await harness.withGateway(environment: environment) { parts in
                    let acme = try await harness.createTenant("acme", policy: "scrub")
                    try await harness.ownApp(acme, clientId: "acme-app", secret: "acme-app-secret-1234")
                    try await harness.sandboxUser(ada, name: "Ada Lovelace", email: "ada@example.com")
                    let userId = try #require(try await harness.signInAndExchange(acme, accountId: ada)["userId"] as? String)
                    let created = try await harness.send(
                        .POST, "/ssf/streams", bearer: acme.token,
                        json: [
                            "delivery": ["method": "urn:ietf:rfc:8935", "endpoint_url": url,
                                         "authorization_header": "Bearer receiver-secret"],
                            "events_requested": SecurityEvents.EventType.requestable.map(\.rawValue),
                        ])
                    let streamId = try #require(created.json["stream_id"] as? String, "\(created.body)")
                    _ = try await harness.send(
                        .POST, "/ssf/verify", bearer: acme.token, json: ["stream_id": streamId, "state": "hello"])
                    let outcome = try await parts.database.erase(EraseSubject(
                        erasureId: "erasure-ssf-1", tenantId: "acme", appId: "acme-app", accountId: ada,
                        policy: .scrub, cause: .atlassianClosed, issuedAt: Date(), deadline: Date().addingTimeInterval(86_400)))
                    #expect(outcome == .scrubbed)
                    // The completions' consumer is in its group before the gateway stops: on the dev broker a member
                    // that leaves in the middle of its first join holds the next one's join up for minutes.
                    let joined = await eventually(timeout: .seconds(40)) {
                        harness.logs.text.contains("\(harness.topics.erasureCompleted)[")
                    }
                    #expect(joined, "the completions' consumer never joined its group")
                    // Stopped while the receiver still refuses: the retries go on after the restart.
                    let refusing = await eventually(timeout: .seconds(20)) { receiver.received.withLock { $0.count } >= 2 }
                    #expect(refusing, "the receiver was never tried")
                    return (acme, userId, streamId)
                }
                #expect(receiver.accepted.isEmpty)

                // The erasure completes while the gateway is down; the next one reads it from the topic.
                let producer = try harness.kafka.makeProducer()
                let completed = ErasureCompleted(
                    erasureId: "erasure-ssf-1", tenantId: "acme", subject: String(repeating: "ab", count: 32),
                    policy: .scrub, cause: .atlassianClosed,
                    outcomes: [.init(participant: "oauth-gateway", outcome: .scrubbed, at: Date())],
                    completedAt: Date(),
                    receipt: .init(sequence: 1, entryHash: "aa", previousHash: "bb", signature: "s", keyId: "k"))
                try await withRunningServices([producer], logger: harness.kafka.logger) {
                    try await producer.send(try OutgoingMessage(
                        event: completed, topic: harness.topics.erasureCompleted, key: "erasure-ssf-1", source: "test"))
                }

                accepting.store(true, ordering: .relaxed)
                try await harness.withGateway(environment: environment) { _ in
                    let delivered = await eventually(timeout: .seconds(60)) { receiver.accepted.count >= 3 }
                    #expect(delivered, "accepted \(receiver.accepted.count) of 3")
                    let token = try await harness.tenantToken("acme", secret: acme.secret)
                    let status = try await harness.get("/ssf/status?stream_id=\(streamId)", bearer: token)
                    let delivery = try #require(status.json["delivery"] as? [String: Any])
                    #expect(delivery["pending"] as? Int == 0 && delivery["dead"] as? Int == 0, "\(status.body)")
                    #expect((delivery["last_error"] as? String)?.contains("HTTP 500 invalid_request") == true)

                    let verifier = try await SETVerifier(jwks: try await harness.get("/.well-known/jwks.json").body)
                    var claims: [SecurityEventClaims] = []
                    for token in receiver.accepted { claims.append(try await verifier.verify(token)) }
                    #expect(claims.map { $0.events.keys.first } == [
                        SecurityEvents.EventType.verification.rawValue, SecurityEvents.EventType.accountDisabled.rawValue,
                        SecurityEvents.EventType.accountPurged.rawValue,
                    ])
                    #expect(Set(claims.map(\.jti)).count == 3)
                    #expect(claims.allSatisfy { $0.aud == "acme" && $0.iss == harness.gatewayURL })
                    #expect(claims[0].events.values.first?.state == "hello" && claims[0].subId == .stream(streamId))
                    for user in claims.dropFirst() {
                        #expect(user.subId == .user(userId, issuer: harness.gatewayURL) && user.txn == "erasure-ssf-1")
                        #expect(user.events.values.first?.policy == "scrub" && user.events.values.first?.cause == "atlassian-closed")
                    }
                    // Personal data never rides along.
                    var payloads = ""
                    for token in receiver.accepted {
                        let payload = Base64URL.decode(String(token.split(separator: ".")[1])) ?? Data()
                        payloads += String(decoding: payload, as: UTF8.self)
                    }
                    #expect(!payloads.contains(ada) && !payloads.contains("Ada") && !payloads.contains("@example.com"))
                    #expect(receiver.received.withLock { $0.allSatisfy { $0.authorization == "Bearer receiver-secret" } })
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
