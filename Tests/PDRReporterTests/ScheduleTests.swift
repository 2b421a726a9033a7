import Contracts
import Foundation
import Testing
@testable import pdr_reporter

/// The two registries that must behave alike: every registry test runs against both.
enum RegistryKind: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case memory, sqlite

    var testDescription: String { rawValue }

    func make(schedule: Schedule) throws -> any AccountRegistry {
        switch self {
        case .memory: return InMemoryAccountRegistry(schedule: schedule)
        case .sqlite: return try makeSQLiteRegistry(schedule: schedule)
        }
    }
}

/// A SQLite registry in a fresh temporary file, with the real migrations.
func makeSQLiteRegistry(schedule: Schedule) throws -> SQLiteAccountRegistry {
    let path = FileManager.default.temporaryDirectory
        .appendingPathComponent("pdr-registry-\(UUID().uuidString).sqlite").path
    return try SQLiteAccountRegistry(path: path, schedule: schedule)
}

@Suite("Schedule and registries (in-memory and SQLite)")
struct ScheduleTests {
    let schedule = Schedule(defaultCycle: .seconds(100), cycleBounds: Schedule.shortCycleBounds)
    let t0 = Date(timeIntervalSince1970: 1_800_000_000)

    @Test("an answered cycle is followed within one to 31 days (from 1 s with short cycles allowed); none is the default")
    func cycleBounds() {
        let production = Schedule(defaultCycle: .seconds(604_800))
        #expect(production.cycle(override: nil) == .seconds(604_800))
        #expect(production.cycle(override: .seconds(5)) == .seconds(86_400))
        #expect(production.cycle(override: .milliseconds(1)) == .seconds(86_400))
        #expect(production.cycle(override: .seconds(15 * 86_400)) == .seconds(15 * 86_400))
        #expect(production.cycle(override: .seconds(90 * 86_400)) == .seconds(31 * 86_400))
        #expect(schedule.cycle(override: .seconds(5)) == .seconds(5))
        #expect(schedule.cycle(override: .milliseconds(10)) == .seconds(1))
        #expect(schedule.cycle(override: .seconds(40 * 86_400)) == .seconds(31 * 86_400))
    }

    @Test("the spread is stable (FNV-1a, not the per-process Hasher), in [0, 1) and even over the cycle")
    func spreadIsStableAndEven() {
        // FNV-1a 64 of "a:b" then fmix64 is 0xdb2223708f4284f7 (computed independently in Python); top 53 bits / 2^53.
        #expect(Schedule.spread(appId: "a", accountId: "b") == Double(UInt64(0xdb22_2370_8f42_84f7) >> 11) / 0x1p53)
        var buckets = [Int](repeating: 0, count: 10)
        for index in 0..<10_000 {
            let spread = Schedule.spread(appId: "app", accountId: "557058:\(index)")
            #expect(spread >= 0 && spread < 1)
            buckets[Int(spread * 10)] += 1
        }
        #expect(buckets.allSatisfy { (850...1150).contains($0) }, "buckets: \(buckets)")
    }

    @Test("Cycle-Period overrides the default; a zero period is clamped; next due is one full cycle later")
    func cycles() {
        #expect(schedule.cycle(override: nil) == .seconds(100))
        #expect(schedule.cycle(override: .seconds(7)) == .seconds(7))
        #expect(schedule.cycle(override: .zero) == .seconds(1))
        #expect(schedule.nextDue(reportedAt: t0, cycle: .seconds(7)) == t0.addingTimeInterval(7))
        #expect(schedule.firstDue(firstSeenAt: t0, spread: 0.25, cycle: .seconds(100)) == t0.addingTimeInterval(25))
    }

