import Contracts
import ErasureKit
import Foundation
import GRDB
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Messaging
import Prometheus
import ServiceKit
import ServiceLifecycle
import Storage
import Testing
import TestSupport

@testable import profile_store

/// The last value per key: an `AccountHeld`, or nil for a tombstone.
func lastPerKey(_ messages: [KafkaMessage]) throws -> [String: AccountHeld?] {
    var result: [String: AccountHeld?] = [:]
    for message in messages {
        result[message.keyString ?? ""] = try message.value.map { try EventCodec.decode(AccountHeld.self, from: $0) }
    }
    return result
}

@Suite("profile-store against the dev broker")
struct ProfileStoreServiceTests {
    let kafka: KafkaFixture

    init() throws { kafka = try KafkaFixture("profile-store") }

    func environment(namespace: String, dataDirectory: URL, port: Int = 0, batch: Int = 2000) -> [String: String] {
        [
            "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrapServers, "LETHE_DATA_DIR": dataDirectory.path,
            "HTTP_PORT": String(port), "LETHE_TOPIC_NAMESPACE": namespace, "KAFKA_TOPIC_PARTITIONS": "3",
            "PROFILE_STORE_INGEST_BATCH": String(batch), "LOG_LEVEL": "warning",
        ]
    }

    /// profile-store in process on a fresh namespace and data directory, with a producer for the test's records;
    /// stopped gracefully after `body`.
    func withProfileStore(
        _ body: (ProfileStoreParts, LetheTopics, KafkaProducer) async throws -> Void
    ) async throws {
        let directory = try TemporaryDirectory()
        let namespace = uniqueName("ps")
        let topics = LetheTopics(namespace: namespace)
        let config = try ProfileStoreConfig(reader: ConfigReader(
            environment: environment(namespace: namespace, dataDirectory: directory.url)))
        let parts = try await buildProfileStore(
            config: config, logger: kafka.logger, registry: PrometheusCollectorRegistry(), handleSignals: false)
        let producer = try kafka.makeProducer()
        let running = Task { try await parts.group.run() }
        defer { running.cancel() }
        try await withRunningServices([producer], logger: kafka.logger) {
            try await body(parts, topics, producer)
        }
        await parts.group.triggerGracefulShutdown()
        try await running.value
    }

    @Test("poison records go to the DLQ while ingest goes on; a closed erasure acks, tombstones and suppresses")
    func ingestAndEraseEndToEnd() async throws {
        // Distinctive, so a search of the file's bytes finds it only where it was stored.
        let account = "557058:erased-\(UUID().uuidString.lowercased())"
        let key = "app-1:\(account)"
        try await withProfileStore { parts, topics, producer in
            func send(_ event: some LetheEvent, topic: String, key: String) async throws {
                try await producer.send(try OutgoingMessage(event: event, topic: topic, key: key, source: "test"))
            }
            // Same key, so the same partition: the good records sit behind the poison one.
            try await producer.send(OutgoingMessage(topic: topics.profiles, key: key, value: Array("{x".utf8)))
            try await send(fetched("t1", account, at: 10), topic: topics.profiles, key: key)
            try await send(fetched("t2", account, at: 20), topic: topics.profiles, key: key)
            try await send(fetched("t1", account, at: 5, name: "Old"), topic: topics.profiles, key: key)
            let ingested = await eventually(timeout: .seconds(30)) {
                let stats = parts.intake.stats
                return stats.applied == 2 && stats.stale == 1
            }
            #expect(ingested, "stats: \(parts.intake.stats)")
            #expect(try await parts.database.profileCount() == 2)

            let erase = command("e-1", "t1", account, .delete, cause: .atlassianClosed)
            try await send(erase, topic: topics.erasureCommands, key: key)
            try await send(erase, topic: topics.erasureCommands, key: key)
            let acks = try await readUntil(kafka, topic: topics.erasureAcks) { $0.count == 2 }
                .map { try $0.decodeEvent(ErasureAcknowledged.self) }
            #expect(acks.map(\.outcome) == [.erased, .erased])
            #expect(acks.allSatisfy { $0.participant == "profile-store" && $0.erasureId == "e-1" })

            try await send(fetched("t1", account, at: 99, name: "Late"), topic: topics.profiles, key: key)
            #expect(await eventually(timeout: .seconds(30)) { parts.intake.stats.suppressed == 1 })
            #expect(try await parts.database.profile(tenantId: "t1", appId: "app-1", accountId: account) == nil)

            // Under scrub too, a closed account's accountId must leave the file (the row stays, unlinked).
            try await send(
                command("e-2", "t2", account, .scrub, cause: .atlassianClosed), topic: topics.erasureCommands,
                key: key)
            let accounts = try await readUntil(kafka, topic: topics.pdrAccounts) { messages in
                messages.last?.value == nil && messages.count >= 2
            }
            let held = try accounts.map { try $0.value.map { try EventCodec.decode(AccountHeld.self, from: $0) } }
            let tenantLists: [[String]] = held.compactMap { $0?.tenantIds }
            #expect(tenantLists.contains(["t1", "t2"]))
            #expect(held.last! == nil, "the account must end as a tombstone")
            // No tenant holds it and it is suppressed by digest: the accountId has left the file's bytes — the
            // profile rows, the announcement state, the suppression list and the sent tombstone alike.
            let path = parts.database.database.path
            let gone = await eventually(timeout: .seconds(10)) { !sqliteFilesContain(path, account) }
            #expect(gone, "the closed account's accountId stayed in profile-store's database or WAL file")

            let dead = try await readUntil(kafka, topic: DeadLetterQueue.topic(for: topics.profiles)) { $0.count == 1 }
            #expect(dead.first?.value == Array("{x".utf8) && dead.first?.header(DeadLetterQueue.errorHeader) != nil)
            let declared = try await readUntil(kafka, topic: topics.erasureParticipants) { $0.count == 1 }
            #expect(try declared.first?.decodeEvent(ParticipantDeclared.self).participant == "profile-store")
        }
    }

