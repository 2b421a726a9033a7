import AtlassianClient
import Contracts
import Foundation
import TestSupport
import Testing
@testable import pdr_reporter

/// The rest of ``ReportingTests``: what Atlassian answers besides 200 — 429 and 5xx storms, 401, 403, 400, no usable
/// grant — and the reporting health that shows it.
extension ReportingTests {
    @Test("a 429 storm and 5xx/dropped connections: nothing skipped, nothing reported twice, other apps unaffected")
    func faultsSkipNothingAndDoubleNothing() async throws {
        let apps = ["app-storm", "app-flaky", "app-calm"]
        try await ReporterWorld.run(apps: apps, cycle: .seconds(3)) { world in
            try await world.sandbox.control("/faults", [
                "endpoint": "report-accounts", "clientId": "app-storm",
                "script": [["kind": "429", "retryAfter": 1], ["kind": "429", "retryAfter": 1]],
                "random": [["probability": 0.4, "fault": ["kind": "429", "retryAfter": 1]]],
            ])
            try await world.sandbox.control("/faults", [
                "endpoint": "report-accounts", "clientId": "app-flaky",
                "script": [["kind": "503"], ["kind": "500"], ["kind": "drop"]],
                "random": [["probability": 0.2, "fault": ["kind": "503"]],
                           ["probability": 0.1, "fault": ["kind": "500"]],
                           ["probability": 0.1, "fault": ["kind": "drop"]]],
            ])
            try await world.hold(apps: apps, count: 150)
        } _: { world in
            let done = try await eventually(timeout: .seconds(60), every: .milliseconds(250)) {
                for app in apps where try await world.sandbox.successes(clientId: app).count < 150 { return false }
                return true
            }
            #expect(done, "every account of every app reported within 60 s")
            for app in apps {
                let successes = try await world.sandbox.successes(clientId: app)
                #expect(successes.count == 150, "\(app)")
                Self.expectOncePerCycle(successes, cycle: 3, lateness: 3)
            }
            let storm = try await world.sandbox.calls(clientId: "app-storm")
            #expect(storm.filter { $0.status == 429 }.count >= 2)
            #expect(try await world.status("app-storm")?.rateLimitedCount ?? 0 >= 2)
            let flaky = try await world.sandbox.calls(clientId: "app-flaky")
            #expect(Set(flaky.map(\.status)).isSuperset(of: [503, 500, 0]))
            let calm = try await world.sandbox.calls(clientId: "app-calm")
            #expect(calm.allSatisfy { $0.succeeded })
            // Other apps continue: the calm app's accounts went out on time while the storm app was waiting.
            for (account, dates) in try await world.sandbox.successes(clientId: "app-calm") {
                let registered = try #require(await world.registry.account(appId: "app-calm", accountId: account))
                let due = registered.firstSeenAt.addingTimeInterval(registered.spread * 3)
                let first = try #require(dates.first)
                #expect(first.timeIntervalSince(due) < 1.0, "\(account) waited \(first.timeIntervalSince(due))s")
            }
        }
    }

    @Test("closed and updated answers become AccountStatusReported with the held tenantIds")
    func closedAndUpdatedBecomeEvents() async throws {
        try await ReporterWorld.run(apps: ["app-s"], cycle: .seconds(1)) { world in
            for id in ["gone-1", "stale-1", "fresh-1"] { try await world.sandbox.addUser(id) }
            try await world.sandbox.control("/users/gone-1/close")
            let old = Date(timeIntervalSince1970: 1_700_000_000)
            try await world.loop.hold(HeldAccount(appId: "app-s", accountId: "gone-1", updatedAt: Date(),
                                                  tenantIds: ["t-1", "t-2"]))
            try await world.loop.hold(HeldAccount(appId: "app-s", accountId: "stale-1", updatedAt: old,
                                                  tenantIds: ["t-3"]))
            try await world.loop.hold(HeldAccount(appId: "app-s", accountId: "fresh-1",
                                                  updatedAt: Date().addingTimeInterval(3600), tenantIds: ["t-4"]))
        } _: { world in
            let done = await eventually(timeout: .seconds(60)) {
                Set(await world.sink.reported.map(\.accountId)) == ["gone-1", "stale-1", "fresh-1"]
            }
            #expect(done)
            let statuses = await world.sink.statuses
            let distinct = Set(statuses.map { "\($0.accountId) \($0.status.rawValue) \($0.tenantIds)" })
            #expect(distinct == ["gone-1 closed [\"t-1\", \"t-2\"]", "stale-1 updated [\"t-3\"]"])
            #expect(statuses.allSatisfy { $0.appId == "app-s" })
            let reported = await world.sink.reported
            let registered = try #require(await world.registry.account(appId: "app-s", accountId: "fresh-1"))
            let last = try #require(reported.last { $0.accountId == "fresh-1" })
            #expect(registered.lastReportedAt == last.reportedAt && registered.nextDueAt == last.nextDueAt)
            #expect(last.nextDueAt == last.reportedAt.addingTimeInterval(1))
        }
    }

