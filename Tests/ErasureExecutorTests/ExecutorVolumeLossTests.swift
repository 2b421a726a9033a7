import Contracts
import Foundation
import Testing
import TestSupport

@testable import erasure_executor

/// The executor's volume lost between two runs: the new process starts on an empty directory and reads its changelog
/// (`lethe.erasure.state.v1`) back, so the open erasure is not lost and the audit chain goes on.
@Suite("erasure-executor after losing its volume, over Kafka and HTTP")
struct ExecutorVolumeLossTests {
    let kafka: KafkaFixture

    init() throws { kafka = try KafkaFixture("erasure-executor-volume") }

    @Test("""
        an executor started on an empty directory continues the open erasure (completed by the late participant's \
        ack) and keeps the completed one and its audit entry
        """)
    func openErasureSurvivesTheLossOfTheVolume() async throws {
        let world = try await ExecutorWorld(kafka: kafka, namespace: "ee-volume")
        let run = UUID().uuidString.prefix(6)
        let (first, second) = ("557058:vol-a-\(run)", "557058:vol-b-\(run)")
        let present = TestParticipantHandler(held: [:])
        do {
            var executor = try await startWithOneCompletedAndOneOpen(
                world, present: present, accounts: (first, second))
            let completedId = try #require(await present.applied.first { $0.accountId == first }?.erasureId)
            let openId = try #require(await present.applied.first { $0.accountId == second }?.erasureId)

            await world.stopExecutor()
            let removed = try Self.removeTheExecutorsFiles(in: world.directory)
            #expect(removed >= 1, "no SQLite file of the executor to remove")
            executor = try await world.startExecutor(settings: ["ERASURE_RESEND_SECONDS": "3600", "LOG_LEVEL": "info"])
            let readOnEmptyFile = try #require(Self.recordsReadBack(executor.output()), "\(executor.output())")
            #expect((try await executor.metric("lethe_erasure_changelog_restored_total") ?? 0) >= 2)
            #expect(try await executor.metric("lethe_erasure_changelog_refused_total") == 0)

            let done = try #require(try await executor.erasure(completedId), "the completed erasure is gone")
            #expect(done.status == .completed && done.accountId == nil)
            let open = try #require(try await executor.erasure(openId), "the open erasure is gone")
            #expect(open.status == .dispatched && open.accountId == second)
            #expect(open.participants.map(\.participant).sorted() == ["late", "present"])
            // Its record holds no acknowledgement: the command goes out again at once and "present" answers again.
            let reasked = await eventually(timeout: .seconds(30), every: .milliseconds(200)) {
                (try? await executor.erasure(openId))?.participants.first { $0.participant == "present" }?.outcome
                    == .nothingHeld
            }
            #expect(reasked, "the present participant was not asked again: \(executor.output())")
            #expect(try await executor.erasure(openId)?.participants.first { $0.participant == "late" }?.outcome == nil)
            try await expectAudit(executor, entries: 1)

            // The late participant comes: its group reads the commands topic from the beginning and acks the open
            // erasure's command, which the restored executor knows.
            try world.startParticipant("late", handler: TestParticipantHandler(held: [:]), holds: ["email"])
            let completed = await eventually(timeout: .seconds(60), every: .milliseconds(200)) {
                (try? await executor.erasure(openId))?.status == .completed
            }
            #expect(completed, "the restored open erasure did not complete: \(executor.output())")
            try await expectAudit(executor, entries: 2)

            // On its intact file, a restart reads only what came after the last read-back ended.
            await world.stopExecutor()
            executor = try await world.startExecutor(settings: ["ERASURE_RESEND_SECONDS": "3600", "LOG_LEVEL": "info"])
            let readOnItsFile = try #require(Self.recordsReadBack(executor.output()), "\(executor.output())")
            #expect(readOnItsFile < readOnEmptyFile, "read back \(readOnItsFile), on the empty file \(readOnEmptyFile)")
            try await expectAudit(executor, entries: 2)
        } catch {
            Issue.record(error)
        }
        await world.stop()
    }