    @Test("re-holding never moves the due time; a rejected account is retried alone, and rejoins the batches when its data changes",
          arguments: RegistryKind.allCases)
    func upsertKeepsScheduleAndClearsRejection(kind: RegistryKind) async throws {
        let registry = try kind.make(schedule: schedule)
        let held = HeldAccount(appId: "app", accountId: "x1", updatedAt: t0, tenantIds: ["t1"])
        try await registry.upsert(held, seenAt: t0, cycle: .seconds(100))
        let first = try #require(try await registry.account(appId: "app", accountId: "x1"))
        try await registry.upsert(held, seenAt: t0.addingTimeInterval(50), cycle: .seconds(100))
        #expect(try await registry.account(appId: "app", accountId: "x1")?.nextDueAt == first.nextDueAt)

        let retryAt = t0.addingTimeInterval(500)
        try await registry.markRejected(appId: "app", accountId: "x1", retryAt: retryAt)
        #expect(try await registry.dueAccounts(appId: "app", at: t0.addingTimeInterval(1000), limit: 90).isEmpty)
        // Out of the batches, but retried alone from retryAt, and named.
        #expect(try await registry.nextDueAt(appId: "app") == retryAt)
        #expect(try await registry.dueRejected(appId: "app", at: t0.addingTimeInterval(499)) == nil)
        #expect(try await registry.dueRejected(appId: "app", at: retryAt)?.accountId == "x1")
        #expect(try await registry.rejectedAccountIds(appId: "app", limit: 20) == ["x1"])
        try await registry.upsert(held, seenAt: t0, cycle: .seconds(100))
        #expect(try await registry.account(appId: "app", accountId: "x1")?.rejected == true, "same data: still skipped")
        var changed = held
        changed.updatedAt = t0.addingTimeInterval(1)
        try await registry.upsert(changed, seenAt: t0, cycle: .seconds(100))
        #expect(try await registry.dueAccounts(appId: "app", at: t0.addingTimeInterval(1000), limit: 90).count == 1)
    }

    @Test("due accounts come earliest first, up to the limit; a removed account is gone; a new cycle reschedules",
          arguments: RegistryKind.allCases)
    func dueOrderRemoveAndReschedule(kind: RegistryKind) async throws {
        let registry = try kind.make(schedule: schedule)
        for index in 0..<200 {
            try await registry.upsert(HeldAccount(appId: "app", accountId: "a\(index)", updatedAt: t0, tenantIds: ["t"]),
                                  seenAt: t0, cycle: .seconds(100))
        }
        let end = t0.addingTimeInterval(100)
        let due = try await registry.dueAccounts(appId: "app", at: end, limit: 90)
        #expect(due.count == 90)
        #expect(due.map(\.nextDueAt) == due.map(\.nextDueAt).sorted())
        #expect(try await registry.dueAccounts(appId: "app", at: end, limit: 500).count == 200)
        // Fewest calls: the 200 accounts seen together form groups of at most 90 — one call each — due at the
        // spread time of the account that opened each, within the first cycle.
        let groups = Dictionary(grouping: try await registry.dueAccounts(appId: "app", at: end, limit: 500), by: \.nextDueAt)
        #expect(groups.values.map(\.count).sorted() == [20, 90, 90], "\(groups.mapValues(\.count))")
        #expect(groups.keys.allSatisfy { $0 > t0 && $0 < end })
        for account in groups.values.joined() {
            #expect(abs(account.nextDueAt.timeIntervalSince(t0.addingTimeInterval(account.spread * 100))) < 1e-6)
        }

        try await registry.remove(appId: "app", accountId: "a0")
        #expect(try await registry.account(appId: "app", accountId: "a0") == nil)
        try await registry.recordReported([AccountReported(appId: "app", accountId: "a0", reportedAt: t0, nextDueAt: end)])
        #expect(try await registry.account(appId: "app", accountId: "a0") == nil, "a late record never resurrects")

        try await registry.recordReported([AccountReported(appId: "app", accountId: "a1", reportedAt: end,
                                                       nextDueAt: end.addingTimeInterval(100))])
        try await registry.setCyclePeriod(appId: "app", cycle: .seconds(1000))
        #expect(try await registry.account(appId: "app", accountId: "a1")?.nextDueAt == end.addingTimeInterval(1000))
        let a2 = try #require(try await registry.account(appId: "app", accountId: "a2"))
        #expect(a2.nextDueAt == t0.addingTimeInterval(a2.spread * 1000))
    }

