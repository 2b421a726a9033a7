import Contracts
import Foundation
import Messaging
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

extension ErasureLedger {
    /// Every erasure id in the file.
    func erasureIds() async throws -> [String] {
        try await database.read { db in try String.fetchAll(db, sql: "SELECT id FROM erasures") }
    }
}
