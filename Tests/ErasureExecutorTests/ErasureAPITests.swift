import Contracts
import Foundation
import GRDB
import Hummingbird
import HummingbirdTesting
import ServiceKit
import Testing
import TestSupport

@testable import erasure_executor

@Suite("The erasure and audit HTTP API, with tenant tokens verified against a JWKS")
struct ErasureAPITests {
    static let adminToken = "admin-token-0123456789"

    /// A ledger on a real SQLite file, participant `p1` declared, tenant-a configured with `app-1`, and the API.
    func withAPI(
        _ body: @Sendable (TestClientProtocol, ErasureLedger, JWKSServer.SigningKey) async throws -> Void
    ) async throws {
        let directory = try TemporaryDirectory()
        let ledger = try makeLedger(in: directory, maxFailedAttempts: 1)
        try await ledger.declareParticipant(declared("p1"))
        try await ledger.configureTenant(tenant("tenant-a", .scrub, apps: ["app-1"]))
        let server = JWKSServer()
        let key = JWKSServer.SigningKey(kid: "k1")
        server.publish([key])
        try await server.run { verifier in
            let router = Router(context: LetheRequestContext.self)
            ErasureAPI.addRoutes(
                to: router, ledger: ledger, verifier: verifier, adminToken: Self.adminToken, notifier: NoopNotifier())
            try await Application(router: router).test(.router) { client in try await body(client, ledger, key) }
        }
        _ = directory
    }

    func call(
        _ client: TestClientProtocol, _ method: HTTPRequest.Method, _ uri: String, token: String?, body: String? = nil
    ) async throws -> (HTTPResponse.Status, String) {
        try await client.execute(
            uri: uri, method: method, headers: token.map { [.authorization: "Bearer \($0)"] } ?? [:],
            body: body.map { ByteBuffer(string: $0) }
        ) { ($0.status, String(buffer: $0.body)) }
    }

    func decode<T: Decodable>(_ type: T.Type, _ body: String) throws -> T {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return try decoder.decode(type, from: Data(body.utf8))
    }