    @Test("a batch of accounts records applies in order, exactly as the same upserts and removes one by one",
          arguments: RegistryKind.allCases)
    func batchAppliesInOrder(kind: RegistryKind) async throws {
        func held(_ app: String, _ id: String, _ updated: Date) -> HeldAccount {
            HeldAccount(appId: app, accountId: id, updatedAt: updated, tenantIds: ["t-\(id)"])
        }
        let changes: [HeldChange] = [
            .hold(held("app1", "a", t0), partition: 0), .hold(held("app2", "b", t0), partition: 1),
            .hold(held("app1", "c", t0), partition: 2), .release(appId: "app1", accountId: "a"),
            .hold(held("app2", "b", t0.addingTimeInterval(5)), partition: 1), .hold(held("app1", "a", t0), partition: 0),
            .release(appId: "app1", accountId: "c"), .release(appId: "app1", accountId: "never-held"),
        ]
        let cycles: [String: Duration] = ["app1": .seconds(100), "app2": .seconds(40)]
        let batched = try kind.make(schedule: schedule)
        try await batched.apply(changes, seenAt: t0, cycles: cycles)
        let oneByOne = try kind.make(schedule: schedule)
        for change in changes {
            switch change {
            case .hold(let account, let partition):
                try await oneByOne.upsert(account, partition: partition, seenAt: t0, cycle: cycles[account.appId]!)
            case .release(let appId, let accountId):
                try await oneByOne.remove(appId: appId, accountId: accountId)
            }
        }
        for (app, id) in [("app1", "a"), ("app2", "b"), ("app1", "c")] {
            let expected = try await oneByOne.account(appId: app, accountId: id)
            #expect(try await batched.account(appId: app, accountId: id) == expected, "\(app):\(id)")
        }
        #expect(try await batched.account(appId: "app1", accountId: "c") == nil)
        let b = try #require(try await batched.account(appId: "app2", accountId: "b"))
        // The app's own cycle spreads its first due time; the later record's data wins.
        #expect(b.nextDueAt == t0.addingTimeInterval(Schedule.spread(appId: "app2", accountId: "b") * 40))
        #expect(b.held.updatedAt == t0.addingTimeInterval(5))
        #expect(try await batched.appIds() == ["app1", "app2"])
    }

    @Test("rescheduled reports move every reported account (only those) to one new cycle after its last report",
          arguments: RegistryKind.allCases)
    func rescheduledReports(kind: RegistryKind) async throws {
        let registry = try kind.make(schedule: schedule)
        for id in ["r", "u"] {
            try await registry.upsert(HeldAccount(appId: "app", accountId: id, updatedAt: t0, tenantIds: ["t"]),
                                      seenAt: t0, cycle: .seconds(100))
        }
        try await registry.recordReported(
            [AccountReported(appId: "app", accountId: "r", reportedAt: t0, nextDueAt: t0.addingTimeInterval(100))])
        #expect(try await registry.rescheduledReports(appId: "app", cycle: .seconds(300)) == [
            AccountReported(appId: "app", accountId: "r", reportedAt: t0, nextDueAt: t0.addingTimeInterval(300)),
        ])
        #expect(try await registry.rescheduledReports(appId: "other", cycle: .seconds(300)).isEmpty)
    }

    @Test("a closed account leaves the registry at once, and holding it again (a late or replayed AccountHeld) is ignored",
          arguments: RegistryKind.allCases)
    func closedAccountsLeaveAtOnce(kind: RegistryKind) async throws {
        let registry = try kind.make(schedule: schedule)
        for id in ["open", "closed"] {
            try await registry.upsert(HeldAccount(appId: "app", accountId: id, updatedAt: t0, tenantIds: ["t"]),
                                      seenAt: t0, cycle: .seconds(100))
        }
        let reports = ["open", "closed"].map {
            AccountReported(appId: "app", accountId: $0, reportedAt: t0, nextDueAt: t0.addingTimeInterval(100))
        }
        try await registry.recordReported(reports)
        try await registry.close([try AccountKey(appId: "app", accountId: "closed")])
        #expect(try await registry.account(appId: "app", accountId: "closed") == nil)
        #expect(try await registry.rescheduledReports(appId: "app", cycle: .seconds(300)).map(\.accountId) == ["open"])
        #expect(try await registry.dueAccounts(appId: "app", at: t0.addingTimeInterval(1000), limit: 90)
            .map(\.accountId) == ["open"])
        // The tenants' erasures are not done: profile-store announces it again, with fewer tenants, then releases it.
        try await registry.upsert(HeldAccount(appId: "app", accountId: "closed", updatedAt: t0, tenantIds: ["t2"]),
                                  seenAt: t0.addingTimeInterval(5), cycle: .seconds(100))
        try await registry.apply([.hold(HeldAccount(appId: "app", accountId: "closed", updatedAt: t0, tenantIds: ["t3"]),
                                        partition: 0)],
                                 seenAt: t0.addingTimeInterval(6), cycles: [:])
        #expect(try await registry.account(appId: "app", accountId: "closed") == nil)
        #expect(try await registry.counts(appId: "app", at: t0, cycle: .seconds(100)).held == 1)
        // Another app's account of the same id is its own.
        try await registry.upsert(HeldAccount(appId: "app2", accountId: "closed", updatedAt: t0, tenantIds: ["t"]),
                                  seenAt: t0, cycle: .seconds(100))
        #expect(try await registry.account(appId: "app2", accountId: "closed") != nil)
    }
}

