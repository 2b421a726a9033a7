import Contracts
import Foundation
import GRDB
import Logging
import Messaging
import Storage
import Synchronization
import Testing
import TestSupport

@testable import oauth_gateway

/// The gateway's changelog (`lethe.gateway.state.v1`): what the active replica changes is published, and a replica
/// that becomes active on a volume of its own reads it back, against the dev broker and real files.
@Suite("Gateway changelog")
struct GatewayChangelogTests {
    /// Every row of every state table, as text, table by table in key order: two files hold the same state when these
    /// are equal.
    static func state(of database: GatewayDatabase) async throws -> [String: [String]] {
        try await database.database.read { db in
            var state: [String: [String]] = [:]
            for table in GatewayDatabase.changelogTables {
                let rows = try Row.fetchAll(
                    db, sql: "SELECT * FROM \(table.name) ORDER BY \(table.key.joined(separator: ", "))")
                state[table.name] = rows.map { row in
                    row.map { column, value in "\(column)=\(value)" }.joined(separator: " ")
                }
            }
            return state
        }
    }

    /// The latest record of every key on the gateway's changelog, as the broker holds it now.
    static func changelog(_ harness: GatewayHarness) async throws -> [String: KafkaMessage] {
        let producer = try harness.kafka.makeProducer()
        let latest = Mutex<[String: KafkaMessage]>([:])
        try await withRunningServices([producer], logger: harness.kafka.logger) {
            _ = try await RestoreMarker.readToEnd(
                (0..<3).map { TopicPartition(topic: harness.topics.gatewayState, partition: Int32($0)) },
                bootstrapServers: harness.kafka.bootstrapServers, producer: producer, clientId: "changelog-test",
                logger: harness.kafka.logger
            ) { messages in
                latest.withLock { latest in
                    for message in messages { if let key = message.keyString { latest[key] = message } }
                }
            }
        }
        return latest.withLock { $0 }
    }

    @Test("""
        what the gateway acknowledges is on the changelog by then, though its publisher looks on its own only once a \
        minute: a tenant's creation and a sign-in once answered, an erasure once acked (the connection scrubbed, the \
        outcome recorded)
        """)
    func acknowledgementsWaitForTheChangelog() async throws {
        try await GatewayHarness.setUp { harness in
            try await harness.withGateway(environment: ["GATEWAY_CHANGELOG_INTERVAL_MS": "60000"]) { parts in
                _ = try await VaultTests.signedIn(harness)
                var records = try await Self.changelog(harness)
                #expect(records["tenants:acme"]?.value != nil)
                let connectionId = try await VaultTests.onlyConnection(parts)
                let signedIn = try #require(records["connections:\(connectionId)"]).decodeEvent(GatewayRowChanged.self)
                #expect(signedIn.columns["account_id"] == VaultTests.ada && signedIn.columns["refresh_token"] != nil)

                let handler = GatewayErasureHandler(
                    database: parts.database,
                    checkpointer: WALCheckpointer(database: parts.database.database, logger: harness.kafka.logger),
                    durability: parts.durability)
                // As the participant hands it commands: in a batch.
                let results = try await handler.applyBatch([EraseSubject(
                    erasureId: "erasure-ack-1", tenantId: "acme", appId: "acme-app", accountId: VaultTests.ada,
                    policy: .scrub, cause: .atlassianClosed, issuedAt: Date(), deadline: Date().addingTimeInterval(86_400))])
                #expect(results.map(\.outcome) == [.scrubbed])
                records = try await Self.changelog(harness)
                let scrubbed = try #require(records["connections:\(connectionId)"]).decodeEvent(GatewayRowChanged.self)
                #expect(scrubbed.columns["account_id"] == nil && scrubbed.columns["refresh_token"] == nil)
                let recorded = try #require(records["lethe_processed_events:erasure:erasure-ack-1"])
                #expect(try recorded.decodeEvent(GatewayRowChanged.self).columns["outcome"] == "scrubbed")
            }
        }
    }

