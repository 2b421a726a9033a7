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

/// The rest of ``PartitionedReportingTests``: where the Kafka sink puts its events, and two instances splitting the
/// partitions, one of them killed.
extension PartitionedReportingTests {
    @Test("the Kafka sink puts AccountReported on the accounts record's partition number, status events on the status topic, and a tombstone after a closed account's record")
    func sinkIsCoPartitionedAndPublishesStatus() async throws {
        try await Self.withWorld { world in
            let sink = KafkaReportSink(producer: world.producer, topics: world.topics)
            let ids = (0..<12).map { "acct-\($0)" }
            var heldOn: [String: Int32] = [:]
            for id in ids {
                let report = try await world.producer.send(try OutgoingMessage(
                    event: AccountHeld(appId: Self.app, accountId: id, updatedAt: Date(), tenantIds: ["t1"]),
                    topic: world.topics.pdrAccounts, key: "\(Self.app):\(id)", source: "test"))
                heldOn[id] = report.partition
            }
            #expect(Set(heldOn.values).count > 1, "all keys on one partition; co-partitioning is not exercised")
            let now = Date()
            try await sink.publish(
                reported: ids.map { AccountReported(appId: Self.app, accountId: $0, reportedAt: now, nextDueAt: now) },
                statuses: [AccountStatusReported(appId: Self.app, accountId: "acct-1", tenantIds: ["t1", "t2"],
                                                 status: .closed, reportedAt: now)])
            let reader = try KafkaConsumer(
                config: KafkaConsumerConfig(
                    bootstrapServers: world.bootstrapServers,
                    subscription: .partitions((0..<Int32(Self.partitions)).flatMap { partition in
                        [world.topics.pdrReports, world.topics.pdrStatus].map {
                            (TopicPartition(topic: $0, partition: partition), from: .beginning)
                        }
                    })),
                logger: world.logger)
            let seen = try await withRunningServices([reader], logger: world.logger) {
                var reportsOn: [String: Int32] = [:]
                var statuses: [AccountStatusReported] = []
                // Tombstones on the changelog: key, partition, and whether the account's record came before.
                var tombstones: [String] = []
                for try await message in reader.messages {
                    if message.topic == world.topics.pdrReports {
                        if message.value == nil {
                            let key = try AccountKey(bytes: message.key ?? [])
                            tombstones.append("\(key.accountId) on \(message.partition) after its record: "
                                + "\(reportsOn[key.accountId] == message.partition)")
                        } else {
                            reportsOn[try message.decodeEvent(AccountReported.self).accountId] = message.partition
                        }
                    } else {
                        statuses.append(try message.decodeEvent(AccountStatusReported.self))
                    }
                    if reportsOn.count == ids.count && statuses.count == 1 && tombstones.count == 1 { break }
                }
                return (reportsOn, statuses, tombstones)
            }
            #expect(seen.0 == heldOn, "changelog records not on their accounts' partition numbers")
            #expect(seen.1.map(\.accountId) == ["acct-1"] && seen.1.first?.tenantIds == ["t1", "t2"])
            #expect(seen.1.first?.status == .closed)
            // The closed account's record is superseded by a tombstone: its accountId does not stay in the changelog.
            #expect(seen.2 == ["acct-1 on \(heldOn["acct-1"] ?? -1) after its record: true"])
        }
    }

