import AsyncHTTPClient
import AtlassianClient
import Contracts
import Foundation
import Hummingbird
import Logging
import Messaging
import NIOCore
import ServiceKit
import ServiceLifecycle
import TestSupport
import Testing
@testable import pdr_reporter

#if canImport(Glibc)
import Glibc
#endif

/// The whole reporter against a real broker, real SQLite and the sandbox: instances in one consumer group over
/// `lethe.pdr.accounts.v1`, restoring from `lethe.pdr.reports.v1`. The sandbox call log is the oracle.
@Suite("Partitioned reporting over Kafka", .serialized)
struct PartitionedReportingTests {
    static let app = "kafka-app"
    static let partitions = 4
    static let adminToken = "admin-token-0123456789abcdef"
    static let internalToken = "internal-token-0123456789"
    /// Sandbox times are taken on receipt, `reportedAt` after the answer: a correct gap can be this much short of the
    /// cycle, never more.
    static let tolerance: TimeInterval = 0.5

    /// One test's world: sandbox, a signed-in connection for the app, a unique topic namespace, a producer.
    struct World: Sendable {
        let sandbox: SandboxDriver
        let tokens: SandboxTokens
        let accessToken: String
        let namespace: String
        let topics: LetheTopics
        let producer: KafkaProducer
        let bootstrapServers: String
        let logger: Logger

        func environment(cycle: Int, dataDirectory: URL, port: Int) -> [String: String] {
            [
                "KAFKA_BOOTSTRAP_SERVERS": bootstrapServers, "KAFKA_TOPIC_PARTITIONS": String(PartitionedReportingTests.partitions),
                "LETHE_TOPIC_NAMESPACE": namespace, "LETHE_DATA_DIR": dataDirectory.path,
                "HTTP_HOST": "127.0.0.1", "HTTP_PORT": String(port), "PDR_CYCLE_SECONDS": String(cycle), "PDR_ALLOW_SHORT_CYCLE": "1",
                "PDR_REQUEST_INTERVAL_MS": "100", "ATLASSIAN_AUTH_URL": sandbox.process.baseURL.absoluteString,
                "ATLASSIAN_API_URL": sandbox.process.baseURL.absoluteString,
                "LETHE_ADMIN_TOKEN": PartitionedReportingTests.adminToken,
                "LETHE_INTERNAL_TOKEN": PartitionedReportingTests.internalToken,
            ]
        }

        /// An in-process instance (its own data directory), running until `stop`.
        func startInstance(cycle: Int, environment extra: [String: String] = [:], logger: Logger? = nil)
            async throws -> Instance
        {
            let directory = try TemporaryDirectory("pdr")
            let config = try PDRReporterConfig(reader: ConfigReader(environment: environment(
                cycle: cycle, dataDirectory: directory.url, port: 0).merging(extra) { $1 }))
            let parts = try await buildPDRReporter(
                config: config, logger: logger ?? self.logger, tokens: tokens, settings: ReporterWorld.fastSettings(),
                handleSignals: false)
            let task = Task { try await parts.group.run() }
            return Instance(parts: parts, task: task, directory: directory)
        }

        func hold(_ ids: [String]) async throws {
            try await producer.send(ids.map { id in
                try OutgoingMessage(
                    event: AccountHeld(appId: PartitionedReportingTests.app, accountId: id,
                                       updatedAt: Date(timeIntervalSince1970: 1_700_000_000), tenantIds: ["t1"]),
                    topic: topics.pdrAccounts, key: "\(PartitionedReportingTests.app):\(id)", source: "test")
            })
        }

        func tombstone(_ id: String) async throws {
            try await producer.send(.tombstone(topic: topics.pdrAccounts, key: "\(PartitionedReportingTests.app):\(id)"))
        }

        func successes() async throws -> [String: [Date]] {
            try await sandbox.successes(clientId: PartitionedReportingTests.app)
        }
    }

    struct Instance: Sendable {
        let parts: PDRReporterParts
        let task: Task<Void, any Error>
        let directory: TemporaryDirectory

        /// Whether `text` occurs in the bytes of the registry's database or WAL file.
        func filesContain(_ text: String) -> Bool {
            sqliteFilesContain(directory.file("pdr-reporter.sqlite"), text)
        }

        func stop() async throws {
            await parts.group.triggerGracefulShutdown()
            try await task.value
        }

        func held() async throws -> Int {
            try await parts.loop.status().first { $0.appId == PartitionedReportingTests.app }?.accountsHeld ?? 0
        }
    }