    @Test("""
        with nobody publishing, an acknowledgement's wait gives up at its deadline; once published it returns; a file \
        that lists nothing waits for nothing; a listing's number is never given again once the listing is gone
        """)
    func waitGivesUpAtItsDeadline() async throws {
        let kafka = try KafkaFixture("gateway-changelog-wait")
        let topics = LetheTopics(namespace: uniqueName("gwwait"))
        let admin = try KafkaAdmin(bootstrapServers: kafka.bootstrapServers, logger: kafka.logger)
        try await admin.ensureTopics([TopicSpec(Topics.gatewayState, in: topics, partitions: 3)])
        let directory = try TemporaryDirectory("gateway-changelog-wait")
        let database = try GatewayDatabase(path: directory.file("gateway.sqlite"), topics: topics)
        let producer = try kafka.makeProducer()
        let changelog = GatewayChangelog(
            database: database, producer: producer, admin: admin, topic: topics.gatewayState,
            bootstrapServers: kafka.bootstrapServers, logger: kafka.logger)
        #expect(try await changelog.waitUntilPublished(deadline: .now + .milliseconds(100)))

        try await database.captureChanges()
        func createTenant(_ id: String) async throws {
            try await database.database.write { db in
                try db.execute(
                    sql: "INSERT INTO tenants (tenant_id, secret_hash, created_at, updated_at) VALUES (?, x'00', 0, 0)",
                    arguments: [id])
            }
        }
        try await createTenant("acme")
        let first = try #require(try await database.newestListing())
        let started = ContinuousClock.now
        #expect(try await changelog.waitUntilPublished(deadline: .now + .milliseconds(300)) == false)
        #expect(ContinuousClock.now - started >= .milliseconds(300))

        let published = try await withRunningServices([producer], logger: kafka.logger) {
            try await changelog.publishPending()
        }
        #expect(published == 1)
        #expect(try await database.newestListing() == nil)
        #expect(try await changelog.waitUntilPublished(deadline: .now + .milliseconds(100)))
        try await createTenant("globex")
        #expect(try #require(try await database.newestListing()) > first)
    }

    @Test("""
        a replica on a volume of its own takes over: the tenant's token verifies, the JWKS is the same, the user's \
        refresh token opens and refreshes, and every row of the state is the one the replica before held
        """)
    func ownVolumeTakeover() async throws {
        try await GatewayHarness.setUp { harness in
            let second = try TemporaryDirectory("gateway-second-volume")
            let (acme, jwks) = try await harness.withGateway { _ in
                let acme = try await VaultTests.signedIn(harness, users: [
                    (VaultTests.ada, "Ada Lovelace", "ada@example.com"), (VaultTests.grace, "Grace Hopper", "grace@example.com"),
                ])
                return (acme, try await harness.get("/.well-known/jwks.json").body)
            }
            let first = try GatewayDatabase(
                path: harness.directory.appendingPathComponent("oauth-gateway.sqlite").path, topics: harness.topics)
            let before = try await Self.state(of: first)
            #expect(before["connections"]?.count == 2 && before["tenants"]?.count == 1)

            try await harness.withGateway(environment: ["LETHE_DATA_DIR": second.url.path]) { parts in
                #expect(try await Self.state(of: parts.database) == before)
                // The tenant's token, signed by the replica before, verifies here; so does its configuration.
                let tenant = try await harness.get("/v1/tenants/acme", bearer: acme.token)
                #expect(tenant.status == 200 && tenant.json["erasurePolicy"] as? String == "scrub")
                #expect(try await harness.get("/.well-known/jwks.json").body == jwks)
                // The sealed refresh token opens with the data key read back, and Atlassian takes it.
                try await VaultTests.expireAccessTokens(parts)
                #expect(try await harness.reportingToken("acme-app").status == 200)
                #expect(try await harness.tokenCalls("acme-app").refreshes == 1)
            }
        }
    }