    /// The gateway's reporting-token endpoint, served by a double that hands out the sandbox connection's token.
    static func withFakeGateway<T: Sendable>(token: String, _ body: @Sendable (Int) async throws -> T) async throws -> T {
        let router = Router()
        router.post("/internal/v1/apps/{appId}/reporting-token") { request, _ -> Response in
            guard request.headers[.authorization] == "Bearer \(internalToken)" else { return Response(status: .unauthorized) }
            let expiresAt = ISO8601DateFormatter().string(from: Date().addingTimeInterval(3600))
            let json = #"{"accessToken":"\#(token)","connectionId":"owner","expiresAt":"\#(expiresAt)"}"#
            return Response(status: .ok, headers: [.contentType: "application/json"],
                            body: .init(byteBuffer: ByteBuffer(string: json)))
        }
        let (ports, continuation) = AsyncStream.makeStream(of: Int.self)
        let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
                              onServerRunning: { continuation.yield($0.localAddress?.port ?? 0) },
                              logger: makeTestLogger("fake-gateway"))
        let group = ServiceGroup(configuration: .init(services: [app], logger: makeTestLogger()))
        return try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            let result: Result<T, any Error>
            do {
                let port = try #require(await ports.first { _ in true })
                result = .success(try await body(port))
            } catch {
                result = .failure(error)
            }
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
            return try result.get()
        }
    }

    @Test("two instances split the partitions with no double report; kill -9 one → the other restores and takes over")
    func twoInstancesSplitThenTakeOverAfterKill() async throws {
        let binary = RepositoryPaths.executable("pdr-reporter")
        try #require(FileManager.default.isExecutableFile(atPath: binary.path), "missing \(binary.path)")
        try await Self.withWorld { world in
            try await Self.withFakeGateway(token: world.accessToken) { gatewayPort in
                let cycle = 15
                // Several calls' worth per instance: groups due at different points of the cycle (see `Schedule`),
                // so the kill comes with part of the cycle reported.
                let ids = (0..<400).map { "acct-\($0)" }
                try await world.hold(ids)

                // Held while the child lives, so no parallel test picks the port (the child listens beside it).
                let reservation = try SandboxProcess.ReservedPort()
                defer { reservation.release() }
                let directory = try TemporaryDirectory("pdr")
                let log = directory.url.appendingPathComponent("pdr-reporter.log")
                var environment = ProcessInfo.processInfo.environment
                environment.merge(world.environment(cycle: cycle, dataDirectory: directory.url, port: reservation.port)) { $1 }
                environment["LETHE_GATEWAY_INTERNAL_URL"] = "http://127.0.0.1:\(gatewayPort)"
                environment["LOG_LEVEL"] = "info"
                let process = try ChildProcess.spawn(binary.path, environment: environment, stdoutPath: log.path)
                defer { process.killAndReap() }

                let local = try await world.startInstance(cycle: cycle)
                try await Self.expectTheSplit(world, local: local, port: reservation.port, log: log, count: ids.count)
                let (killedAt, beforeKill) = try await Self.killMidCycle(world, process: process, count: ids.count)
                try await Self.expectTheTakeOver(world, local: local, ids: ids, beforeKill: beforeKill)
                try await local.stop()
                try await Self.expectAtMostTheKilledBatchEarly(world, cycle: cycle, killedAt: killedAt)
                let serviceLog = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
                #expect(!serviceLog.contains(world.accessToken), "the access token appeared in the log")
            }
        }
    }

    /// Both instances hold a share, the shares add up to everything, and each paces the apps by its share of the
    /// partitions — together at the deployment's rate, not twice it. `port`: the child process's HTTP port.
    private static func expectTheSplit(_ world: World, local: Instance, port: Int, log: URL, count: Int) async throws {
        func remoteHeld() async -> Int {
            var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)/v1/apps")
            request.headers.add(name: "Authorization", value: "Bearer \(Self.adminToken)")
            // Times are RFC 3339 in the API (`nextDueAt` is there as soon as an account is held).
            let decoder = JSONDecoder()
            decoder.dateDecodingStrategy = .iso8601
            guard let response = try? await world.sandbox.http.execute(request, timeout: .seconds(5)),
                  let body = try? await response.body.collect(upTo: 1 << 20),
                  let decoded = try? decoder.decode(
                    [String: [AppReportingStatus]].self, from: Data(body.readableBytesView))
            else { return -1 }
            return decoded["apps"]?.first { $0.appId == Self.app }?.accountsHeld ?? 0
        }
        let split = try await eventually(timeout: .seconds(40), every: .milliseconds(250)) {
            let remote = await remoteHeld()
            let mine = try await local.held()
            return remote > 0 && mine > 0 && remote + mine == count
        }
        let splitSeen = "remote \(await remoteHeld()), local \(try await local.held())"
        #expect(split, "partitions not split between the two instances: \(splitSeen)")
        func remoteShare() -> Double? {
            let text = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
            return text.components(separatedBy: "pdr.pacing_share=").last.flatMap {
                Double($0.prefix { $0.isNumber || $0 == "." })
            }
        }
        let shared = try await eventually(timeout: .seconds(10), every: .milliseconds(100)) {
            let remote = remoteShare() ?? 0
            return abs(remote + local.parts.loop.pacing.value - 1) < 1e-9 && remote < 1
        }
        #expect(shared, "pacing shares: remote \(remoteShare() ?? -1), local \(local.parts.loop.pacing.value)")
    }

    /// Lets both report part of the cycle, then kills the child process. Returns when, and what was reported before.
    private static func killMidCycle(
        _ world: World, process: ChildProcess, count: Int
    ) async throws -> (killedAt: Date, beforeKill: [String: [Date]]) {
        _ = try await eventually(timeout: .seconds(30), every: .milliseconds(100)) {
            try await world.successes().count >= 60
        }
        let killed = process.killAndReap()
        let killedAt = Date()
        #expect(killed == 128 + SIGKILL)
        let beforeKill = try await world.successes()
        #expect(beforeKill.count < count, "everything was reported before the kill; the test proves nothing")
        return (killedAt, beforeKill)
    }

    /// The survivor takes over (after the session timeout), restores the dead one's changelog partitions, paces at
    /// the full rate, and brings every account around to its second report.
    private static func expectTheTakeOver(
        _ world: World, local: Instance, ids: [String], beforeKill: [String: [Date]]
    ) async throws {
        let takenOver = try await eventually(timeout: .seconds(40), every: .milliseconds(250)) {
            try await local.held() == ids.count
        }
        let survivorHolds = try await local.held()
        #expect(takenOver, "the survivor holds \(survivorHolds) of \(ids.count)")
        #expect(local.parts.loop.pacing.value == 1, "the survivor owns every partition, so it paces at the full rate")
        let done = try await eventually(timeout: .seconds(90), every: .milliseconds(250)) {
            let now = try await world.successes()
            return ids.allSatisfy { (now[$0]?.count ?? 0) >= 1 }
                && beforeKill.keys.allSatisfy { (now[$0]?.count ?? 0) >= 2 }
        }
        let all = try await world.successes()
        #expect(done, "not every account was reported (again): \(all.count) of \(ids.count)")
    }

    /// No account twice within a cycle — except, at most, the one batch the killed process had sent but not yet
    /// recorded when it died (ISSUE 7: a crash between the call and the record re-sends at most that batch). Such a
    /// batch is one call, made just before the kill.
    private static func expectAtMostTheKilledBatchEarly(_ world: World, cycle: Int, killedAt: Date) async throws {
        let all = try await world.successes()
        let calls = try await world.sandbox.calls(clientId: Self.app).filter(\.succeeded)
        var earlyCalls = Set<Int>()
        for (id, earlier, later) in Self.gaps(all) where later.timeIntervalSince(earlier) < Double(cycle) - Self.tolerance {
            let call = calls.first { $0.date == earlier && $0.accounts.contains { $0.accountId == id } }
            earlyCalls.insert(call?.sequence ?? -1)
        }
        #expect(earlyCalls.count <= 1, "early re-reports from \(earlyCalls.count) calls: \(earlyCalls)")
        if let sequence = earlyCalls.first, let call = calls.first(where: { $0.sequence == sequence }) {
            #expect(call.date <= killedAt && call.date > killedAt.addingTimeInterval(-3),
                    "an early re-report that is not the killed process's last batch")
        }
    }
}
