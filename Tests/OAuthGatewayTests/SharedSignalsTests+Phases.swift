import Contracts
import Foundation
import GRDB
import Messaging
import Synchronization
import Testing
import TestSupport

@testable import oauth_gateway

/// The phases of ``SharedSignalsTests/streamManagementAndPoll()``, in order.
extension SharedSignalsTests {
    static func expectDiscovery(_ routes: GatewayRoutes) async throws {
        let discovery = try await routes.get("/.well-known/ssf-configuration")
        #expect(discovery.status == 200 && discovery.json["spec_version"] as? String == "1_0")
        #expect(discovery.json["issuer"] as? String == "http://gateway.test")
        #expect(discovery.json["configuration_endpoint"] as? String == "http://gateway.test/ssf/streams")
        #expect(discovery.json["delivery_methods_supported"] as? [String] == ["urn:ietf:rfc:8935", "urn:ietf:rfc:8936"])
    }

    /// Creating a push stream takes the tenant's token and a delivery that makes sense; the authorization header is
    /// never shown back, and a tenant has one stream. Returns its id.
    static func createPushStream(_ routes: GatewayRoutes, tenant acme: TestTenant) async throws -> String {
        let purged = SecurityEvents.EventType.accountPurged.rawValue
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
        return streamId
    }

    /// PATCH keeps what it omits; a paused stream keeps its events waiting; PUT replaces (and drops what it omits);
    /// DELETE removes the stream.
    static func changePauseVerifyReplaceAndDelete(
        _ routes: GatewayRoutes, streamId: String, tenant acme: TestTenant
    ) async throws {
        let purged = SecurityEvents.EventType.accountPurged.rawValue
        let disabled = SecurityEvents.EventType.accountDisabled.rawValue
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
    }

    /// Poll delivery: the transmitter names the endpoint; events come, signed, until acknowledged; another tenant
    /// cannot poll the stream.
    static func pollWithAcknowledgements(
        _ routes: GatewayRoutes, tenant acme: TestTenant, other: TestTenant
    ) async throws {
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

/// The phases of ``SharedSignalsTests/pushDeliveryAcrossFailuresAndRestart()``, in order.
extension SharedSignalsTests {
    /// On the first gateway: Ada signs in to acme, acme opens a push stream to `url` and verifies it, and Ada is
    /// scrubbed. The gateway is left (stopped by the caller) while the receiver still refuses: the retries go on
    /// after the restart. Returns the tenant, Ada's userId and the stream's id.
    static func eraseASignedInUserWhileTheReceiverRefuses(
        _ harness: GatewayHarness, parts: OAuthGatewayParts, receiver: TestReceiver, url: String
    ) async throws -> (TestTenant, String, String) {
        let ada = VaultTests.ada
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

    /// The executor's completion of the erasure, on its topic.
    static func publishTheCompletion(_ harness: GatewayHarness) async throws {
        let producer = try harness.kafka.makeProducer()
        let completed = ErasureCompleted(
            erasureId: "erasure-ssf-1", tenantId: "acme", subject: String(repeating: "ab", count: 32),
            policy: .scrub, cause: .atlassianClosed,
            outcomes: [.init(participant: "oauth-gateway", outcome: .scrubbed, at: Date())],
            completedAt: Date(),
            receipt: .init(sequence: 1, entryHash: "aa", previousHash: "bb", signature: "s", keyId: "k"))
        try await withRunningServices([producer], logger: harness.kafka.logger) {
            _ = try await producer.send(try OutgoingMessage(
                event: completed, topic: harness.topics.erasureCompleted, key: "erasure-ssf-1", source: "test"))
        }
    }

    /// Nothing pending or given up; the stream remembers the receiver's last error. Waited for: the receiver counts an
    /// event as taken when it answers, the gateway forgets it when that answer reaches it, and a status read in between
    /// still shows it pending. When something is left, says what: each queued event's type and times, and the log.
    static func expectTheStreamCaughtUp(
        _ harness: GatewayHarness, parts: OAuthGatewayParts, tenant acme: TestTenant, streamId: String
    ) async throws {
        let token = try await harness.tenantToken("acme", secret: acme.secret)
        var status = HTTPAnswer(status: 0, headers: [:], body: "")
        var delivery: [String: Any] = [:]
        let caughtUp = try await eventually(timeout: .seconds(15)) {
            status = try await harness.get("/ssf/status?stream_id=\(streamId)", bearer: token)
            delivery = status.json["delivery"] as? [String: Any] ?? [:]
            return delivery["pending"] as? Int == 0 && delivery["dead"] as? Int == 0
        }
        #expect(caughtUp, "\(status.body)")
        if !caughtUp {
            let queued = try await parts.database.database.read { db in
                try Row.fetchAll(db, sql: "SELECT seq, claims, created_at, attempts, dead_at FROM ssf_events").map { row in
                    let claims = try JSONDecoder().decode(SecurityEventClaims.self, from: row["claims"] as Data)
                    return "seq \(row["seq"] as Int64): \(claims.events.keys.sorted()) txn \(claims.txn ?? "-") created "
                        + "\(row["created_at"] as Double) attempts \(row["attempts"] as Int)"
                }
            }
            let logged = harness.logs.text.split(separator: "\n").filter { !$0.hasPrefix("trace") }
            Issue.record("queued: \(queued)\nlogged:\n\(logged.suffix(300).joined(separator: "\n"))")
        }
        #expect((delivery["last_error"] as? String)?.contains("HTTP 500 invalid_request") == true)
    }

    /// Verification, account-disabled, account-purged, in that order, signed with the gateway's keys and naming the
    /// user as its ID tokens do; personal data never rides along.
    static func expectTheEventsInOrder(
        _ harness: GatewayHarness, receiver: TestReceiver, userId: String, streamId: String
    ) async throws {
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
        let ada = VaultTests.ada
        #expect(!payloads.contains(ada) && !payloads.contains("Ada") && !payloads.contains("@example.com"))
        #expect(receiver.received.withLock { $0.allSatisfy { $0.authorization == "Bearer receiver-secret" } })
    }
}