    @Test("a tombstone stops reporting the account at once")
    func tombstoneStopsReporting() async throws {
        try await ReporterWorld.run(apps: ["app-t"], cycle: .seconds(1)) { world in
            try await world.hold(apps: ["app-t"], count: 20)
        } _: { world in
            let once = try await eventually(timeout: .seconds(60)) {
                try await world.sandbox.successes(clientId: "app-t").count == 20
            }
            #expect(once)
            let removed = (0..<5).map { "app-t-acct-\($0)" }
            for id in removed { try await world.loop.release(appId: "app-t", accountId: id) }
            // A batch read just before the release may still be sent: pacing (100 ms) plus the call.
            let cutoff = Date().addingTimeInterval(0.3)
            let later = try await eventually(timeout: .seconds(60)) {
                let successes = try await world.sandbox.successes(clientId: "app-t")
                return (5..<20).allSatisfy { index in
                    (successes["app-t-acct-\(index)"] ?? []).contains { $0 > cutoff.addingTimeInterval(1) }
                }
            }
            #expect(later, "the accounts still held were reported again")
            let successes = try await world.sandbox.successes(clientId: "app-t")
            for id in removed {
                #expect((successes[id] ?? []).allSatisfy { $0 <= cutoff }, "\(id) reported after its tombstone")
            }
            #expect(try await world.status("app-t")?.accountsHeld == 15)
        }
    }

    @Test("401 → the reporter asks for another connection's token and reports with it")
    func unauthorizedRotatesConnection() async throws {
        try await ReporterWorld.run(apps: ["app-r"], cycle: .seconds(5)) { world in
            try await world.sandbox.addUser("second-owner")
            await world.tokens.add(appId: "app-r", connectionId: "second-owner",
                                   token: try await world.sandbox.signIn("second-owner", app: "app-r"))
            try await world.sandbox.control("/grants/revoke", ["clientId": "app-r", "accountId": "owner-app-r"])
            try await world.hold(apps: ["app-r"], count: 30)
        } _: { world in
            let done = try await eventually(timeout: .seconds(60)) {
                try await world.sandbox.successes(clientId: "app-r").count == 30
            }
            #expect(done)
            let all = try await world.sandbox.calls()
            #expect(all.contains { $0.status == 401 }, "the revoked connection was tried and refused")
            #expect(await world.tokens.exclusionsSeen.contains(["owner-app-r"]))
            #expect(try await world.status("app-r")?.orphaned == false)
        }
    }

    @Test("403 (a consent without report:personal-data) → the reporter tries another connection's token and reports")
    func forbiddenRotatesConnection() async throws {
        try await ReporterWorld.run(apps: ["app-f"], cycle: .seconds(5)) { world in
            // A user who signed in before the gateway asked for report:personal-data: the first connection tried.
            try await world.sandbox.addUser("early-user")
            await world.tokens.add(
                appId: "app-f", connectionId: "early-user",
                token: try await world.sandbox.signIn("early-user", app: "app-f", scopes: ["read:me", "offline_access"]),
                first: true)
            try await world.hold(apps: ["app-f"], count: 30)
        } _: { world in
            let done = try await eventually(timeout: .seconds(60)) {
                try await world.sandbox.successes(clientId: "app-f").count == 30
            }
            #expect(done)
            let all = try await world.sandbox.calls()
            #expect(all.contains { $0.status == 403 }, "the connection without the scope was tried and refused")
            #expect(await world.tokens.exclusionsSeen.contains(["early-user"]))
        }
    }

