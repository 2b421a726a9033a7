import AsyncHTTPClient
import Contracts
import Foundation
import Messaging
import NIOCore
import NIOHTTP1
import Testing
import TestSupport

@testable import erasure_executor

/// Two executors without the lease, each owning the partitions its intake group assigns it (the partition-owned core
/// of issue 18: intake, changelog, audit chains, sweeper), in-process over the dev broker.
@Suite("erasure-executor with partition-owned state: two replicas share the erasures, one takes over the other's")
struct PartitionedExecutorTests {
    let kafka: KafkaFixture

    init() throws { kafka = try KafkaFixture("partitioned-executor") }

    @Test("""
        two replicas each hold only the erasures of their partitions and complete them; when one stops, the other \
        reads its partitions back from the changelog, completes what was open there once, and every chain verifies
        """)
    func twoReplicasShareThePartitionsAndOneTakesOver() async throws {
        let world = try await ExecutorWorld(kafka: kafka, namespace: "ee-parts")
        let (firstDirectory, secondDirectory) = (try TemporaryDirectory(), try TemporaryDirectory())
        let accounts = (0..<24).map { "557058:part-\($0)" }
        var first: RunningGroup?
        var second: RunningGroup?
        do {
            try await world.send(tenant("tenant-p", .delete), topic: world.topics.tenants, key: "tenant-p")
            try await world.send(declared("steady"), topic: world.topics.erasureParticipants, key: "steady")
            try await world.send(declared("late"), topic: world.topics.erasureParticipants, key: "late")
            try world.startParticipant("steady", handler: TestParticipantHandler(held: [:]))
            let one = try await TestExecutor.build(
                kafka: kafka, namespace: world.namespace, directory: firstDirectory, singleActive: false)
            let two = try await TestExecutor.build(
                kafka: kafka, namespace: world.namespace, directory: secondDirectory, singleActive: false)
            first = RunningGroup(one.parts.group)
            second = RunningGroup(two.parts.group)
            let shared = await eventually(timeout: .seconds(60), every: .milliseconds(200)) {
                guard let a = one.parts.ownership.partitions, let b = two.parts.ownership.partitions else { return false }
                return !a.isEmpty && !b.isEmpty && a.isDisjoint(with: b) && a.union(b) == [0, 1, 2]
            }
            try #require(shared, "the replicas never shared the 3 partitions")

            // Closed accounts while both run: "late" is declared but away, so every erasure stays open.
            for accountId in accounts {
                let status = AccountStatusReported(
                    appId: "app-1", accountId: accountId, tenantIds: ["tenant-p"], status: .closed, reportedAt: Date())
                try await world.send(status, topic: world.topics.pdrStatus, key: "app-1:\(accountId)")
            }
            let opened = await eventually(timeout: .seconds(60), every: .milliseconds(200)) {
                let counts = (try? await one.parts.ledger.counts().open ?? 0, try? await two.parts.ledger.counts().open ?? 0)
                return (counts.0 ?? 0) + (counts.1 ?? 0) == accounts.count
            }
            try #require(opened, "the 24 erasures were not opened across the two replicas")
            let owned = try #require(one.parts.ownership.partitions)
            let firstIds = try await one.parts.ledger.erasureIds()
            let secondIds = try await two.parts.ledger.erasureIds()
            #expect(!firstIds.isEmpty && !secondIds.isEmpty, "\(firstIds.count) and \(secondIds.count)")
            #expect(firstIds.allSatisfy { owned.contains(one.parts.ledger.partition(of: $0)) })
            #expect(secondIds.allSatisfy { !owned.contains(two.parts.ledger.partition(of: $0)) })

            // The first stops; the second takes its partitions over from the changelog, then "late" answers.
            await first?.stop()
            first = nil
            one.parts.claim?.release()  // a process that stops lets its file go; in one process the test does
            let tookOver = await eventually(timeout: .seconds(60), every: .milliseconds(200)) {
                two.parts.ownership.partitions == [0, 1, 2]
            }
            try #require(tookOver, "the second replica did not take every partition")
            #expect(Set(try await two.parts.ledger.erasureIds()) == Set(firstIds + secondIds))
            try world.startParticipant("late", handler: TestParticipantHandler(held: [:]))
            let completed = await eventually(timeout: .seconds(90), every: .milliseconds(300)) {
                (try? await two.parts.ledger.counts().byStatus[.completed]) == accounts.count
            }
            #expect(completed, "not every erasure completed on the replica that took over")
            let verification = try await two.parts.ledger.verifyAudit()
            #expect(verification.ok && verification.entries == accounts.count && verification.chains == 3, "\(verification)")
            let receipts = try await readUntil(kafka, topic: world.topics.erasureCompleted) { $0.count >= accounts.count }
            let ids = receipts.compactMap { try? $0.decodeEvent(ErasureCompleted.self).erasureId }
            #expect(ids.count == accounts.count && Set(ids) == Set(firstIds + secondIds), "completed exactly once each")

            // The first comes back on its own file, which still holds its partitions' erasures as open: the
            // partitions are shared again, the second forgets the ones it gave up, and the first reads back the
            // completions of the ones it got over its stale copies.
            let again = try await TestExecutor.build(
                kafka: kafka, namespace: world.namespace, directory: firstDirectory, singleActive: false)
            first = RunningGroup(again.parts.group)
            let reshared = await eventually(timeout: .seconds(60), every: .milliseconds(200)) {
                guard let a = again.parts.ownership.partitions, let b = two.parts.ownership.partitions else { return false }
                return !a.isEmpty && !b.isEmpty && a.isDisjoint(with: b) && a.union(b) == [0, 1, 2]
            }
            try #require(reshared, "the partitions were not shared again")
            for parts in [again.parts, two.parts] {
                let holds = try await parts.ledger.erasureIds()
                let mine = try #require(parts.ownership.partitions)
                #expect(holds.allSatisfy { mine.contains(parts.ledger.partition(of: $0)) }, "an erasure of another partition kept")
                #expect(try await parts.ledger.counts().byStatus[.completed] ?? 0 == holds.count, "a stale open copy kept")
                #expect(try await parts.ledger.verifyAudit().ok)
            }
            let held = try await again.parts.ledger.erasureIds().count + two.parts.ledger.erasureIds().count
            #expect(held == accounts.count)
        } catch {
            Issue.record(error)
        }
        await first?.stop()
        await second?.stop()
        await world.stop()
    }
}

