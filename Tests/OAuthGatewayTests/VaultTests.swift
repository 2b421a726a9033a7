import AtlassianClient
import Contracts
import Foundation
import GRDB
import Messaging
import Testing
import TestSupport

@testable import oauth_gateway

@Suite("oauth-gateway token vault, reporting tokens, updated and erasure, over HTTP and the dev broker")
struct VaultTests {
    static let ada = "5b10ac8d82e05b22cc7d4ef5"
    static let grace = "5b10ac8d82e05b22cc7d4ef6"

    /// A tenant `acme` with its own app `acme-app` and the given users signed in.
    static func signedIn(
        _ harness: GatewayHarness, users: [(String, String, String)] = [(ada, "Ada Lovelace", "ada@example.com")]
    ) async throws -> TestTenant {
        let acme = try await harness.createTenant("acme", policy: "scrub")
        try await harness.ownApp(acme, clientId: "acme-app", secret: "acme-app-secret-1234")
        for (accountId, name, email) in users {
            try await harness.sandboxUser(accountId, name: name, email: email)
            _ = try await harness.signInAndExchange(acme, accountId: accountId)
        }
        return acme
    }

    /// Makes the gateway believe the connection's access token has expired (the sandbox's own clock is left alone).
    static func expireAccessTokens(_ parts: OAuthGatewayParts) async throws {
        try await parts.database.database.write { db in
            try db.execute(sql: "UPDATE connections SET access_expires_at = ?", arguments: [Date().timeIntervalSince1970 - 1])
        }
    }

    static func onlyConnection(_ parts: OAuthGatewayParts) async throws -> String {
        let id = try await parts.database.database.read { db in
            try String.fetchOne(db, sql: "SELECT connection_id FROM connections")
        }
        return try #require(id)
    }

    @Test("20 concurrent token requests for an expired connection, in two vaults over one file: one refresh, grant alive")
    func refreshIsSingleFlight() async throws {
        try await GatewayHarness.run { harness, parts in
            _ = try await Self.signedIn(harness)
            let connection = try await Self.onlyConnection(parts)
            try await Self.expireAccessTokens(parts)
            // A second vault over the same SQLite file stands for a second gateway process: only the lease keeps the
            // two from refreshing at once.
            let gateway = parts.gateway
            let otherProcess = TokenVault(
                database: parts.database, box: gateway.box, atlassian: gateway.atlassian,
                credentials: { try await gateway.credentials(of: $0) }, logger: makeTestLogger("vault-2"))
            let grants = try await withThrowingTaskGroup(of: AccessGrant.self) { group in
                for index in 0..<20 {
                    let vault = index.isMultiple(of: 2) ? gateway.vault : otherProcess
                    group.addTask { try await vault.accessToken(connectionId: connection) }
                }
                return try await group.reduce(into: [AccessGrant]()) { $0.append($1) }
            }
            #expect(grants.count == 20 && Set(grants.map(\.accessToken)).count == 1)
            #expect(try await harness.tokenCalls("acme-app").refreshes == 1)
            // The grant is still valid: the refreshed token reads /me, and another refresh works (no revoked family).
            let me = try await gateway.atlassian.me(accessToken: grants[0].accessToken)
            #expect(me.accountId == Self.ada)
            try await Self.expireAccessTokens(parts)
            _ = try await gateway.vault.accessToken(connectionId: connection)
            #expect(try await harness.tokenCalls("acme-app").refreshes == 2)
        }
    }

