import AtlassianClient
import Contracts
import Foundation
import TestSupport
import Testing
@testable import pdr_reporter

/// The reporter against a real sandbox process; the sandbox's PDR call log is the oracle.
@Suite("Reporting against the sandbox", .serialized)
struct ReportingTests {
    /// Sandbox times are RFC 3339 with milliseconds: allow for the truncation when comparing with our due times.
    static let clockSlack: TimeInterval = 0.002

    /// Checks "exactly once per cycle" for one app: successive successful reports of an account are at least a
    /// cycle apart (never early) and at most a cycle plus `lateness` apart (never skipped).
    static func expectOncePerCycle(_ successes: [String: [Date]], cycle: TimeInterval, lateness: TimeInterval,
                                   sourceLocation: SourceLocation = #_sourceLocation) {
        for (account, dates) in successes {
            for (earlier, later) in zip(dates, dates.dropFirst()) {
                let gap = later.timeIntervalSince(earlier)
                #expect(gap >= cycle - clockSlack, "\(account) re-reported after \(gap)s (cycle \(cycle)s)",
                        sourceLocation: sourceLocation)
                #expect(gap <= cycle + lateness, "\(account) waited \(gap)s (cycle \(cycle)s)",
                        sourceLocation: sourceLocation)
            }
        }
    }

    @Test("3 apps × 200 accounts: each reported once per cycle per app, ≤ 90 per request, none before it is due")
    func everyAccountOncePerCycle() async throws {
        let apps = ["app-a", "app-b", "app-c"]
        let perApp = 200
        try await ReporterWorld.run(apps: apps, cycle: .seconds(3)) { world in
            try await world.hold(apps: apps, count: perApp)
            var firstDue: [String: Date] = [:]
            for app in apps {
                for index in 0..<perApp {
                    let id = "\(app)-acct-\(index)"
                    firstDue[id] = try #require(await world.registry.account(appId: app, accountId: id)).nextDueAt
                }
            }
            let start = Date()
            // Spread, not bunched: the first due times cover most of the cycle.
            let offsets = firstDue.values.map { $0.timeIntervalSince(start) }
            #expect((offsets.min() ?? 3) < 0.5 && (offsets.max() ?? 0) > 2.5)
        } _: { world in
            let apps = ["app-a", "app-b", "app-c"]
            let done = try await eventually(timeout: .seconds(60), every: .milliseconds(250)) {
                for app in apps {
                    let successes = try await world.sandbox.successes(clientId: app)
                    guard successes.count == 200, successes.values.allSatisfy({ $0.count >= 2 }) else { return false }
                }
                return true
            }
            #expect(done, "every account reported twice (two cycles) within 60 s")
            for app in apps {
                let calls = try await world.sandbox.calls(clientId: app)
                #expect(calls.allSatisfy { $0.accounts.count <= 90 }, "\(app): a request carried more than 90")
                let failed = calls.filter { !$0.succeeded }.map(\.status)
                #expect(failed.isEmpty, "\(app): \(failed)")
                let successes = try await world.sandbox.successes(clientId: app)
                Self.expectOncePerCycle(successes, cycle: 3, lateness: 1.2)
                for (account, dates) in successes {
                    let due = try #require(await world.registry.account(appId: app, accountId: account))
                    // The first report came no earlier than the spread first due time.
                    let first = try #require(dates.first)
                    #expect(first.timeIntervalSince(due.firstSeenAt) >= due.spread * 3 - Self.clockSlack,
                            "\(account) reported before it was due")
                    #expect(Set(dates).count == dates.count, "\(account) sent twice in one call")
                }
                // Batching: far fewer calls than accounts reported.
                let reports = successes.values.reduce(0) { $0 + $1.count }
                #expect(calls.count * 3 < reports, "\(app): \(calls.count) calls for \(reports) reports")
                let status = try #require(try await world.status(app))
                // Reported in this cycle or due right now (then reported in the last cycle): together, every account.
                #expect(status.accountsHeld == 200 && status.reportedInCurrentCycle + status.dueNow == 200)
                #expect(!status.orphaned && status.rateLimitedCount == 0 && status.lastOutcome == "ok")
                // The next call: within a cycle of now (accounts are due again one cycle after their report).
                let next = try #require(status.nextDueAt)
                #expect(next.timeIntervalSinceNow < 4, "\(next)")  // the cycle is 3 s
            }
        }
    }

    @Test("a batch window: 270 accounts coming due over a 3 s cycle go in full batches of 90, none early, late ≤ window")
    func batchWindowFillsBatches() async throws {
        var settings = ReporterWorld.fastSettings()
        settings.batchWindow = .seconds(5)
        try await ReporterWorld.run(apps: ["app-w"], cycle: .seconds(3), settings: settings) { world in
            try await world.hold(apps: ["app-w"], count: 270)
        } _: { world in
            let done = try await eventually(timeout: .seconds(60), every: .milliseconds(250)) {
                try await world.sandbox.successes(clientId: "app-w").count == 270
            }
            #expect(done, "every account reported within 60 s")
            let calls = try await world.sandbox.calls(clientId: "app-w")
            // The first cycle's 270 accounts, spread over 3 s, in exactly three full calls (the minimum).
            let firstCycle = calls.prefix(3)
            #expect(firstCycle.map(\.accounts.count) == [90, 90, 90], "\(calls.map(\.accounts.count))")
            for (account, dates) in try await world.sandbox.successes(clientId: "app-w") {
                let due = try #require(await world.registry.account(appId: "app-w", accountId: account))
                let first = try #require(dates.first)
                let firstDue = due.firstSeenAt.addingTimeInterval(due.spread * 3)
                #expect(first.timeIntervalSince(firstDue) >= -Self.clockSlack, "\(account) reported before it was due")
                #expect(first.timeIntervalSince(firstDue) <= 5 + 1.5, "\(account) waited longer than the window")
            }
        }
    }

    @Test("fewest calls: accounts arriving one by one over cycles are reported in ⌈N/90⌉ calls a cycle, +1 at most, none early")
    func continuousArrivalsMakeFewestCalls() async throws {
        let cycle: TimeInterval = 2
        let count = 150
        try await ReporterWorld.run(apps: ["app-a"], cycle: .seconds(cycle)) { _ in
        } _: { world in
            // Continuous sign-ins: one new account every 25 ms, for almost two cycles.
            for index in 0..<count {
                try await world.loop.hold(HeldAccount(appId: "app-a", accountId: "app-a-acct-\(index)",
                                                      updatedAt: Date(timeIntervalSince1970: 1_700_000_000),
                                                      tenantIds: ["tenant-1"]))
                try await Task.sleep(for: .milliseconds(25))
            }
            let lastArrival = Date()
            // Past every account's first cycle: count the calls of the next two full cycles.
            try await Task.sleep(for: .seconds(cycle * 1.2))
            let windowStart = Date()
            try await Task.sleep(for: .seconds(cycle * 2))
            let windowEnd = Date()
            let calls = try await world.sandbox.calls(clientId: "app-a").filter {
                $0.succeeded && $0.date >= windowStart && $0.date < windowEnd
            }
            let minimum = (count + 89) / 90
            #expect(calls.count <= 2 * (minimum + 1),
                    "\(calls.count) calls in two cycles for \(count) accounts (minimum \(minimum) a cycle): \(calls.map(\.accounts.count))")
            #expect(Set(calls.flatMap { $0.accounts.map(\.accountId) }).count == count, "every account reported in the window")
            // Never early: consecutive reports of an account are a full cycle apart.
            let successes = try await world.sandbox.successes(clientId: "app-a")
            for (account, dates) in successes {
                for (earlier, later) in zip(dates, dates.dropFirst()) {
                    #expect(later.timeIntervalSince(earlier) >= cycle - Self.clockSlack, "\(account) re-reported early")
                }
            }
            // Never late: every account's first report came within a cycle of its arrival (the last one's included).
            #expect(successes.count == count)
            #expect(successes.values.allSatisfy { $0.first! <= lastArrival.addingTimeInterval(cycle + 0.5) })
        }
    }

    @Test("a Cycle-Period answer from Atlassian replaces the default cycle for that app")
    func cyclePeriodOverridesDefault() async throws {
        try await ReporterWorld.run(
            apps: ["app-p"], cycle: .seconds(1),
            sandboxSettings: ["cyclePeriodFormat": "seconds", "cyclePeriodSeconds": 4]
        ) { world in
            try await world.hold(apps: ["app-p"], count: 40)
        } _: { world in
            let done = try await eventually(timeout: .seconds(60), every: .milliseconds(250)) {
                let successes = try await world.sandbox.successes(clientId: "app-p")
                return successes.count == 40 && successes.values.allSatisfy { $0.count >= 2 }
            }
            #expect(done, "every account reported twice within 60 s")
            let successes = try await world.sandbox.successes(clientId: "app-p")
            // Only the very first call ran under the 1 s default; every later gap follows the answered 4 s.
            let firstCall = try #require(try await world.sandbox.calls(clientId: "app-p").first)
            let firstBatch = Set(firstCall.accounts.map(\.accountId))
            for (account, dates) in successes {
                for (earlier, later) in zip(dates, dates.dropFirst()) {
                    #expect(later.timeIntervalSince(earlier) >= 4 - Self.clockSlack,
                            "\(account) (first batch: \(firstBatch.contains(account))) re-reported early")
                }
            }
            #expect(try await world.status("app-p")?.cyclePeriodSeconds == 4)
            #expect(await world.registry.cyclePeriod(appId: "app-p") == .seconds(4))
        }
    }

    @Test("a Cycle-Period outside one to 31 days is clamped to the nearer bound and shown in the app's status",
          arguments: [(5, "seconds", 86_400), (90 * 86_400, "iso", 31 * 86_400)])
    func cyclePeriodOutOfBoundsIsClamped(answered: Int, format: String, followed: Int) async throws {
        // Production bounds. 5 s (a misread unit, a server bug) is followed as one day; P90D as 31 days.
        try await ReporterWorld.run(
            apps: ["app-c"], cycle: .seconds(1),
            sandboxSettings: ["cyclePeriodFormat": format, "cyclePeriodSeconds": answered],
            cycleBounds: Schedule.productionBounds
        ) { world in
            try await world.hold(apps: ["app-c"], count: 10)
        } _: { world in
            let clamped = try await eventually(timeout: .seconds(30), every: .milliseconds(250)) {
                try await world.status("app-c")?.clampedCyclePeriodSeconds == Int64(answered)
            }
            let status = try await world.status("app-c")
            #expect(clamped, "status: \(String(describing: status))")
            #expect(status?.cyclePeriodSeconds == Int64(followed))
            #expect(await world.registry.cyclePeriod(appId: "app-c") == .seconds(followed))
            // The accounts not yet reported were spread over the followed cycle, and none reported is due again:
            // a few seconds on, still no account has a second report.
            try await Task.sleep(for: .seconds(4))
            let successes = try await world.sandbox.successes(clientId: "app-c")
            #expect(!successes.isEmpty && successes.values.allSatisfy { $0.count == 1 }, "\(successes.mapValues(\.count))")
            #expect(try await world.status("app-c")?.dueNow == 0)
        }
    }

    @Test("a replica owning a quarter of the partitions paces each app at four times the request interval")
    func pacingFollowsThePartitionShare() async throws {
        var settings = ReporterWorld.fastSettings()
        settings.requestInterval = .milliseconds(150)
        try await ReporterWorld.run(apps: ["app-s"], cycle: .seconds(2), settings: settings) { world in
            world.loop.pacing.set(owned: 1, of: 4)
            try await world.hold(apps: ["app-s"], count: 450)
        } _: { world in
            let enough = try await eventually(timeout: .seconds(20), every: .milliseconds(100)) {
                try await world.sandbox.calls(clientId: "app-s").count >= 4
            }
            #expect(enough, "fewer than 4 calls within 20 s")
            let dates = try await world.sandbox.calls(clientId: "app-s").map(\.date)
            // 150 ms ÷ ¼ = 600 ms between two requests (the sandbox logs arrivals, to the millisecond).
            for (earlier, later) in zip(dates, dates.dropFirst()) {
                #expect(later.timeIntervalSince(earlier) >= 0.6 - Self.clockSlack - 0.01,
                        "two requests \(later.timeIntervalSince(earlier)) s apart")
            }
        }
    }
}