    @Test("""
        a file from before the changelog is published whole; a replica's own rows, deletions, and rows replaced \
        through another unique column are read back so that the other file holds exactly the same
        """)
    func carryOverDeletionsAndReplacements() async throws {
        let kafka = try KafkaFixture("gateway-changelog")
        let topics = LetheTopics(namespace: uniqueName("gwlog"))
        try await KafkaAdmin(bootstrapServers: kafka.bootstrapServers, logger: kafka.logger)
            .ensureTopics([TopicSpec(Topics.gatewayState, in: topics, partitions: 3)])
        let directory = try TemporaryDirectory("gateway-changelog")
        let master = DataKeyRotationTests.randomKey()
        let producer = try kafka.makeProducer()
        func replica(_ name: String) throws -> (GatewayDatabase, GatewayChangelog) {
            let database = try GatewayDatabase(path: directory.file("\(name).sqlite"), topics: topics)
            _ = try SecretBox(masterKey: master, database: database)  // a new file's first data key, as at start
            let changelog = GatewayChangelog(
                database: database, producer: producer,
                admin: try KafkaAdmin(bootstrapServers: kafka.bootstrapServers, logger: kafka.logger),
                topic: topics.gatewayState, bootstrapServers: kafka.bootstrapServers, logger: kafka.logger)
            return (database, changelog)
        }
        try await withRunningServices([producer], logger: kafka.logger) {
            // A file written before the changelog: rows no trigger listed, a composite BLOB key among them.
            let (old, oldChangelog) = try replica("old")
            try await old.database.write { db in
                let now = Date().timeIntervalSince1970
                for tenant in ["acme", "globex"] {
                    try db.execute(
                        sql: "INSERT INTO tenants (tenant_id, secret_hash, created_at, updated_at) VALUES (?, ?, ?, ?)",
                        arguments: [tenant, Data([1, 2, 3]), now, now])
                }
                for (connection, account) in [("c-1", "acc-1"), ("c-2", "acc-2")] {
                    try db.execute(
                        sql: """
                            INSERT INTO connections (connection_id, tenant_id, app_id, account_id, user_id, state, test,
                                refresh_token, created_at, last_active_at)
                            VALUES (?, 'acme', 'app-1', ?, ?, 'active', 0, ?, ?, ?)
                            """,
                        arguments: [connection, account, "user-\(account)", Data("sealed".utf8), now, now])
                }
                try db.execute(
                    sql: "INSERT INTO ssf_erasure_subjects VALUES (?, 'user:1', 'acme', 'er-1', ?)",
                    arguments: [Data([0xab, 0xcd]), now])
                try db.execute(sql: "INSERT INTO signin_nonces VALUES (?, ?)", arguments: [Data([9, 9]), now + 600])
            }
            try await oldChangelog.takeOver()

            // A replica on its own new file: its own first data key and a row of its own go; the other file's come.
            let (fresh, freshChangelog) = try replica("fresh")
            try await fresh.database.write { db in
                try db.execute(sql: """
                    INSERT INTO tenants (tenant_id, secret_hash, created_at, updated_at) VALUES ('stray', x'00', 0, 0)
                    """)
            }
            try await freshChangelog.takeOver()
            let carried = try await Self.state(of: old)
            #expect(try await Self.state(of: fresh) == carried)
            #expect(carried["tenants"]?.count == 2 && carried["ssf_erasure_subjects"]?.count == 1)

            // Changes on the active file (its triggers list them since its take-over): a deletion, a disassociation, a
            // composite key's deletion, and a connection replaced through the (tenant, app, account) unique key.
            try await old.database.write { db in
                try db.execute(sql: "DELETE FROM tenants WHERE tenant_id = 'globex'")
                try db.execute(sql: "UPDATE connections SET account_id = NULL, refresh_token = NULL WHERE connection_id = 'c-2'")
                try db.execute(sql: "DELETE FROM ssf_erasure_subjects")
                try db.execute(sql: """
                    INSERT OR REPLACE INTO connections (connection_id, tenant_id, app_id, account_id, user_id, state, test,
                        created_at, last_active_at)
                    VALUES ('c-3', 'acme', 'app-1', 'acc-1', 'user-acc-1', 'active', 0, 1, 1)
                    """)
            }
            #expect(try await oldChangelog.publishPending() == 5)

            // The other file, stale, read back by a new process on it.
            let (again, againChangelog) = try replica("fresh")
            try await againChangelog.takeOver()
            let after = try await Self.state(of: again)
            #expect(after == (try await Self.state(of: old)))
            #expect(after["tenants"]?.count == 1 && after["ssf_erasure_subjects"] == [])
            #expect(after["connections"]?.map { $0.contains("connection_id=\"c-1\"") } == [false, false])
            #expect(after["connections"]?.contains { $0.contains("account_id=\"acc-2\"") } == false)
            // Nothing a read-back wrote was listed to be published again.
            let listed = try await again.database.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM gateway_changes") }
            #expect(listed == 0)

            // The next process on that file, not active (yet): the state goes but the keys and a change it lists as
            // unpublished; a file never read back keeps everything (it may be the only copy).
            let (restarted, _) = try replica("fresh")
            try await restarted.database.write { db in
                try db.execute(sql: "INSERT INTO gateway_changes (tbl, k1) VALUES ('tenants', 'acme')")
            }
            #expect(try await restarted.dropStaleState() == 3)
            let left = try await Self.state(of: restarted)
            #expect(left["tenants"]?.count == 1 && left["connections"] == [] && left["signin_nonces"] == [])
            #expect(left["data_keys"] == after["data_keys"])
            let (never, _) = try replica("never-read-back")
            #expect(try await never.dropStaleState() == nil)

            // That listed change, made locally, predates another replica's activation: it is not published (the
            // changelog is newer), and the file takes the changelog's row.
            try await restarted.database.write { db in
                try db.execute(sql: "UPDATE tenants SET secret_hash = x'ff' WHERE tenant_id = 'acme'")
            }
            let (_, restartedChangelog) = try replica("fresh")
            try await restartedChangelog.takeOver(previousActivation: Date().addingTimeInterval(60))
            #expect(try await Self.state(of: restarted) == (try await Self.state(of: old)))
        }
    }