    @Test("a tenant requests an erasure (202), reads it and lists its own; other tenants get 404, no token 401")
    func tenantRequestAndIsolation() async throws {
        try await withAPI { client, _, key in
            let tokenA = try await key.token(tenant: "tenant-a")
            let tokenB = try await key.token(tenant: "tenant-b")
            let (status, body) = try await call(
                client, .post, "/v1/tenants/tenant-a/erasures", token: tokenA, body: #"{"accountId":"acc-1"}"#)
            #expect(status == .accepted, "\(body)")
            let accepted = try decode(ErasureAccepted.self, body)
            #expect(!accepted.erasureId.isEmpty && accepted.erasureIds == [accepted.erasureId])
            // A repeat joins the open erasure.
            let (_, repeatBody) = try await call(
                client, .post, "/v1/tenants/tenant-a/erasures", token: tokenA,
                body: #"{"accountId":"acc-1","appId":"app-1","policy":"delete"}"#)
            #expect(try decode(ErasureAccepted.self, repeatBody).erasureId == accepted.erasureId)

            let (getStatus, getBody) = try await call(client, .get, "/v1/erasures/\(accepted.erasureId)", token: tokenA)
            #expect(getStatus == .ok)
            let record = try decode(ErasureRecord.self, getBody)
            #expect(record.tenantId == "tenant-a" && record.policy == .scrub && record.cause == .tenantRequest)
            #expect(record.status == .dispatched && record.requests == 2)
            #expect(try await call(client, .get, "/v1/erasures/\(accepted.erasureId)", token: tokenB).0 == .notFound)
            #expect(try await call(client, .get, "/v1/erasures/\(accepted.erasureId)", token: nil).0 == .unauthorized)
            #expect(try await call(client, .get, "/v1/erasures/\(accepted.erasureId)", token: Self.adminToken).0 == .ok)
            #expect(try await call(client, .get, "/v1/tenants/tenant-a/erasures", token: tokenB).0 == .notFound)
            #expect(try await call(client, .get, "/v1/tenants/tenant-a/erasures", token: "x.y.z").0 == .unauthorized)
            #expect(try await call(client, .get, "/v1/audit/verify", token: tokenA).0 == .unauthorized)
        }
    }

    @Test("the list filters by status and pages with an opaque cursor")
    func listPagesAndFilters() async throws {
        try await withAPI { client, ledger, key in
            let token = try await key.token(tenant: "tenant-a")
            var ids: [String] = []
            for index in 1...3 {
                ids += try #require(try await ledger.intake([closed("tenant-a", "acc-\(index)")]))
            }
            _ = try await ledger.intake([closed("tenant-b", "acc-1")])
            _ = try await ledger.applyAck(ack(ids[1], "p1", .erased))
            var seen: [String] = []
            var uri = "/v1/tenants/tenant-a/erasures?limit=2"
            var pages = 0
            while pages < 5 {
                let (status, body) = try await call(client, .get, uri, token: token)
                #expect(status == .ok)
                let page = try decode(ErasurePage.self, body)
                #expect(page.erasures.allSatisfy { $0.tenantId == "tenant-a" })
                seen += page.erasures.map(\.id)
                pages += 1
                guard let cursor = page.nextCursor else { break }
                uri = "/v1/tenants/tenant-a/erasures?limit=2&cursor=\(cursor)"
            }
            #expect(seen == ids && pages == 2)
            let (_, completedBody) = try await call(
                client, .get, "/v1/tenants/tenant-a/erasures?status=completed", token: token)
            let completed = try decode(ErasurePage.self, completedBody).erasures
            #expect(completed.map(\.id) == [ids[1]] && completed[0].accountId == nil)
        }
    }

    @Test("failed until it needs attention, then the retry API re-runs it and it completes; retry of a done one is 409")
    func retryAfterFailure() async throws {
        try await withAPI { client, ledger, key in
            let token = try await key.token(tenant: "tenant-a")
            let id = try #require(try await ledger.intake([closed("tenant-a", "acc-9")]))[0]
            _ = try await ledger.applyAck(ack(id, "p1", .failed))
            #expect(try await ledger.erasure(id)?.status == .needsAttention)
            #expect(try await call(client, .post, "/v1/erasures/\(id)/retry", token: try await key.token(tenant: "x")).0
                == .notFound)
            let (status, body) = try await call(client, .post, "/v1/erasures/\(id)/retry", token: token)
            #expect(status == .ok)
            #expect(try decode(ErasureRecord.self, body).status == .dispatched)
            #expect(try await ledger.commands().filter { $0.erasureId == id }.count == 2)
            _ = try await ledger.applyAck(ack(id, "p1", .scrubbed))
            #expect(try await ledger.erasure(id)?.status == .completed)
            #expect(try await call(client, .post, "/v1/erasures/\(id)/retry", token: Self.adminToken).0 == .conflict)
        }
    }

    @Test("the operator lists every tenant's erasures by status, counts them, and sees each participant's last ack")
    func operatorViews() async throws {
        try await withAPI { client, ledger, key in
            try await ledger.configureTenant(tenant("tenant-b", .delete, apps: ["app-1"]))
            let a = try #require(try await ledger.intake([closed("tenant-a", "acc-1")]))[0]
            let b = try #require(try await ledger.intake([closed("tenant-b", "acc-2")]))[0]
            _ = try await ledger.applyAck(ack(a, "p1", .failed))  // maxFailedAttempts 1: needs attention
            let (status, body) = try await call(client, .get, "/v1/erasures", token: Self.adminToken)
            #expect(status == .ok)
            #expect(try decode(ErasurePage.self, body).erasures.map(\.id) == [a, b])
            let (_, attention) = try await call(client, .get, "/v1/erasures?status=needs-attention", token: Self.adminToken)
            #expect(try decode(ErasurePage.self, attention).erasures.map(\.id) == [a])
            #expect(try await call(client, .get, "/v1/erasures?status=lost", token: Self.adminToken).0 == .badRequest)
            #expect(try await call(client, .get, "/v1/erasures", token: try await key.token(tenant: "tenant-a")).0
                == .unauthorized)

            let (_, countsBody) = try await call(client, .get, "/v1/erasures/counts", token: Self.adminToken)
            let counts = try decode(ErasureCounts.self, countsBody)
            #expect(counts.needsAttention == 1 && counts.dispatched == 1 && counts.open == 2 && counts.completed == 0)
            #expect(try await call(client, .get, "/v1/erasures/counts", token: nil).0 == .unauthorized)

            _ = try await ledger.applyAck(ack(b, "p1", .erased))
            let (_, participantsBody) = try await call(client, .get, "/v1/participants", token: Self.adminToken)
            let declared = try #require(try decode(ParticipantsOverview.self, participantsBody).declared.first)
            // Still awaited in `a` (it failed); `b` completed with its ack.
            #expect(declared.participant == "p1" && declared.awaited == 1 && declared.lastAckAt != nil)
            let (_, afterBody) = try await call(client, .get, "/v1/erasures/counts", token: Self.adminToken)
            #expect(try decode(ErasureCounts.self, afterBody).completed == 1)
        }
    }