    @Test("""
        a closed status taken in just before a kill -9 and the loss of the volume is not lost: its offset is committed \
        only once the erasure's changelog record is sent, so the next start takes it in again
        """)
    func takenInJustBeforeTheLossOfTheVolume() async throws {
        let world = try await ExecutorWorld(kafka: kafka, namespace: "ee-commit")
        let account = "557058:commit-\(UUID().uuidString.prefix(6))"
        do {
            try await world.send(tenant("tenant-v", .delete), topic: world.topics.tenants, key: "tenant-v")
            try await world.send(declared("absent"), topic: world.topics.erasureParticipants, key: "absent")
            // The outbox holds what the intake wrote for 10 s: a commit that did not wait for it would come at once.
            var executor = try await world.startExecutor(settings: [
                "ERASURE_OUTBOX_LINGER_MS": "10000", "ERASURE_RESEND_SECONDS": "3600",
            ])
            try await world.send(closed(account), topic: world.topics.pdrStatus, key: "app-1:\(account)")
            let opened = await eventually(timeout: .seconds(30), every: .milliseconds(50)) {
                (try? await executor.get("/v1/erasures").body)?.contains(account) == true
            }
            try #require(opened, "the closed status opened no erasure: \(executor.output())")
            executor.process.killAndReap()
            await world.stopExecutor()
            #expect(try Self.removeTheExecutorsFiles(in: world.directory) >= 1)

            executor = try await world.startExecutor(settings: ["ERASURE_RESEND_SECONDS": "3600"])
            let again = await eventually(timeout: .seconds(60), every: .milliseconds(200)) {
                (try? await executor.get("/v1/erasures").body)?.contains(account) == true
            }
            #expect(again, "the erasure was lost with the volume: \(executor.output())")
        } catch {
            Issue.record(error)
        }
        await world.stop()
    }

    /// "present" running and declared; a closed status for `accounts.0` completes with it alone. Then "late" is
    /// declared but does not run, and a closed status for `accounts.1` opens an erasure that waits for it.
    private func startWithOneCompletedAndOneOpen(
        _ world: ExecutorWorld, present: TestParticipantHandler, accounts: (String, String)
    ) async throws -> ExecutorProcess {
        try await world.send(tenant("tenant-v", .delete), topic: world.topics.tenants, key: "tenant-v")
        try await world.send(declared("present"), topic: world.topics.erasureParticipants, key: "present")
        try world.startParticipant("present", handler: present, holds: ["email"])
        let executor = try await world.startExecutor(settings: ["ERASURE_RESEND_SECONDS": "3600"])
        try await world.send(closed(accounts.0), topic: world.topics.pdrStatus, key: "app-1:\(accounts.0)")
        let first = await eventually(timeout: .seconds(60), every: .milliseconds(200)) {
            guard let id = await present.applied.first(where: { $0.accountId == accounts.0 })?.erasureId else {
                return false
            }
            return (try? await executor.erasure(id))?.status == .completed
        }
        try #require(first, "the first erasure did not complete: \(executor.output())")

        try await world.send(declared("late"), topic: world.topics.erasureParticipants, key: "late")
        // The executor has read the declaration once the first erasure's participants can include it: wait for the
        // participants view to show it before the second status.
        let known = await eventually(timeout: .seconds(30), every: .milliseconds(200)) {
            (try? await executor.get("/v1/participants").body)?.contains(#""late""#) == true
        }
        try #require(known, "the executor never read the late participant's declaration")
        try await world.send(closed(accounts.1), topic: world.topics.pdrStatus, key: "app-1:\(accounts.1)")
        let second = await eventually(timeout: .seconds(60), every: .milliseconds(200)) {
            guard let id = await present.applied.first(where: { $0.accountId == accounts.1 })?.erasureId,
                  let record = try? await executor.erasure(id)
            else { return false }
            return record.participants.first { $0.participant == "present" }?.outcome == .nothingHeld
        }
        try #require(second, "the second erasure was not acknowledged by the present participant")
        return executor
    }

    private func closed(_ accountId: String) -> AccountStatusReported {
        AccountStatusReported(
            appId: "app-1", accountId: accountId, tenantIds: ["tenant-v"], status: .closed, reportedAt: Date())
    }

    /// How many changelog records the executor's start read back (its "changelog read back" log line's `count`).
    private static func recordsReadBack(_ log: String) -> Int? {
        guard let line = log.split(separator: "\n").last(where: { $0.contains("changelog read back") }),
              let range = line.range(of: "count=")
        else { return nil }
        return Int(line[range.upperBound...].prefix { $0.isNumber })
    }

    /// Removes erasure-executor's SQLite file, WAL and shared memory; returns how many there were.
    private static func removeTheExecutorsFiles(in directory: TemporaryDirectory) throws -> Int {
        var removed = 0
        for suffix in ["", "-wal", "-shm"] {
            let url = directory.url.appendingPathComponent("erasure-executor.sqlite" + suffix)
            if FileManager.default.fileExists(atPath: url.path) {
                try FileManager.default.removeItem(at: url)
                removed += 1
            }
        }
        return removed
    }

    private func expectAudit(_ executor: ExecutorProcess, entries: Int) async throws {
        let (status, body) = try await executor.get("/v1/audit/verify")
        #expect(status == 200 && body.contains(#""ok":true"#) && body.contains(#""entries":\#(entries)"#), "\(body)")
    }
}