    @Test("20 updated statuses for one connection whose token Atlassian no longer accepts: one refresh, profile republished")
    func updatedRefreshesOnce() async throws {
        try await GatewayHarness.run { harness, parts in
            _ = try await Self.signedIn(harness)
            _ = try await harness.send(
                .POST, harness.sandboxURL + "/_sandbox/users/\(Self.ada)/update", bearer: nil, json: ["name": "Ada King"])
            // The sandbox's clock moves past the access token's hour; the gateway still believes it valid, so the
            // first /me answers 401 and the token is refreshed — once, for all twenty.
            _ = try await harness.send(.POST, harness.sandboxURL + "/_sandbox/clock", bearer: nil, json: ["advanceSeconds": 3700])
            let producer = try harness.kafka.makeProducer()
            try await withRunningServices([producer], logger: harness.kafka.logger) {
                let status = AccountStatusReported(
                    appId: "acme-app", accountId: Self.ada, tenantIds: ["acme"], status: .updated, reportedAt: Date())
                try await producer.send((0..<20).map { _ in
                    try OutgoingMessage(event: status, topic: harness.topics.pdrStatus, key: "acme-app:\(Self.ada)", source: "test")
                })
            }
            let profiles = try await readUntil(harness.kafka, topic: harness.topics.profiles) { messages in
                messages.compactMap { try? $0.decodeEvent(ProfileFetched.self) }.filter { $0.name == "Ada King" }.count >= 20
            }.compactMap { try? $0.decodeEvent(ProfileFetched.self) }
            #expect(profiles.filter { $0.name == "Ada King" }.allSatisfy { $0.tenantId == "acme" && $0.appId == "acme-app" })
            // A refresh is filed under the same user as the sign-in.
            let signInUser = try #require(profiles.first { $0.name != "Ada King" }?.userId)
            #expect(profiles.allSatisfy { $0.userId == signInUser })
            #expect(try await harness.tokenCalls("acme-app").refreshes == 1)
            #expect(try await harness.reportingToken("acme-app").status == 200)
        }
    }

    @Test("invalid_grant: the connection needs a new sign-in, ErasureRequested(refresh-failed, scrub), 409 for reporting")
    func lostGrantRequestsErasure() async throws {
        try await GatewayHarness.run { harness, parts in
            _ = try await Self.signedIn(harness)
            _ = try await harness.send(
                .POST, harness.sandboxURL + "/_sandbox/grants/revoke", bearer: nil,
                json: ["clientId": "acme-app", "accountId": Self.ada])
            try await Self.expireAccessTokens(parts)
            let answer = try await harness.reportingToken("acme-app")
            #expect(answer.status == 409)
            let connection = try #require(try await parts.database.connection(try await Self.onlyConnection(parts)))
            #expect(connection.state == .reconnectRequired && connection.refreshTokenSealed == nil)
            let requests = try await readUntil(harness.kafka, topic: harness.topics.erasureRequests) { !$0.isEmpty }
            let request = try requests[0].decodeEvent(ErasureRequested.self)
            #expect(request.cause == .refreshFailed && request.policy == .scrub && request.tenantId == "acme")
            #expect(request.appId == "acme-app" && request.accountId == Self.ada)
            #expect(String(decoding: requests[0].key ?? [], as: UTF8.self) == "acme-app:\(Self.ada)")
            // Asking again publishes nothing more: the grant was lost once.
            #expect(try await harness.reportingToken("acme-app").status == 409)
            #expect(try await harness.tokenCalls("acme-app").refreshes == 1)
        }
    }