    @Test("the operator waives one participant of one erasure: it completes, audited with the reason; p1 stays declared")
    func waiveOneParticipant() async throws {
        try await withAPI { client, ledger, key in
            let id = try #require(try await ledger.intake([closed("tenant-a", "acc-7")]))[0]
            _ = try await ledger.applyAck(ack(id, "p1", .failed))
            let waiver = #"{"participant":"p1","reason":"billing database restored from a backup without this user"}"#
            #expect(try await call(client, .post, "/v1/erasures/\(id)/waive", token: try await key.token(tenant: "tenant-a"),
                                   body: waiver).0 == .unauthorized)
            #expect(try await call(client, .post, "/v1/erasures/\(id)/waive", token: Self.adminToken,
                                   body: #"{"participant":"p1"}"#).0 == .badRequest)
            #expect(try await call(client, .post, "/v1/erasures/\(id)/waive", token: Self.adminToken,
                                   body: #"{"participant":"p1","reason":"ask jo@example.com"}"#).0 == .badRequest)
            #expect(try await call(client, .post, "/v1/erasures/\(id)/waive", token: Self.adminToken,
                                   body: #"{"participant":"crm","reason":"gone"}"#).0 == .conflict)
            #expect(try await call(client, .post, "/v1/erasures/nope/waive", token: Self.adminToken, body: waiver).0
                == .notFound)

            let (status, body) = try await call(client, .post, "/v1/erasures/\(id)/waive", token: Self.adminToken, body: waiver)
            #expect(status == .ok)
            let record = try decode(ErasureRecord.self, body)
            #expect(record.status == .completed && record.participants.first?.outcome == .waived)
            let entry = try #require(try await ledger.auditEntries().last)
            #expect(entry.outcomes.map(\.outcome) == [.waived])
            #expect(entry.outcomes.first?.reason == "billing database restored from a backup without this user")
            #expect(try await ledger.verifyAudit().ok)
            #expect(try await ledger.participantsOverview().declared.map(\.participant) == ["p1"])
            #expect(try await call(client, .post, "/v1/erasures/\(id)/waive", token: Self.adminToken, body: waiver).0
                == .conflict)
        }
    }

    @Test("audit verify passes, export is JSON lines, and a tampered row is reported as the first broken link")
    func auditOverHTTP() async throws {
        try await withAPI { client, ledger, _ in
            for index in 1...3 {
                let id = try #require(try await ledger.intake([closed("tenant-a", "acc-\(index)")]))[0]
                _ = try await ledger.applyAck(ack(id, "p1", .scrubbed))
            }
            let (status, body) = try await call(client, .get, "/v1/audit/verify", token: Self.adminToken)
            #expect(status == .ok)
            let good = try decode(AuditVerification.self, body)
            #expect(good.ok && good.entries == 3 && !good.publicKey.isEmpty)

            let (exportStatus, export) = try await call(client, .get, "/v1/audit/export", token: Self.adminToken)
            #expect(exportStatus == .ok)
            let lines = export.split(separator: "\n")
            #expect(lines.count == 3)
            let first = try decode(AuditEntry.self, String(lines[0]))
            #expect(first.sequence == 1 && first.previousHash == AuditEntry.genesisHash && first.computedHash == first.entryHash)
            #expect(!export.contains("acc-1"))
            let (_, future) = try await call(
                client, .get, "/v1/audit/export?from=2999-01-01T00:00:00Z", token: Self.adminToken)
            #expect(future.isEmpty)
            // A `+` offset sent unencoded arrives as a space (form decoding) and is still read as the offset; `%2B` too.
            for from in ["2999-01-01T00:00:00+01:00", "2999-01-01T00:00:00%2B01:00", "2000-01-01T00:00:00+01:00"] {
                let (status, lines) = try await call(
                    client, .get, "/v1/audit/export?from=\(from)", token: Self.adminToken)
                #expect(status == .ok, "\(from)")
                #expect(lines.split(separator: "\n").count == (from.hasPrefix("2999") ? 0 : 3), "\(from)")
            }

            try await ledger.database.write { db in
                try db.execute(sql: "UPDATE audit_log SET tenant_id = 'someone-else' WHERE sequence = 2")
            }
            let (_, badBody) = try await call(client, .get, "/v1/audit/verify", token: Self.adminToken)
            let bad = try decode(AuditVerification.self, badBody)
            #expect(!bad.ok && bad.firstBrokenSequence == 2)
        }
    }

    @Test("bad input is a 400 with a reason")
    func badInputIs400() async throws {
        try await withAPI { client, _, key in
            let token = try await key.token(tenant: "tenant-a")
            for (method, uri, body, reason) in [
                (HTTPRequest.Method.get, "/v1/tenants/tenant-a/erasures?limit=0", nil, "limit"),
                (.get, "/v1/tenants/tenant-a/erasures?limit=x", nil, "limit"),
                (.get, "/v1/tenants/tenant-a/erasures?status=gone", nil, "status"),
                (.get, "/v1/tenants/tenant-a/erasures?cursor=bm9wZQ", nil, "cursor"),
                (.post, "/v1/tenants/tenant-a/erasures", "{}", "accountId"),
                (.post, "/v1/tenants/tenant-a/erasures", #"{"accountId":"a b"}"#, "accountId"),
                (.post, "/v1/tenants/tenant-a/erasures", #"{"accountId":"a","policy":"burn"}"#, "policy"),
                (.post, "/v1/tenants/tenant-a/erasures", #"{"accountId":"a","appId":"x:y"}"#, "appId"),
                (.get, "/v1/audit/export?from=yesterday", nil, "from"),
            ] as [(HTTPRequest.Method, String, String?, String)] {
                let auth = uri.hasPrefix("/v1/audit") ? Self.adminToken : token
                let (status, text) = try await call(client, method, uri, token: auth, body: body)
                #expect(status == .badRequest, "\(uri)")
                #expect(text.contains(reason), "\(uri): \(text)")
            }
            // A tenant with no configured apps must name the app.
            let other = try await key.token(tenant: "tenant-z")
            let (status, text) = try await call(
                client, .post, "/v1/tenants/tenant-z/erasures", token: other, body: #"{"accountId":"a"}"#)
            #expect(status == .badRequest && text.contains("appId"))
        }
    }
}