extension PartitionedExecutorTests {
    @Test("""
        every replica answers the whole API: one erasure from its owner, lists, counts, participants and the audit \
        gathered from both, a tenant's request opened by the subject's owner, a retirement applied on both
        """)
    func everyReplicaAnswersForTheOther() async throws {
        // Used only inside the JWKS server's scope, one task at a time.
        nonisolated(unsafe) let world = try await ExecutorWorld(kafka: kafka, namespace: "ee-routes")
        let jwks = JWKSServer()
        let key = JWKSServer.SigningKey(kid: "k1")
        jwks.publish([key])
        try await jwks.run { verifier in
            let (firstDirectory, secondDirectory) = (try TemporaryDirectory(), try TemporaryDirectory())
            let extra = [
                "LETHE_JWKS_URL": verifier.config.jwksURL.absoluteString, "LETHE_TOKEN_ISSUER": jwks.issuer,
                "HTTP_HOST": "127.0.0.1",
            ]
            var groups: [RunningGroup] = []
            do {
                try await world.send(tenant("tenant-r", .delete), topic: world.topics.tenants, key: "tenant-r")
                try await world.send(declared("steady"), topic: world.topics.erasureParticipants, key: "steady")
                try await world.send(declared("away"), topic: world.topics.erasureParticipants, key: "away")
                try world.startParticipant("steady", handler: TestParticipantHandler(held: [:]))
                let one = try await TestExecutor.build(
                    kafka: kafka, namespace: world.namespace, directory: firstDirectory, extra: extra, singleActive: false)
                let two = try await TestExecutor.build(
                    kafka: kafka, namespace: world.namespace, directory: secondDirectory, extra: extra, singleActive: false)
                groups = [RunningGroup(one.parts.group), RunningGroup(two.parts.group)]
                let shared = await eventually(timeout: .seconds(60), every: .milliseconds(200)) {
                    guard let a = one.parts.ownership.partitions, let b = two.parts.ownership.partitions else { return false }
                    return !a.isEmpty && !b.isEmpty && a.union(b) == [0, 1, 2]
                }
                try #require(shared, "the replicas never shared the 3 partitions")
                let (a, b) = (try #require(one.parts.address.urls?.url), try #require(two.parts.address.urls?.url))

                // 12 closed accounts: "steady" acknowledges, "away" never does.
                for n in 0..<12 {
                    let status = AccountStatusReported(
                        appId: "app-1", accountId: "557058:route-\(n)", tenantIds: ["tenant-r"], status: .closed,
                        reportedAt: Date())
                    try await world.send(status, topic: world.topics.pdrStatus, key: "app-1:557058:route-\(n)")
                }
                let opened = await eventually(timeout: .seconds(60), every: .milliseconds(200)) {
                    let n = (try? await one.parts.ledger.erasureIds().count ?? 0, try? await two.parts.ledger.erasureIds().count ?? 0)
                    return (n.0 ?? 0) + (n.1 ?? 0) == 12
                }
                try #require(opened, "the 12 erasures were not opened across the two replicas")
                let (idsOne, idsTwo) = (try await one.parts.ledger.erasureIds(), try await two.parts.ledger.erasureIds())
                #expect(!idsOne.isEmpty && !idsTwo.isEmpty, "\(idsOne.count) and \(idsTwo.count)")

                // One erasure: either replica answers it, the non-owner through the owner.
                let announced = await eventually(timeout: .seconds(30), every: .milliseconds(200)) {
                    (try? await call(a, .GET, "/v1/erasures/\(idsTwo[0])"))?.status == 200
                }
                #expect(announced, "the first replica never answered an erasure of the second's partitions")
                for id in idsOne + idsTwo {
                    for base in [a, b] {
                        let (status, body) = try await call(base, .GET, "/v1/erasures/\(id)")
                        #expect(status == 200 && (try? decode(ErasureRecord.self, body))?.id == id, "\(status) \(body)")
                    }
                }
                // A request another replica forwarded is answered only by the owner: no second hop.
                let hop = try await call(b, .GET, "/v1/erasures/\(idsOne[0])", headers: ["Lethe-Forwarded-By": "r-test"])
                #expect(hop.status == 503 && hop.body.contains("no longer this replica's"), "\(hop)")

                // Lists, gathered and merged page by page; counts added up.
                var listed: [ErasureRecord] = []
                var cursor: String?
                repeat {
                    let (status, body) = try await call(
                        a, .GET, "/v1/erasures?limit=5" + (cursor.map { "&cursor=\($0)" } ?? ""))
                    let page = try decode(ErasurePage.self, body)
                    #expect(status == 200 && page.erasures.count <= 5)
                    listed += page.erasures
                    cursor = page.nextCursor
                } while cursor != nil && listed.count < 40
                #expect(listed.map(\.id).sorted() == (idsOne + idsTwo).sorted(), "each erasure listed once")
                let positions = listed.map(ErasureLedger.ListPosition.init(of:))
                #expect(positions == positions.sorted(), "in one order across both replicas")
                let counts = try decode(ErasureCounts.self, try await call(b, .GET, "/v1/erasures/counts").body)
                #expect(counts.open == 12, "\(counts)")

                // A tenant's request reaching the replica that does not own the subject's partition.
                let ownedByTwo = try #require(two.parts.ownership.partitions)
                let accountId = try #require((0..<200).map { "557058:asked-\($0)" }.first {
                    ownedByTwo.contains(one.parts.ledger.partition(of: "app-1:\($0)"))
                })
                let token = try await key.token(tenant: "tenant-r")
                let asked = try await call(
                    a, .POST, "/v1/tenants/tenant-r/erasures", token: token, body: #"{"accountId":"\#(accountId)"}"#)
                #expect(asked.status == 202, "\(asked)")
                let accepted = try decode(ErasureAccepted.self, asked.body)
                #expect(accepted.erasureIds.count == 1)
                #expect(try await two.parts.ledger.erasure(accepted.erasureId)?.accountId == accountId)
                #expect(try await one.parts.ledger.erasure(accepted.erasureId) == nil)
                let tenantList = try decode(
                    ErasurePage.self, try await call(a, .GET, "/v1/tenants/tenant-r/erasures?limit=50", token: token).body)
                #expect(tenantList.erasures.count == 13)

                // "steady" acknowledged everything: 13 wait for "away" alone, counted on both replicas.
                let acked = await eventually(timeout: .seconds(60), every: .milliseconds(300)) {
                    guard let body = try? await call(b, .GET, "/v1/participants").body,
                          let overview = try? decode(ParticipantsOverview.self, body) else { return false }
                    let awaited = Dictionary(uniqueKeysWithValues: overview.declared.map { ($0.participant, $0.awaited) })
                    return awaited["steady"] == 0 && awaited["away"] == 13
                }
                #expect(acked, "the participants overview never showed 13 erasures waiting for away alone")

                // Retiring "away" through one replica completes the erasures of both.
                let unknown = try await call(a, .POST, "/v1/participants/nobody/retire", body: #"{"reason":"test"}"#)
                #expect(unknown.status == 404, "\(unknown)")
                let retired = try await call(
                    a, .POST, "/v1/participants/away/retire", body: #"{"reason":"decommissioned"}"#)
                #expect(retired.status == 200, "\(retired)")
                let retirement = try decode(ErasureLedger.Retirement.self, retired.body)
                #expect(retirement.waived.count == 13 && retirement.completed.count == 13, "\(retirement)")
                for parts in [one.parts, two.parts] {
                    let held = try await parts.ledger.erasureIds().count
                    #expect(try await parts.ledger.counts().byStatus[.completed] == held)
                }
                // Each replica records it once — the one that took the request at once, the other from the topic —
                // with the counts of both.
                let recorded = await eventually(timeout: .seconds(30), every: .milliseconds(200)) {
                    for parts in [one.parts, two.parts] {
                        let retirements = (try? await parts.ledger.participantsOverview().retirements) ?? []
                        guard retirements.count == 1, retirements[0].waived == 13 else { return false }
                    }
                    return true
                }
                #expect(recorded, "the retirement was not recorded on both replicas")
                let overview = try decode(ParticipantsOverview.self, try await call(b, .GET, "/v1/participants").body)
                #expect(overview.retirements.count == 1 && !overview.declared.contains { $0.participant == "away" })

                // The audit, verified and exported as one from either replica.
                let receipts = await eventually(timeout: .seconds(30), every: .milliseconds(200)) {
                    guard let body = try? await call(b, .GET, "/v1/audit/verify").body,
                          let verification = try? decode(AuditVerification.self, body) else { return false }
                    return verification.ok && verification.entries == 13
                }
                #expect(receipts, "the audit gathered from both replicas does not verify 13 entries")
                let export = try await call(a, .GET, "/v1/audit/export")
                #expect(export.body.split(separator: "\n").count == 13)
            } catch {
                Issue.record(error)
            }
            for group in groups { await group.stop() }
        }
        await world.stop()
    }

    private func call(
        _ base: String, _ method: HTTPMethod, _ path: String, token: String? = "admin-token-0123456789",
        body: String? = nil, headers: [String: String] = [:]
    ) async throws -> (status: Int, body: String) {
        var request = HTTPClientRequest(url: base + path)
        request.method = method
        if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(string: body))
        }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(20))
        return (Int(response.status.code), String(buffer: try await response.body.collect(upTo: 1 << 22)))
    }

    private func decode<T: Decodable>(_ type: T.Type, _ body: String) throws -> T {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return try decoder.decode(type, from: Data(body.utf8))
    }
}

extension ErasureLedger {
    /// Every erasure id in the file.
    func erasureIds() async throws -> [String] {
        try await database.read { db in try String.fetchAll(db, sql: "SELECT id FROM erasures") }
    }
}
