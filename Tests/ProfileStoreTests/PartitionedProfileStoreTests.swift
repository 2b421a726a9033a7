import AsyncHTTPClient
import Contracts
import ErasureKit
import Foundation
import GRDB
import Messaging
import NIOCore
import Prometheus
import ServiceKit
import ServiceRuntime
import Testing
import TestSupport

@testable import profile_store

/// Two profile-store replicas in-process over the dev broker, each on a file of its own and owning the partitions
/// their group assigns it (issue 18): an erasure command reaches the replica that holds its subject, every replica
/// answers the whole API, and one that stops leaves its profiles to the other through the changelog.
@Suite("profile-store with partition-owned state: two replicas share the profiles, one takes over the other's")
struct PartitionedProfileStoreTests {
    let kafka: KafkaFixture

    init() throws { kafka = try KafkaFixture("partitioned-profile-store") }

    @Test("""
        each replica holds only its partitions' profiles and erases them (never nothing-held for a profile the other \
        holds); either answers every read; when one stops, the other reads its profiles back and erases them too
        """)
    func twoReplicasShareTheProfiles() async throws {
        let jwks = JWKSServer()
        let key = JWKSServer.SigningKey(kid: "k1")
        jwks.publish([key])
        let namespace = uniqueName("ps-parts")
        let topics = LetheTopics(namespace: namespace)
        let accounts = (0..<24).map { "557058:held-\($0)" }
        try await jwks.run { verifier in
            let (firstDirectory, secondDirectory) = (try TemporaryDirectory(), try TemporaryDirectory())
            func build(_ directory: TemporaryDirectory) async throws -> ProfileStoreParts {
                let config = try ProfileStoreConfig(reader: ConfigReader(environment: [
                    "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrapServers, "LETHE_DATA_DIR": directory.url.path,
                    "HTTP_PORT": "0", "HTTP_HOST": "127.0.0.1", "LETHE_TOPIC_NAMESPACE": namespace,
                    "KAFKA_TOPIC_PARTITIONS": "3", "LOG_LEVEL": "warning",
                    "LETHE_JWKS_URL": verifier.config.jwksURL.absoluteString, "LETHE_TOKEN_ISSUER": jwks.issuer,
                ]))
                return try await buildProfileStore(
                    config: config, logger: kafka.logger, registry: PrometheusCollectorRegistry(), handleSignals: false)
            }
            let producer = try kafka.makeProducer()
            let sender = RunningGroup([producer], logger: kafka.logger)
            var groups: [RunningGroup] = []
            do {
                let one = try await build(firstDirectory)
                let two = try await build(secondDirectory)
                groups = [RunningGroup(one.group), RunningGroup(two.group)]
                let shared = await eventually(timeout: .seconds(60), every: .milliseconds(200)) {
                    guard let a = one.ownership?.partitions, let b = two.ownership?.partitions else { return false }
                    return !a.isEmpty && !b.isEmpty && a.isDisjoint(with: b) && a.union(b) == [0, 1, 2]
                }
                try #require(shared, "the replicas never shared the 3 partitions")
                let (a, b) = (try #require(one.address.urls?.url), try #require(two.address.urls?.url))

                // 24 accounts of one tenant: each profile is stored by the owner of its partition only.
                try await producer.send(accounts.map { account in
                    try OutgoingMessage(
                        event: fetched("tenant-p", account, at: 10), topic: topics.profiles, key: "app-1:\(account)",
                        source: "test")
                })
                let stored = await eventually(timeout: .seconds(60), every: .milliseconds(200)) {
                    let counts = (try? await one.database.profileCount(), try? await two.database.profileCount())
                    return (counts.0 ?? 0) + (counts.1 ?? 0) == accounts.count
                }
                try #require(stored, "the 24 profiles were not stored across the two replicas")
                let ownedByOne = try #require(one.ownership?.partitions)
                let changelog = try #require(one.database.changelog)
                let partition = { (account: String) -> Int32 in
                    KeyPartitioner.partition(of: "app-1:\(account)", count: changelog.partitions)
                }
                for account in accounts {
                    let (holder, other) = ownedByOne.contains(partition(account)) ? (one, two) : (two, one)
                    #expect(try await holder.database.profile(tenantId: "tenant-p", appId: "app-1", accountId: account) != nil)
                    #expect(try await other.database.profile(tenantId: "tenant-p", appId: "app-1", accountId: account) == nil)
                }

                // Either replica answers one profile (with or without appId) and the whole list, in one order.
                let token = try await key.token(tenant: "tenant-p")
                let answered = await eventually(timeout: .seconds(30), every: .milliseconds(200)) {
                    (try? await call(a, "/v1/tenants/tenant-p/profiles?limit=500", token: token))?.status == 200
                }
                try #require(answered, "the first replica never answered the list")
                for account in accounts {
                    for base in [a, b] {
                        for query in ["?appId=app-1", ""] {
                            let (status, body) = try await call(
                                base, "/v1/tenants/tenant-p/profiles/\(account)\(query)", token: token)
                            #expect(status == 200 && body.contains("\"accountId\":\"\(account)\""), "\(status) \(body)")
                        }
                    }
                }
                #expect(try await call(a, "/v1/tenants/tenant-p/profiles/557058:nobody", token: token).status == 404)
                var listed: [ProfileResponse] = []
                var cursor: String?
                repeat {
                    let (status, body) = try await call(
                        b, "/v1/tenants/tenant-p/profiles?limit=5" + (cursor.map { "&cursor=\($0)" } ?? ""), token: token)
                    let page = try JSONDecoder.iso.decode(ProfilePage.self, from: Data(body.utf8))
                    #expect(status == 200 && page.profiles.count <= 5 && page.profiles.allSatisfy { $0.listKey == nil })
                    listed += page.profiles
                    cursor = page.nextCursor
                } while cursor != nil && listed.count < 50
                #expect(listed.compactMap(\.accountId) == accounts.sorted(), "each profile listed once, in one order")
                // A cursor of the row-id kind (before replicas owned partitions) is refused.
                #expect(try await call(a, "/v1/tenants/tenant-p/profiles?cursor=cjEy", token: token).status == 400)

                // An erasure command for each replica's subject: acknowledged `erased` by the replica holding it.
                let onOne = try #require(accounts.first { ownedByOne.contains(partition($0)) })
                let onTwo = try #require(accounts.first { !ownedByOne.contains(partition($0)) })
                try await erase(["e-one": onOne, "e-two": onTwo], producer: producer, topics: topics)
                var acks = try await acknowledgements(of: ["e-one", "e-two"], topics: topics)
                #expect(acks == ["e-one": .erased, "e-two": .erased], "\(acks)")

                // The first stops; the second reads its partitions back, holds its profiles, and erases them.
                await groups[0].stop()
                one.claim?.release()  // a process that stops lets its file go; in one process the test does
                let tookOver = await eventually(timeout: .seconds(60), every: .milliseconds(200)) {
                    two.ownership?.partitions == [0, 1, 2]
                }
                try #require(tookOver, "the second replica did not take every partition")
                #expect(try await two.database.profileCount() == accounts.count - 2)
                #expect(try await two.database.profile(tenantId: "tenant-p", appId: "app-1", accountId: onOne) == nil,
                        "an erased profile came back from the changelog")
                let other = try #require(accounts.first { $0 != onOne && ownedByOne.contains(partition($0)) })
                #expect(try await two.database.profile(tenantId: "tenant-p", appId: "app-1", accountId: other)?.name == "Ada")
                // The erasure recorded on the first is answered from its record; a new one is applied.
                try await erase(["e-one": onOne, "e-other": other], producer: producer, topics: topics)
                acks = try await acknowledgements(of: ["e-one", "e-other"], topics: topics, atLeast: 4)
                #expect(acks == ["e-one": .erased, "e-two": .erased, "e-other": .erased], "\(acks)")
                // The first's late profile of the erased account (fetched before the erasure) stays dropped.
                try await producer.send(try OutgoingMessage(
                    event: fetched("tenant-p", onOne, at: 5), topic: topics.profiles, key: "app-1:\(onOne)",
                    source: "test"))
                #expect(await eventually(timeout: .seconds(30)) { two.intake.stats.erased >= 1 })
                #expect(try await two.database.profile(tenantId: "tenant-p", appId: "app-1", accountId: onOne) == nil)
            } catch {
                Issue.record(error)
            }
            for group in groups { await group.stop() }
            await sender.stop()
        }
    }