@Suite("SQLite registry: partitions and the restored changelog")
struct SQLiteRegistryTests {
    let schedule = Schedule(defaultCycle: .seconds(100), cycleBounds: Schedule.shortCycleBounds)
    let t0 = Date(timeIntervalSince1970: 1_800_000_000)

    func held(_ id: String) -> HeldAccount { HeldAccount(appId: "app", accountId: id, updatedAt: t0, tenantIds: ["t"]) }

    @Test("a restored report wins over a fresh schedule, before or after the account is held; the cycle persists")
    func restoredChangelogResumesSchedule() async throws {
        let registry = try makeSQLiteRegistry(schedule: schedule)
        let reportedAt = t0.addingTimeInterval(-10)
        // Changelog first (the restore order), then the account: it resumes from its last report.
        try await registry.restoreReported(
            [AccountReported(appId: "app", accountId: "r1", reportedAt: reportedAt, nextDueAt: t0.addingTimeInterval(90))],
            partition: 3)
        try await registry.upsert(held("r1"), partition: 3, seenAt: t0, cycle: .seconds(100))
        let r1 = try #require(try await registry.account(appId: "app", accountId: "r1"))
        #expect(r1.lastReportedAt == reportedAt && r1.nextDueAt == t0.addingTimeInterval(90))
        #expect(try await registry.dueAccounts(appId: "app", at: t0.addingTimeInterval(89), limit: 90).isEmpty)

        // An account held before its (later) changelog record is updated by it.
        try await registry.upsert(held("r2"), partition: 3, seenAt: t0, cycle: .seconds(100))
        try await registry.restoreReported(
            [AccountReported(appId: "app", accountId: "r2", reportedAt: t0, nextDueAt: t0.addingTimeInterval(100))],
            partition: 3)
        #expect(try await registry.account(appId: "app", accountId: "r2")?.nextDueAt == t0.addingTimeInterval(100))

        // Tombstone then held again: the last report is still known, so it is not due early.
        try await registry.remove(appId: "app", accountId: "r1")
        try await registry.upsert(held("r1"), partition: 3, seenAt: t0.addingTimeInterval(1), cycle: .seconds(100))
        #expect(try await registry.account(appId: "app", accountId: "r1")?.nextDueAt == t0.addingTimeInterval(90))

        try await registry.setCyclePeriod(appId: "app", cycle: .milliseconds(1500))
        #expect(try await registry.cyclePeriod(appId: "app") == .milliseconds(1500))
    }

    @Test("a new cycle also moves the restored changelog copy, so an account held after it follows the new cycle")
    func newCycleMovesRestoredChangelog() async throws {
        let registry = try makeSQLiteRegistry(schedule: schedule)
        // Restored under the old cycle (100 s), not held yet: the restore order.
        try await registry.restoreReported(
            [AccountReported(appId: "app", accountId: "z", reportedAt: t0, nextDueAt: t0.addingTimeInterval(100))],
            partition: 2)
        try await registry.setCyclePeriod(appId: "app", cycle: .seconds(300))
        try await registry.upsert(held("z"), partition: 2, seenAt: t0.addingTimeInterval(5), cycle: .seconds(300))
        let z = try #require(try await registry.account(appId: "app", accountId: "z"))
        #expect(z.lastReportedAt == t0 && z.nextDueAt == t0.addingTimeInterval(300))
    }

    @Test("dropping a partition removes its accounts and changelog only")
    func dropPartition() async throws {
        let registry = try makeSQLiteRegistry(schedule: schedule)
        try await registry.upsert(held("p1"), partition: 1, seenAt: t0, cycle: .seconds(100))
        try await registry.upsert(held("p2"), partition: 2, seenAt: t0, cycle: .seconds(100))
        try await registry.restoreReported(
            [AccountReported(appId: "app", accountId: "p1", reportedAt: t0, nextDueAt: t0.addingTimeInterval(100))],
            partition: 1)
        try await registry.dropPartition(1)
        #expect(try await registry.account(appId: "app", accountId: "p1") == nil)
        #expect(try await registry.account(appId: "app", accountId: "p2") != nil)
        // The changelog of partition 1 is gone too: held again, p1 gets a fresh schedule, not the dropped report.
        try await registry.upsert(held("p1"), partition: 1, seenAt: t0, cycle: .seconds(100))
        #expect(try await registry.account(appId: "app", accountId: "p1")?.lastReportedAt == nil)
        try await registry.dropAll()
        #expect(try await registry.appIds().isEmpty)
    }
}