    @Test("""
        reporting token: owner first, another connection after a 401 exclusion, 409 when none is left; internal \
        token required; only on the internal listener, with the metrics
        """)
    func reportingTokenExclusion() async throws {
        try await GatewayHarness.run { harness, _ in
            _ = try await Self.signedIn(harness, users: [
                (Self.ada, "Ada Lovelace", "ada@example.com"), (Self.grace, "Grace Hopper", "grace@example.com"),
            ])
            let first = try await harness.reportingToken("acme-app")
            #expect(first.status == 200)
            let owner = try #require(first.json["connectionId"] as? String)
            let second = try await harness.reportingToken("acme-app", exclude: [owner])
            let other = try #require(second.json["connectionId"] as? String)
            #expect(other != owner && second.json["accessToken"] as? String != first.json["accessToken"] as? String)
            #expect(try await harness.reportingToken("acme-app").json["connectionId"] as? String == owner)
            #expect(try await harness.reportingToken("acme-app", exclude: [owner, other]).status == 409)
            #expect(try await harness.reportingToken("unknown-app").status == 409)
            let route = "/internal/v1/apps/acme-app/reporting-token"
            let unauthorized = try await harness.send(
                .POST, harness.internalURL + route, bearer: GatewayHarness.adminToken, json: [:])
            #expect(unauthorized.status == 401)
            // Never on the public port, with the right token or not; nor are the metrics.
            let onPublicPort = try await harness.send(
                .POST, route, bearer: GatewayHarness.internalToken, json: [:])
            #expect(onPublicPort.status == 404)
            #expect(try await harness.get("/metrics").status == 404)
            let metrics = try await harness.get(harness.internalURL + "/metrics")
            #expect(metrics.status == 200 && metrics.headers.first(name: "content-type")?.hasPrefix("text/plain") == true)
            #expect(try await harness.get(harness.internalURL + "/health/ready").status == 200)
            let malformed = try await harness.request(
                .POST, harness.internalURL + route,
                headers: [("authorization", "Bearer \(GatewayHarness.internalToken)")], body: "{nope")
            #expect(malformed.status == 400)
            // The token reports to the sandbox's PDR endpoint as that app.
            let result = try await harness.sandboxReport(token: try #require(first.json["accessToken"] as? String))
            #expect(result == 204 || result == 200)
        }
    }

    @Test("no app secret, Atlassian token, tenant secret, state or sign-in code in the SQLite file or the trace logs")
    func secretsNeverStoredOrLoggedInClear() async throws {
        try await GatewayHarness.run { harness, parts in
            let acme = try await Self.signedIn(harness)
            try await Self.expireAccessTokens(parts)
            let token = try await harness.reportingToken("acme-app")
            let accessToken = try #require(token.json["accessToken"] as? String)
            let callback = try await harness.callbackURL(tenant: "acme", accountId: Self.ada)
            let state = try #require(GatewayHarness.query(of: callback)["state"])
            let back = GatewayHarness.query(of: try #require(try await harness.get(callback).location))
            let code = try #require(back["code"])
            try await parts.database.database.checkpoint()
            let file = harness.databaseBytes()
            let logs = harness.logs.text
            #expect(file.count > 10_000 && logs.contains("signed in"))
            // Sandbox tokens all start sbx_at_ / sbx_rt_, so this catches every one, not only those the test knows.
            for secret in ["acme-app-secret-1234", "sbx_at_", "sbx_rt_", accessToken, acme.secret, state, code, acme.token] {
                #expect(!file.contains(secret), "SQLite file holds \(secret.prefix(8))…")
                #expect(!logs.contains(secret), "logs hold \(secret.prefix(8))…")
            }
        }
    }

    @Test("keep-alive: a connection refreshed before 90 idle days survives them; one left idle loses its grant and is erased")
    func keepAliveOutlivesTheIdleExpiry() async throws {
        try await GatewayHarness.run { harness, parts in
            _ = try await Self.signedIn(harness, users: [
                (Self.ada, "Ada Lovelace", "ada@example.com"), (Self.grace, "Grace Hopper", "grace@example.com"),
            ])
            let day: TimeInterval = 86_400
            // One a round, so only the older connection (Ada's) is kept alive in the first round.
            let keepAlive = ConnectionKeepAlive(
                database: parts.database, vault: parts.gateway.vault,
                settings: KeepAliveSettings(after: 30 * day, batch: 1), logger: harness.kafka.logger)
            #expect(await keepAlive.round() == 0, "nothing is 30 days old yet")
            func advanceSandbox(days: Double) async throws {
                _ = try await harness.send(.POST, harness.sandboxURL + "/_sandbox/clock", bearer: nil,
                                           json: ["advanceSeconds": days * day])
            }
            try await advanceSandbox(days: 61)
            #expect(await keepAlive.round(now: Date().addingTimeInterval(61 * day)) == 1)
            #expect(try await harness.tokenCalls("acme-app").refreshes == 1)

            // 95 days after the sign-ins: Grace's refresh token has been idle past Atlassian's 90 days, Ada's 34.
            try await advanceSandbox(days: 34)
            let everyone = ConnectionKeepAlive(
                database: parts.database, vault: parts.gateway.vault,
                settings: KeepAliveSettings(after: 30 * day, batch: 20), logger: harness.kafka.logger)
            #expect(await everyone.round(now: Date().addingTimeInterval(95 * day)) == 1)
            let ada = try #require(try await parts.database.connections(appId: "acme-app", accountId: Self.ada, tenantIds: []).first)
            let grace = try #require(try await parts.database.connections(appId: "acme-app", accountId: Self.grace, tenantIds: []).first)
            #expect(ada.state == .active && ada.refreshTokenSealed != nil)
            #expect(grace.state == .reconnectRequired && grace.refreshTokenSealed == nil)
            // Grace's grant is gone: her stale profile is to be erased (the vault's refresh-failed path).
            let requests = try await readUntil(harness.kafka, topic: harness.topics.erasureRequests) { $0.count >= 1 }
                .map { try $0.decodeEvent(ErasureRequested.self) }
            #expect(requests.map(\.accountId) == [Self.grace] && requests.allSatisfy { $0.cause == .refreshFailed })
            // Ada's connection still reports.
            #expect(try await harness.reportingToken("acme-app").status == 200)
        }
    }

    @Test("a closed account under scrub: the connection stays with its user, without tokens or the accountId")
    func closedScrubDropsTheAccountId() async throws {
        try await GatewayHarness.run { harness, parts in
            _ = try await Self.signedIn(harness, users: [
                (Self.ada, "Ada Lovelace", "ada@example.com"), (Self.grace, "Grace Hopper", "grace@example.com"),
            ])
            let outcome = try await parts.database.erase(EraseSubject(
                erasureId: "erasure-closed-scrub", tenantId: "acme", appId: "acme-app", accountId: Self.ada,
                policy: .scrub, cause: .atlassianClosed, issuedAt: Date(), deadline: Date().addingTimeInterval(86_400)))
            #expect(outcome == .scrubbed)
            let rows = try await parts.database.database.read { db in
                try Row.fetchAll(db, sql: "SELECT account_id, user_id, state FROM connections ORDER BY account_id")
                    .map { ($0["account_id"] as String?, $0["user_id"] as String, $0["state"] as String) }
            }
            #expect(rows.count == 2)
            #expect(rows.contains { $0.0 == nil && $0.2 == "erased" && !$0.1.isEmpty }, "\(rows)")
            #expect(rows.contains { $0.0 == Self.grace && $0.2 == "active" })
            // As the erasure handler asks of the checkpointer after a batch.
            try await parts.database.database.checkpoint()
            let clean = await eventually(timeout: .seconds(10)) { !harness.databaseBytes().contains(Self.ada) }
            #expect(clean, "the closed account's accountId stayed in the gateway's SQLite files")
            #expect(harness.databaseBytes().contains(Self.grace), "the byte scan cannot see an accountId; it proves nothing")
        }
    }

    @Test("a profile re-fetched while an erasure was applied is never published, under every policy and cause")
    func refreshAfterErasureIsDropped() async throws {
        try await GatewayHarness.run { harness, parts in
            let lin = "5b10ac8d82e05b22cc7d4ef7"
            let kim = "5b10ac8d82e05b22cc7d4ef9"
            _ = try await Self.signedIn(harness, users: [
                (Self.ada, "Ada Lovelace", "ada@example.com"), (Self.grace, "Grace Hopper", "grace@example.com"),
                (lin, "Lin Test", "lin@example.com"), (kim, "Kim Test", "kim@example.com"),
            ])
            let cases: [(String, ErasurePolicy, ErasureCause)] = [
                (Self.ada, .delete, .tenantRequest), (Self.grace, .scrub, .refreshFailed),
                (lin, .disassociate, .atlassianClosed),
            ]
            // As refreshProfiles does: the connection is read (active), then /me answers while the erasure lands.
            var read: [String: ConnectionRecord] = [:]
            for accountId in cases.map(\.0) + [kim] {
                read[accountId] = try #require(
                    try await parts.database.connections(appId: "acme-app", accountId: accountId, tenantIds: []).first)
            }
            for (accountId, policy, cause) in cases {
                _ = try await parts.database.erase(EraseSubject(
                    erasureId: "erasure-\(UUID().uuidString)", tenantId: "acme", appId: "acme-app", accountId: accountId,
                    policy: policy, cause: cause, issuedAt: Date(), deadline: Date().addingTimeInterval(86_400)))
            }
            for accountId in cases.map(\.0) + [kim] {
                let connection = try #require(read[accountId])
                let published = try await parts.database.profileRefreshed(
                    ProfileFetched(tenantId: "acme", appId: "acme-app", accountId: accountId, userId: connection.userId,
                                   name: "Refreshed \(accountId)", email: "new@example.com", nickname: "n",
                                   picture: "https://avatars.example/x.png", fetchedAt: Date()),
                    connectionId: connection.connectionId, digests: Data([1]), changed: nil)
                #expect(published == (accountId == kim), "\(accountId)")
            }
            // Only Kim's refresh reached the profiles topic.
            let profiles = try await readUntil(harness.kafka, topic: harness.topics.profiles) { messages in
                messages.contains { (try? $0.decodeEvent(ProfileFetched.self))?.name == "Refreshed \(kim)" }
            }.compactMap { try? $0.decodeEvent(ProfileFetched.self) }.filter { $0.name?.hasPrefix("Refreshed") == true }
            #expect(profiles.map(\.accountId) == [kim])
        }
    }

    @Test("erasure: delete, scrub and disassociate applied to connections and acknowledged; closed accounts cannot sign in")
    func erasureParticipant() async throws {
        try await GatewayHarness.run { harness, parts in
            let acme = try await Self.signedIn(harness, users: [
                (Self.ada, "Ada Lovelace", "ada@example.com"), (Self.grace, "Grace Hopper", "grace@example.com"),
            ])
            let lin = "5b10ac8d82e05b22cc7d4ef7"
            try await harness.sandboxUser(lin, name: "Lin Test", email: "lin@example.com")
            _ = try await harness.signInAndExchange(acme, accountId: lin)
            func command(_ accountId: String, _ policy: ErasurePolicy, cause: ErasureCause = .tenantRequest) -> EraseSubject {
                EraseSubject(
                    erasureId: "erasure-\(UUID().uuidString)", tenantId: "acme", appId: "acme-app",
                    accountId: accountId, policy: policy, cause: cause, issuedAt: Date(),
                    deadline: Date().addingTimeInterval(86_400))
            }
            // Ada signs in once more, but the tenant has not exchanged the code when the erasure arrives.
            let unexchanged = try #require(try await harness.signIn(tenant: "acme", accountId: Self.ada)["code"])
            try await Self.eraseAndExpectTheAcks(harness, commands: [
                command(Self.ada, .delete, cause: .atlassianClosed), command(Self.grace, .scrub),
                command(lin, .disassociate), command("5b10ac8d82e05b22cc7d4ef8", .delete),
            ])
            try await Self.expectTheConnectionsErased(parts)
            #expect(try await harness.reportingToken("acme-app").status == 409)
            // The code issued before the erasure no longer yields Ada's profile.
            let late = try await harness.send(
                .POST, "/v1/signin/exchange", bearer: acme.token, json: ["code": unexchanged])
            #expect(late.status == 400 && !late.body.contains("Ada"))
            // Their names and emails leave the file and its WAL too (the outbox's profiles of the accounts go with
            // the erasure; the WAL is emptied within about a second). So does the accountId of Ada, closed and
            // deleted: the suppression list keeps only its digest.
            let pii = [
                "Ada Lovelace", "ada@example.com", "Grace Hopper", "grace@example.com", "lin@example.com", Self.ada,
            ]
            let clean = await eventually(timeout: .seconds(10)) {
                let file = harness.databaseBytes()
                return pii.allSatisfy { !file.contains($0) }
            }
            #expect(clean, "\(pii.filter { harness.databaseBytes().contains($0) }) still in the gateway's SQLite files")

            // Ada was closed: she cannot sign in again; the tenant hears access_denied.
            let refused = try await harness.signIn(tenant: "acme", accountId: Self.ada)
            #expect(refused["error"] == "access_denied" && refused["error_description"] == "account closed")
            #expect(try await parts.database.connections(appId: "acme-app", accountId: Self.ada, tenantIds: []).isEmpty)
            // Grace (scrubbed) may sign in again: a new grant on the kept user.
            _ = try await harness.signInAndExchange(acme, accountId: Self.grace)
            #expect(try await harness.reportingToken("acme-app").status == 200)
        }
    }
}

/// The phases of ``VaultTests/erasureParticipant()``.
extension VaultTests {
    /// The commands go out on the topic; the gateway acks each with the outcome its policy and the account call for
    /// (delete, scrub, disassociate, and nothing held).
    private static func eraseAndExpectTheAcks(_ harness: GatewayHarness, commands: [EraseSubject]) async throws {
        let producer = try harness.kafka.makeProducer()
        try await withRunningServices([producer], logger: harness.kafka.logger) {
            try await producer.send(commands.map {
                try OutgoingMessage(event: $0, topic: harness.topics.erasureCommands, key: "acme-app:\($0.accountId)", source: "test")
            })
        }
        let acks = try await readUntil(harness.kafka, topic: harness.topics.erasureAcks) { $0.count >= 4 }
            .map { try $0.decodeEvent(ErasureAcknowledged.self) }
        let outcomes = Dictionary(acks.map { ($0.erasureId, $0.outcome) }) { first, _ in first }
        #expect(outcomes[commands[0].erasureId] == .erased && outcomes[commands[1].erasureId] == .scrubbed)
        #expect(outcomes[commands[2].erasureId] == .disassociated && outcomes[commands[3].erasureId] == .nothingHeld)
        #expect(acks.allSatisfy { $0.participant == "oauth-gateway" })
    }