    @Test("reporting health: 5xx in a row → degraded then failing with the reason and since when; overdue accounts counted; ok again after a success")
    func healthFollowsFailures() async throws {
        var settings = ReporterWorld.fastSettings()
        settings.failingAfter = 3
        settings.overdueAfter = .seconds(1)
        settings.backoffMax = .milliseconds(400)
        try await ReporterWorld.run(apps: ["app-h"], cycle: .seconds(1), settings: settings) { world in
            try await world.sandbox.control("/faults", [
                "endpoint": "report-accounts", "clientId": "app-h",
                "script": Array(repeating: ["kind": "503"], count: 12),
            ])
            try await world.hold(apps: ["app-h"], count: 5)
        } _: { world in
            var seen: [AppHealth.State] = []
            var failing: AppHealth?
            var mostOverdue: AppHealth?
            var recovered = false
            let deadline = ContinuousClock.now + .seconds(60)
            while !recovered, ContinuousClock.now < deadline {
                let health = try #require(try await world.status("app-h")?.health)
                if seen.last != health.state { seen.append(health.state) }
                if health.state == .failing, failing == nil { failing = health }
                if health.overdueAccounts > (mostOverdue?.overdueAccounts ?? 0) { mostOverdue = health }
                let reported = try await world.sandbox.successes(clientId: "app-h").count
                recovered = health.state == .ok && reported == 5
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(recovered, "states seen: \(seen)")
            #expect(seen.contains(.degraded) && seen.contains(.failing), "states seen: \(seen)")
            #expect(failing?.reason == "failed" && failing?.since != nil, "\(String(describing: failing))")
            // While the 503s went on, accounts waited past their due time (by more than overdueAfter) and were counted.
            #expect((mostOverdue?.overdueAccounts ?? 0) > 0 && (mostOverdue?.oldestOverdueSeconds ?? 0) >= 1,
                    "\(String(describing: mostOverdue))")
        }
    }