    @Test("over Kafka: a record without CloudEvents headers goes to the DLQ, and a profile that overtook its erasure is not stored")
    func headerlessAndOvertakingRecords() async throws {
        let account = "557058:overtaken-\(UUID().uuidString.lowercased())"
        let key = "app-1:\(account)"
        try await withProfileStore { parts, topics, producer in
            // A well-formed body without the headers docs/contracts.md requires: not an event of the contract.
            let body = try EventCodec.encode(fetched("t1", account, at: 10))
            try await producer.send(OutgoingMessage(topic: topics.profiles, key: key, value: Array(body)))
            let dead = try await readUntil(kafka, topic: DeadLetterQueue.topic(for: topics.profiles)) { $0.count == 1 }
            #expect(dead.first?.header(DeadLetterQueue.errorHeader)?.stringValue?.contains("ce_specversion") == true,
                    "\(String(describing: dead.first?.header(DeadLetterQueue.errorHeader)?.stringValue))")
            #expect(try await parts.database.profileCount() == 0)

            // The erasure is applied first (nothing held yet); the profile fetched before it was issued comes after.
            let issuedAt = t0.addingTimeInterval(100)
            try await producer.send(try OutgoingMessage(
                event: command("e-1", "t1", account, .scrub, issuedAt: issuedAt), topic: topics.erasureCommands,
                key: key, source: "test"))
            let acks = try await readUntil(kafka, topic: topics.erasureAcks) { $0.count == 1 }
            #expect(try acks.first?.decodeEvent(ErasureAcknowledged.self).outcome == .nothingHeld)
            try await producer.send(try OutgoingMessage(
                event: fetched("t1", account, at: 50, name: "Overtaken"), topic: topics.profiles, key: key,
                source: "test"))
            #expect(await eventually(timeout: .seconds(30)) { parts.intake.stats.erased == 1 },
                    "stats: \(parts.intake.stats)")
            #expect(try await parts.database.profileCount() == 0)
            // The user signs in again after the erasure: stored.
            try await producer.send(try OutgoingMessage(
                event: fetched("t1", account, at: 150, name: "Again"), topic: topics.profiles, key: key, source: "test"))
            #expect(await eventually(timeout: .seconds(30)) { parts.intake.stats.applied == 1 })
            #expect(try await parts.database.profile(tenantId: "t1", appId: "app-1", accountId: account)?.name == "Again")
        }
    }

    @Test("kill -9 during a 20k-event ingest, restart: every profile present, outbox complete, no AccountHeld lost")
    func killNineDuringIngest() async throws {
        let binary = RepositoryPaths.executable("profile-store")
        try #require(FileManager.default.isExecutableFile(atPath: binary.path), "missing \(binary.path)")
        let directory = try TemporaryDirectory()
        let namespace = uniqueName("ps-kill")
        let topics = LetheTopics(namespace: namespace)
        let accounts = 10_000
        let total = accounts * 2
        try await fetchEveryAccountTwice(topics: topics, accounts: accounts)

        // Reserved for both launches: a random port in the ephemeral range can be in use.
        let reservation = try SandboxProcess.ReservedPort()
        defer { reservation.release() }
        let port = reservation.port
        let log = directory.url.appendingPathComponent("service.log")
        func launch() throws -> ChildProcess {
            try ChildProcess.spawn(
                binary.path,
                environment: environment(namespace: namespace, dataDirectory: directory.url, port: port, batch: 250),
                stdoutPath: log.path)
        }
        let databasePath = directory.url.appendingPathComponent("profile-store.sqlite").path
        let profiles = ReadOnlyProfileCount(path: databasePath)

        let first = try launch()
        let midStream = await eventually(timeout: .seconds(90), every: .milliseconds(5)) { profiles.count() >= 2000 }
        let killed = first.killAndReap()
        let serviceLog = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
        #expect(midStream, "the service never started ingesting: \(serviceLog)")
        #expect(killed == 128 + SIGKILL)
        let atKill = profiles.count()
        #expect(atKill < total, "the first process finished before it was killed; the test proves nothing")

        let second = try launch()
        defer { second.killAndReap() }
        let complete = await eventually(timeout: .seconds(120), every: .milliseconds(200)) { profiles.count() == total }
        #expect(complete, "profiles after restart: \(profiles.count()) of \(total)")
        let ready = await eventually(timeout: .seconds(30)) {
            guard let url = URL(string: "http://127.0.0.1:\(port)/health/ready"),
                  let (_, response) = try? await URLSession.shared.data(from: url)
            else { return false }
            return (response as? HTTPURLResponse)?.statusCode == 200
        }
        #expect(ready, "/health/ready did not answer 200")
        try await expectTheOutboxDrainedAndEveryAccountAnnounced(databasePath: databasePath, accounts: accounts)
        try await expectEveryAccountHeldOnTheTopic(topics: topics, accounts: accounts)
    }

    /// Tenant t1 fetched each account first, t2 a second later: updatedAt must be t1's time. All on the profiles
    /// topic before profile-store starts.
    private func fetchEveryAccountTwice(topics: LetheTopics, accounts: Int) async throws {
        try await KafkaAdmin(bootstrapServers: kafka.bootstrapServers, logger: kafka.logger).ensureTopics([
            TopicSpec(Topics.profiles, in: topics, partitions: 3),
        ])
        let producer = try kafka.makeProducer()
        try await withRunningServices([producer], logger: kafka.logger) {
            var messages: [OutgoingMessage] = []
            for index in 0..<accounts {
                for (tenant, offset) in [("t1", 0.0), ("t2", 1.0)] {
                    let event = fetched(tenant, "acc-\(index)", at: Double(index) + offset)
                    messages.append(try OutgoingMessage(
                        event: event, topic: topics.profiles, key: "app-1:acc-\(index)", source: "test"))
                }
            }
            try await producer.send(messages)
        }
    }

    /// The outbox is drained, and every account is announced with both tenants.
    private func expectTheOutboxDrainedAndEveryAccountAnnounced(databasePath: String, accounts: Int) async throws {
        let database = try SQLiteDatabase(path: databasePath, migrations: ProfileDatabase.migrations)
        let drained = await eventually(timeout: .seconds(60), every: .milliseconds(200)) {
            (try? await database.read { db in try Outbox.pendingCount(in: db) }) == 0
        }
        #expect(drained, "the outbox was not drained")
        let announced = try await database.read { db in
            try Int.fetchOne(
                db, sql: "SELECT count(*) FROM announced_accounts WHERE tenant_ids = 't1' || char(10) || 't2'")
        }
        #expect(announced == accounts)
    }

    /// Every account's last AccountHeld on the topic: both tenants, t1's (older) retrieval time.
    private func expectEveryAccountHeldOnTheTopic(topics: LetheTopics, accounts: Int) async throws {
        // Kept as records arrive (the topic holds the first process's announcements and the restart's again): how
        // many accounts' latest record holds both tenants.
        let complete = LockedValue<(both: Set<String>, failed: Bool)>(([], false))
        let records = try await readUntil(kafka, topic: topics.pdrAccounts, timeout: .seconds(120)) { messages in
            guard let message = messages.last else { return false }
            return complete.withValue { state in
                let key = message.keyString ?? ""
                let held: AccountHeld?
                do {
                    held = try message.value.map { try EventCodec.decode(AccountHeld.self, from: $0) }
                } catch {
                    state.failed = true
                    return true
                }
                if held?.tenantIds == ["t1", "t2"] { state.both.insert(key) } else { state.both.remove(key) }
                return state.both.count == accounts
            }
        }
        #expect(!complete.withValue { $0.failed }, "a record on the accounts topic is not an AccountHeld")
        let last = try lastPerKey(records)
        #expect(last.count == accounts)
        let wrong = last.filter { key, held in
            let index = Double(key.split(separator: "-").last.flatMap { Double($0) } ?? -1)
            return held?.tenantIds != ["t1", "t2"] || held?.updatedAt != t0.addingTimeInterval(index)
        }
        #expect(wrong.isEmpty, "\(wrong.count) accounts with a wrong or missing AccountHeld")
    }
}

/// profile-store's profiles, counted read-only and without migrating: the service owns the schema, and the test must
/// not take its write lock. Opened at the first count after the file exists; a count that fails is 0.
private struct ReadOnlyProfileCount {
    let path: String
    private let reader = LockedValue<DatabasePool?>(nil)

    init(path: String) { self.path = path }

    func count() -> Int {
        reader.withValue { pool in
            if pool == nil, FileManager.default.fileExists(atPath: path) {
                var configuration = Configuration()
                configuration.readonly = true
                pool = try? DatabasePool(path: path, configuration: configuration)
            }
            return (try? pool?.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM profiles") }) ?? 0
        }
    }
}
