import Contracts
import Foundation
import Testing
@testable import pdr_reporter

@Suite("Schedule and in-memory registry")
struct ScheduleTests {
    let schedule = Schedule(defaultCycle: .seconds(100))
    let t0 = Date(timeIntervalSince1970: 1_800_000_000)

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

    @Test("re-holding never moves the due time; a rejected account comes back only when its data changes")
    func upsertKeepsScheduleAndClearsRejection() async throws {
        let registry = InMemoryAccountRegistry(schedule: schedule)
        let held = HeldAccount(appId: "app", accountId: "x1", updatedAt: t0, tenantIds: ["t1"])
        await registry.upsert(held, seenAt: t0, cycle: .seconds(100))
        let first = try #require(await registry.account(appId: "app", accountId: "x1"))
        await registry.upsert(held, seenAt: t0.addingTimeInterval(50), cycle: .seconds(100))
        #expect(await registry.account(appId: "app", accountId: "x1")?.nextDueAt == first.nextDueAt)

        await registry.markRejected(appId: "app", accountId: "x1")
        #expect(await registry.dueAccounts(appId: "app", at: t0.addingTimeInterval(1000), limit: 90).isEmpty)
        await registry.upsert(held, seenAt: t0, cycle: .seconds(100))
        #expect(await registry.account(appId: "app", accountId: "x1")?.rejected == true, "same data: still skipped")
        var changed = held
        changed.updatedAt = t0.addingTimeInterval(1)
        await registry.upsert(changed, seenAt: t0, cycle: .seconds(100))
        #expect(await registry.dueAccounts(appId: "app", at: t0.addingTimeInterval(1000), limit: 90).count == 1)
    }

    @Test("due accounts come earliest first, up to the limit; a removed account is gone; a new cycle reschedules")
    func dueOrderRemoveAndReschedule() async throws {
        let registry = InMemoryAccountRegistry(schedule: schedule)
        for index in 0..<200 {
            await registry.upsert(HeldAccount(appId: "app", accountId: "a\(index)", updatedAt: t0, tenantIds: ["t"]),
                                  seenAt: t0, cycle: .seconds(100))
        }
        let end = t0.addingTimeInterval(100)
        let due = await registry.dueAccounts(appId: "app", at: end, limit: 90)
        #expect(due.count == 90)
        #expect(due.map(\.nextDueAt) == due.map(\.nextDueAt).sorted())
        #expect(await registry.dueAccounts(appId: "app", at: end, limit: 500).count == 200)
        #expect(await registry.dueAccounts(appId: "app", at: t0.addingTimeInterval(50), limit: 500).count < 150)

        await registry.remove(appId: "app", accountId: "a0")
        #expect(await registry.account(appId: "app", accountId: "a0") == nil)
        await registry.recordReported([AccountReported(appId: "app", accountId: "a0", reportedAt: t0, nextDueAt: end)])
        #expect(await registry.account(appId: "app", accountId: "a0") == nil, "a late record never resurrects")

        await registry.recordReported([AccountReported(appId: "app", accountId: "a1", reportedAt: end,
                                                       nextDueAt: end.addingTimeInterval(100))])
        await registry.setCyclePeriod(appId: "app", cycle: .seconds(1000))
        #expect(await registry.account(appId: "app", accountId: "a1")?.nextDueAt == end.addingTimeInterval(1000))
        let a2 = try #require(await registry.account(appId: "app", accountId: "a2"))
        #expect(a2.nextDueAt == t0.addingTimeInterval(a2.spread * 1000))
    }
}