    private func erase(_ subjects: [String: String], producer: KafkaProducer, topics: LetheTopics) async throws {
        try await producer.send(subjects.sorted { $0.key < $1.key }.map { erasureId, account in
            try OutgoingMessage(
                event: command(erasureId, "tenant-p", account, .delete, issuedAt: t0.addingTimeInterval(60)),
                topic: topics.erasureCommands, key: "app-1:\(account)", source: "test")
        })
    }

    /// profile-store's outcome per erasure on the acks topic (the last one of each), once `ids` are all there.
    private func acknowledgements(
        of ids: Set<String>, topics: LetheTopics, atLeast: Int = 0
    ) async throws -> [String: ErasureOutcome] {
        let records = try await readUntilDistinct(
            kafka, topic: topics.erasureAcks, timeout: .seconds(60),
            value: { try? $0.decodeEvent(ErasureAcknowledged.self).erasureId }
        ) { acked, records in ids.isSubset(of: acked) && records >= atLeast }
        var outcomes: [String: ErasureOutcome] = [:]
        for record in records {
            let ack = try record.decodeEvent(ErasureAcknowledged.self)
            #expect(ack.participant == "profile-store")
            outcomes[ack.erasureId] = ack.outcome
        }
        return outcomes
    }

    private func call(_ base: String, _ path: String, token: String) async throws -> (status: Int, body: String) {
        var request = HTTPClientRequest(url: base + path)
        request.headers.add(name: "Authorization", value: "Bearer \(token)")
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(20))
        return (Int(response.status.code), String(buffer: try await response.body.collect(upTo: 1 << 22)))
    }
}