    @Test("no usable grant → the app is orphaned in status, its accounts stay due, and it recovers on a new sign-in")
    func orphanedAppKeepsAccountsDue() async throws {
        try await ReporterWorld.run(apps: ["app-o"], cycle: .seconds(1)) { world in
            try await world.sandbox.control("/grants/revoke", ["clientId": "app-o", "accountId": "owner-app-o"])
            try await world.hold(apps: ["app-o"], count: 25)
        } _: { world in
            let orphaned = try await eventually(timeout: .seconds(60)) {
                let status = try await world.status("app-o")
                return status?.orphaned == true && status?.dueNow == 25
            }
            let orphanStatus = try await world.status("app-o")
            #expect(orphaned, "status: \(String(describing: orphanStatus))")
            #expect(try await world.sandbox.successes(clientId: "app-o").isEmpty)
            // Never silent: the owner's token was refused (401) and no other connection is left.
            #expect(orphanStatus?.health.state == .failing && orphanStatus?.health.reason == "unauthorized",
                    "\(String(describing: orphanStatus?.health))")
            #expect(orphanStatus?.health.since != nil)

            try await world.sandbox.addUser("new-owner")
            await world.tokens.add(appId: "app-o", connectionId: "new-owner",
                                   token: try await world.sandbox.signIn("new-owner", app: "app-o"))
            let recovered = try await eventually(timeout: .seconds(60)) {
                try await world.sandbox.successes(clientId: "app-o").count == 25
            }
            #expect(recovered)
            #expect(try await world.status("app-o")?.orphaned == false)
            #expect(try await world.status("app-o")?.health == AppHealth(
                state: .ok, reason: nil, since: nil, overdueAccounts: 0, oldestOverdueSeconds: nil))
        }
    }

    @Test("a 400 is isolated to the bad account, which leaves the batches and is retried alone, named in the status; the rest are reported")
    func badRequestIsolatesTheBadAccount() async throws {
        // The bad account joins the good ones' group (see `Schedule`), so it rides in a shared batch.
        var settings = ReporterWorld.fastSettings()
        settings.requestInterval = .milliseconds(600)
        settings.rejectedRetry = .milliseconds(1500)
        try await ReporterWorld.run(apps: ["app-x"], cycle: .seconds(2), settings: settings) { world in
            try await world.hold(apps: ["app-x"], count: 30)
            // `unknown` is refused by PDR (ATLASSIAN.md §3.2).
            try await world.loop.hold(HeldAccount(appId: "app-x", accountId: "unknown",
                                                  updatedAt: Date(timeIntervalSince1970: 1_700_000_000),
                                                  tenantIds: ["t"]))
        } _: { world in
            let done = try await eventually(timeout: .seconds(60)) {
                let successes = try await world.sandbox.successes(clientId: "app-x")
                return successes.count == 30 && successes.values.allSatisfy { $0.count >= 2 }
            }
            #expect(done, "the good accounts were reported, twice")
            // The batch the bad account was in: its good accounts were then reported one by one.
            let calls = try await world.sandbox.calls(clientId: "app-x")
            let refused = try #require(calls.first { $0.status == 400 })
            #expect(refused.accounts.count > 1, "the bad account was not in a shared batch; the test proves less")
            let goodOfRefused = Set(refused.accounts.map(\.accountId)).subtracting(["unknown"])
            let singles = calls.filter { $0.sequence > refused.sequence && $0.accounts.count == 1 && $0.succeeded }
            #expect(goodOfRefused.isSubset(of: Set(singles.map { $0.accounts[0].accountId })))
            _ = try await eventually(timeout: .seconds(20)) {
                try await world.sandbox.calls(clientId: "app-x").filter {
                    $0.accounts.contains { $0.accountId == "unknown" }
                }.count >= 3
            }
            let withBad = try await world.sandbox.calls(clientId: "app-x").filter {
                $0.accounts.contains { $0.accountId == "unknown" }
            }
            // Never dropped: in its batch once, then alone — and again alone after rejectedRetry, never in a batch.
            #expect(withBad.count >= 3, "the bad account was sent \(withBad.count) times: in its batch, alone, alone again")
            #expect(withBad.allSatisfy { call in call.status == 400 })
            #expect(withBad.dropFirst().allSatisfy { $0.accounts.count == 1 }, "after its batch, the bad account goes alone")
            #expect(await world.registry.account(appId: "app-x", accountId: "unknown")?.rejected == true)
            let status = try await world.status("app-x")
            #expect(status?.rejected == 1 && status?.rejectedAccountIds == ["unknown"])
            // Degraded: by the bad account's last 400 until a good call, then by the rejected account itself.
            #expect(status?.health.state == .degraded
                        && ["bad-request", "rejected-accounts"].contains(status?.health.reason ?? ""),
                    "\(String(describing: status?.health))")
        }
    }

    @Test("a batch retried after a 429 is refilled with the accounts that came due during Retry-After, up to 90")
    func retriedBatchIsRefilled() async throws {
        let app = "app-refill"
        // Held long ago under a 1000 s cycle: every first due time is in the past, so each account is due at once.
        @Sendable func holdDue(_ ids: Range<Int>, in world: ReporterWorld) async throws {
            for index in ids {
                try await world.registry.upsert(
                    HeldAccount(appId: app, accountId: "\(app)-acct-\(index)", updatedAt: Date(timeIntervalSince1970: 1_700_000_000),
                                tenantIds: ["tenant-1"]),
                    seenAt: Date().addingTimeInterval(-2000), cycle: .seconds(1000))
            }
        }
        try await ReporterWorld.run(apps: [app], cycle: .seconds(1000)) { world in
            try await world.sandbox.control("/faults", [
                "endpoint": "report-accounts", "clientId": app, "script": [["kind": "429", "retryAfter": 3]],
            ])
            try await holdDue(0..<10, in: world)
        } _: { world in
            let limited = try await eventually(timeout: .seconds(20), every: .milliseconds(20)) {
                try await world.sandbox.calls(clientId: app).contains { $0.status == 429 }
            }
            try #require(limited, "the first call was not answered 429")
            // While the reporter waits Retry-After, 60 more come due.
            try await holdDue(10..<70, in: world)
            let done = try await eventually(timeout: .seconds(20), every: .milliseconds(100)) {
                try await world.sandbox.successes(clientId: app).count == 70
            }
            #expect(done, "not every account was reported")
            let calls = try await world.sandbox.calls(clientId: app)
            let first = try #require(calls.first)
            #expect(first.status == 429 && first.accounts.count == 10)
            // The retry carried the 10 and the 60 in one call, not the 10 alone and then the 60.
            let successful = calls.filter(\.succeeded)
            #expect(successful.count == 1 && successful.first?.accounts.count == 70,
                    "successful calls: \(successful.map(\.accounts.count))")
            #expect(Set(first.accounts.map(\.accountId)).isSubset(of: Set(successful.first?.accounts.map(\.accountId) ?? [])))
        }
    }
}