    static func withWorld(_ body: @Sendable (World) async throws -> Void) async throws {
        let bootstrap = try DevBroker.bootstrapServers()
        try await withSandboxProcess { process in
            var config = HTTPClient.Configuration()
            config.redirectConfiguration = .disallow
            let http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: config)
            let logger = makeTestLogger("pdr-kafka-test")
            let client = AtlassianClient(
                config: .init(authURL: process.baseURL, apiURL: process.baseURL, requestTimeout: .seconds(5)),
                httpClient: http, logger: logger)
            let sandbox = SandboxDriver(process: process, http: http, client: client)
            let producer = try KafkaProducer(config: KafkaProducerConfig(bootstrapServers: bootstrap), logger: logger)
            let outcome: Result<Void, any Error>
            do {
                try await sandbox.control("/settings", ["rateLimitRequests": 0, "cyclePeriodFormat": "none"])
                try await sandbox.registerApp(app)
                try await sandbox.addUser("owner")
                let token = try await sandbox.signIn("owner", app: app)
                let tokens = SandboxTokens()
                await tokens.add(appId: app, connectionId: "owner", token: token)
                let namespace = uniqueName("pdr")
                let world = World(sandbox: sandbox, tokens: tokens, accessToken: token, namespace: namespace,
                                  topics: LetheTopics(namespace: namespace), producer: producer,
                                  bootstrapServers: bootstrap, logger: logger)
                // The topics exist before anything is produced, with the instances' partition count.
                let admin = try KafkaAdmin(bootstrapServers: bootstrap, logger: logger)
                try await admin.ensureTopics([world.topics.pdrAccounts, world.topics.pdrReports, world.topics.pdrStatus].map {
                    TopicSpec(name: $0, partitions: partitions)
                })
                outcome = try await withRunningServices([producer], logger: logger) {
                    do { return .success(try await body(world)) } catch { return .failure(error) }
                }
            } catch {
                outcome = .failure(error)
            }
            try? await http.shutdown()
            try outcome.get()
        }
    }

    /// Every pair of consecutive successful reports of an account, as (account, earlier, later).
    static func gaps(_ successes: [String: [Date]]) -> [(String, Date, Date)] {
        successes.flatMap { id, dates in
            zip(dates, dates.dropFirst()).map { (id, $0, $1) }
        }
    }

    @Test("a restarted instance restores the changelog and reports nothing early; never-reported accounts still come")
    func restartRestoresChangelog() async throws {
        try await Self.withWorld { world in
            let cycle = 20
            // Three groups of at most 90 (one call each), due at three points of the cycle (see `Schedule`).
            let ids = (0..<270).map { "acct-\($0)" }
            try await world.hold(ids)
            let first = try await world.startInstance(cycle: cycle)
            // Stop once a group is reported: early in the cycle, so an instance that did not restore would schedule
            // those accounts again well before a full cycle has passed.
            let some = try await eventually(timeout: .seconds(40), every: .milliseconds(100)) {
                try await world.successes().count >= 60
            }
            try await first.stop()
            let beforeRestart = try await world.successes()
            #expect(some, "the first instance reported only \(beforeRestart.count) accounts")
            #expect(beforeRestart.count < ids.count, "everything was reported before the restart; the test proves nothing")

            // Progress after every batch the restore applies (PDR_RESTORE_PROGRESS_SECONDS=0), so this small restore
            // shows it too.
            let logs = RecordedLogs()
            let second = try await world.startInstance(
                cycle: cycle, environment: ["PDR_RESTORE_PROGRESS_SECONDS": "0"],
                logger: Logger(label: "pdr-reporter") { logs.handler(label: $0) })
            let done = try await eventually(timeout: .seconds(80), every: .milliseconds(250)) {
                let now = try await world.successes()
                return ids.allSatisfy { (now[$0]?.count ?? 0) >= 1 }
                    && beforeRestart.keys.allSatisfy { (now[$0]?.count ?? 0) >= 2 }
            }
            try await second.stop()
            let all = try await world.successes()
            #expect(done, "not every account was reported (again) after the restart: \(all.count) of \(ids.count)")
            for (id, earlier, later) in Self.gaps(all) {
                #expect(later.timeIntervalSince(earlier) >= Double(cycle) - Self.tolerance,
                        "\(id) re-reported after \(later.timeIntervalSince(earlier)) s, cycle \(cycle) s")
            }
            // The first re-report of an account reported before the restart comes from the changelog's nextDueAt.
            #expect(beforeRestart.keys.allSatisfy { (all[$0]?.count ?? 0) >= 2 })
            // The restore said what it was doing while it ran, not only when it was done.
            let text = logs.text
            #expect(text.contains("restoring the changelog of assigned partitions"), "\(text.prefix(2000))")
            #expect(text.contains("restoring the changelog [") && text.contains("pdr.changelog_records"),
                    "no progress line: \(text.prefix(2000))")
        }
    }

    /// The latest changelog record per account (`lethe.pdr.reports.v1`, every partition from its beginning), read until
    /// `done` holds for them or 30 s have passed.
    static func latestReports(
        _ world: World, until done: @escaping @Sendable ([String: AccountReported]) -> Bool
    ) async throws -> [String: AccountReported] {
        let reader = try KafkaConsumer(
            config: KafkaConsumerConfig(
                bootstrapServers: world.bootstrapServers,
                subscription: .partitions((0..<Int32(partitions)).map {
                    (TopicPartition(topic: world.topics.pdrReports, partition: $0), from: .beginning)
                })),
            logger: world.logger)
        return try await withRunningServices([reader], logger: world.logger) {
            try await withThrowingTaskGroup(of: [String: AccountReported]?.self) { group in
                group.addTask {
                    var latest: [String: AccountReported] = [:]
                    for try await message in reader.messages where message.value != nil {
                        let report = try message.decodeEvent(AccountReported.self)
                        latest[report.accountId] = report
                        if done(latest) { return latest }
                    }
                    return latest
                }
                group.addTask {
                    try await Task.sleep(for: .seconds(30))
                    return nil
                }
                defer { group.cancelAll() }
                return try await group.next()! ?? [:]
            }
        }
    }

    @Test("a Cycle-Period answer is republished to the changelog, and a new instance recovers it from there")
    func newInstanceRecoversCyclePeriod() async throws {
        try await Self.withWorld { world in
            let cycle = 3
            let answered = 600
            // More than one call's worth: groups due at different points of the cycle, so some accounts are still
            // reported only once when the answer comes (see `Schedule`).
            let ids = (0..<200).map { "acct-\($0)" }
            try await world.hold(ids)
            let first = try await world.startInstance(cycle: cycle)
            let once = try await eventually(timeout: .seconds(40), every: .milliseconds(100)) {
                try await world.successes().count == ids.count
            }
            #expect(once, "not every account was reported under the default cycle")
            // Atlassian now answers a longer cycle: the next call (some accounts' second report) carries it.
            try await world.sandbox.control("/settings", ["cyclePeriodFormat": "seconds", "cyclePeriodSeconds": answered])
            let adopted = try await eventually(timeout: .seconds(30), every: .milliseconds(100)) {
                try await first.parts.loop.status().first { $0.appId == Self.app }?.cyclePeriodSeconds == Int64(answered)
            }
            #expect(adopted, "the first instance did not adopt the answered cycle")
            // From here on no call can teach the cycle: only the changelog can.
            try await world.sandbox.control("/settings", ["cyclePeriodFormat": "none"])
            try await first.stop()
            // Accounts reported once only, under the old cycle: their records can carry the new one only if republished.
            let reportedOnce = try await world.successes().filter { $0.value.count == 1 }.keys
            #expect(!reportedOnce.isEmpty, "every account was reported again after the answer; republishing is not exercised")

            // Every account's latest changelog record carries the new cycle — also those not reported since the answer.
            let latest = try await Self.latestReports(world) { latest in
                ids.allSatisfy { id in
                    latest[id].map { abs($0.nextDueAt.timeIntervalSince($0.reportedAt) - Double(answered)) < 0.002 }
                        ?? false
                }
            }
            for id in ids {
                let gap = latest[id].map { $0.nextDueAt.timeIntervalSince($0.reportedAt) }
                #expect(gap.map { abs($0 - Double(answered)) < 0.002 } == true, "\(id): next due \(String(describing: gap)) s after its report")
            }

            // A new instance (its own, empty data directory) restores the partitions and follows the answered cycle.
            let second = try await world.startInstance(cycle: cycle)
            let restored = try await eventually(timeout: .seconds(40), every: .milliseconds(250)) {
                try await second.held() == ids.count
            }
            let held = try await second.held()
            #expect(restored, "the new instance holds \(held) of \(ids.count)")
            let status = try await second.parts.loop.status().first { $0.appId == Self.app }
            #expect(status?.cyclePeriodSeconds == Int64(answered))
            #expect(try await second.parts.registry.cyclePeriod(appId: Self.app) == .seconds(answered))
            for id in ids {
                let account = try #require(try await second.parts.registry.account(appId: Self.app, accountId: id))
                let reported = try #require(account.lastReportedAt, "\(id) restored without its last report")
                #expect(abs(account.nextDueAt.timeIntervalSince(reported) - Double(answered)) < 0.002,
                        "\(id) due \(account.nextDueAt.timeIntervalSince(reported)) s after its last report")
            }
            try await second.stop()
        }
    }

    @Test("a tombstone on lethe.pdr.accounts.v1 stops reporting the account at once")
    func tombstoneStopsReporting() async throws {
        try await Self.withWorld { world in
            let cycle = 4
            let ids = (0..<10).map { "acct-\($0)" }
            try await world.hold(ids)
            let instance = try await world.startInstance(cycle: cycle)
            let once = try await eventually(timeout: .seconds(30), every: .milliseconds(100)) {
                try await world.successes().count == ids.count
            }
            #expect(once, "not every account was reported once")
            try await world.tombstone("acct-0")
            let tombstonedAt = Date()
            let twice = try await eventually(timeout: .seconds(30), every: .milliseconds(200)) {
                let now = try await world.successes()
                return ids.dropFirst().allSatisfy { (now[$0]?.count ?? 0) >= 3 }
            }
            try await instance.stop()
            let all = try await world.successes()
            #expect(twice, "the held accounts were not reported on")
            // Reported once before the tombstone; at most one more if its next due time had just come as it arrived.
            #expect((all["acct-0"] ?? []).allSatisfy { $0 < tombstonedAt.addingTimeInterval(0.5) },
                    "the tombstoned account was reported after its tombstone: \(all["acct-0"] ?? [])")
            #expect(try await instance.parts.registry.account(appId: Self.app, accountId: "acct-0") == nil)
        }
    }

    @Test("a closed account is closed at once: no longer registered nor reported though still held, its accountId leaves the reporter's files, and a restore on another instance does not bring it back")
    func closedAccountLeavesNoTrace() async throws {
        try await Self.withWorld { world in
            let closedId = "closed-5e1f0a9c"
            let ids = [closedId] + (0..<5).map { "acct-\($0)" }
            try await world.sandbox.addUser(closedId)
            try await world.sandbox.control("/users/\(closedId)/close")
            try await world.hold(ids)
            // First reports are spread over the cycle: a short one brings them all within seconds.
            let first = try await world.startInstance(cycle: 4)
            let reported = try await eventually(timeout: .seconds(30), every: .milliseconds(100)) {
                try await world.successes().count == ids.count
            }
            #expect(reported, "not every account was reported")
            // Still held (its erasure is not done: no tombstone from profile-store), yet no longer registered, its
            // last report forgotten, and its accountId gone from the files: only a digest says it is closed.
            let closedAtOnce = try await eventually(timeout: .seconds(10)) {
                let registered = try await first.parts.registry.account(appId: Self.app, accountId: closedId)
                let lastReport = try await first.parts.registry.lastReport(appId: Self.app, accountId: closedId)
                return registered == nil && lastReport == nil && !first.filesContain(closedId)
            }
            #expect(closedAtOnce, "the closed account is still registered, or its accountId in the reporter's files")
            #expect(try await first.parts.registry.lastReport(appId: Self.app, accountId: "acct-0") != nil)
            #expect(first.filesContain("acct-0"), "the byte search cannot find a held account; it proves nothing")
            // Two more cycles: the others are reported again, the closed one never.
            let again = try await eventually(timeout: .seconds(30), every: .milliseconds(250)) {
                let now = try await world.successes()
                return ids.dropFirst().allSatisfy { (now[$0]?.count ?? 0) >= 3 }
            }
            #expect(again, "the held accounts were not reported on")
            #expect(try await world.successes()[closedId]?.count == 1, "the closed account was reported again")
            try await first.stop()

            // Another instance restores while the account is still held: the changelog's tombstone says closed.
            let second = try await world.startInstance(cycle: 4)
            let restored = try await eventually(timeout: .seconds(40), every: .milliseconds(250)) {
                try await second.held() == ids.count - 1
            }
            #expect(restored, "the new instance did not restore exactly the held accounts but the closed one")
            #expect(!second.filesContain(closedId), "a restore brought the closed account's accountId back")
            #expect(try await second.parts.registry.lastReport(appId: Self.app, accountId: "acct-0") != nil,
                    "the restore did not bring back the other accounts' last reports")
            // The erasure is done: the tombstone changes nothing more.
            try await world.tombstone(closedId)
            try await Task.sleep(for: .seconds(5))
            #expect(try await world.successes()[closedId]?.count == 1, "the closed account was reported again")
            #expect(try await second.held() == ids.count - 1)
            try await second.stop()
        }
    }
}