    @Test("""
        read back in any order across partitions, an older record never displaces another key's latest row through a \
        unique column: a row that clashes waits for the end, unless a later record of its key supersedes it
        """)
    func clashingRowsWaitForTheirKeysLatest() async throws {
        let directory = try TemporaryDirectory("gateway-read-back-order")
        let topics = LetheTopics(namespace: "order")
        let database = try GatewayDatabase(path: directory.file("gateway.sqlite"), topics: topics)
        func connection(_ id: String, account: String = "acc-1", createdAt: String = "1.5") throws -> KafkaMessage {
            let event = GatewayRowChanged(table: "connections", columns: [
                "connection_id": id, "tenant_id": "acme", "app_id": "app-1", "account_id": account,
                "user_id": "user-1", "state": "active", "test": "0", "created_at": createdAt, "last_active_at": "2",
            ])
            let record = try OutgoingMessage(
                event: event, topic: topics.gatewayState, key: "connections:\(id)", source: "test")
            return KafkaMessage(
                topic: record.topic, partition: 0, offset: 0, key: record.key, value: record.value,
                headers: record.headers)
        }
        func tombstone(_ id: String) -> KafkaMessage {
            KafkaMessage(topic: topics.gatewayState, partition: 1, offset: 1, key: Array("connections:\(id)".utf8), value: nil)
        }
        // The file holds c-1, stale: the changelog says c-3 replaced it under the same account, then c-1 was deleted.
        var readBack = try await database.applyChangelog([try connection("c-1", createdAt: "0.5")])
        #expect(readBack.rows == 1)
        // c-3's partition is read first: it clashes with the file's c-1 and waits.
        readBack.absorb(try await database.applyChangelog([try connection("c-3")]))
        #expect(readBack.deferred.keys.sorted() == ["connections:c-3"])
        // c-1's partition: its older record; and c-2's older record, which clashes with it and waits too.
        readBack.absorb(try await database.applyChangelog([try connection("c-1"), try connection("c-2")]))
        #expect(readBack.deferred.keys.sorted() == ["connections:c-2", "connections:c-3"])
        // c-1's tombstone, and c-2's latest record, which supersedes the one waiting.
        readBack.absorb(try await database.applyChangelog([tombstone("c-1"), try connection("c-2", account: "acc-2")]))
        #expect(readBack.deferred.keys.sorted() == ["connections:c-3"])
        let finished = try await database.finishReadBack(readBack)
        #expect(finished.deferred.isEmpty && finished.refused == 0 && finished.deleted == 1)
        #expect(finished.seen == ["connections:c-1", "connections:c-2", "connections:c-3"])
        let rows = try await database.database.read { db in
            try Row.fetchAll(db, sql: "SELECT connection_id, account_id, created_at, test FROM connections ORDER BY 1")
                .map { row in
                    (row["connection_id"] as String, row["account_id"] as String, row["created_at"] as Double,
                     row["test"] as Int64)
                }
        }
        #expect(rows.map(\.0) == ["c-2", "c-3"] && rows.map(\.1) == ["acc-2", "acc-1"])
        #expect(rows.last?.2 == 1.5 && rows.last?.3 == 0)
    }
}