    /// Ada's connection (deleted) is gone; Grace's (scrubbed) and Lin's (disassociated, no accountId) stay, tokenless.
    private static func expectTheConnectionsErased(_ parts: OAuthGatewayParts) async throws {
        let rows = try await parts.database.database.read { db in
            try Row.fetchAll(db, sql: "SELECT account_id, access_token, refresh_token FROM connections").map {
                (accountId: $0["account_id"] as String?,
                 tokens: ($0["access_token"] as Data?) != nil || ($0["refresh_token"] as Data?) != nil)
            }
        }
        #expect(rows.count == 2)  // ada's connection is gone
        #expect(rows.allSatisfy { !$0.tokens })
        #expect(Set(rows.map(\.accountId)) == [Self.grace, nil])
    }
}

extension GatewayHarness {
    /// One PDR call to the sandbox with `token`: its HTTP status.
    func sandboxReport(token: String) async throws -> Int {
        let answer = try await request(
            .POST, sandboxURL + "/app/report-accounts/",
            headers: [("authorization", "Bearer \(token)"), ("content-type", "application/json")],
            body: #"{"accounts":[{"accountId":"5be24ad8b1653240376955d2","updatedAt":"2026-01-01T00:00:00.000Z"}]}"#)
        return answer.status
    }
}
