import AtlassianClient
import Foundation
import Logging
import Metrics
import ServiceLifecycle
import Synchronization

/// Whether an app's accounts are being reported, and if not, why and since when (issue 15: no failure is silent).
package struct AppHealth: Codable, Sendable, Equatable {
    package enum State: String, Codable, Sendable { case ok, degraded, failing }

    package var state: State
    /// Why it is not `ok`: `no-usable-grant` (orphaned), `unauthorized` / `forbidden` (every connection tried answered
    /// 401 / 403), `token-unavailable` (the gateway's reporting-token API failed), `rate-limited`, `bad-request`,
    /// `failed` (5xx, timeout, transport), `overdue` (accounts waiting past their due time) or `rejected-accounts`.
    package var reason: String?
    /// When the current problem began (absent for `overdue` and `rejected-accounts`, which the registry shows).
    package var since: Date?
    /// Accounts past their due time by more than the batch window and `overdueAfter`, and how long the oldest waits.
    package var overdueAccounts: Int
    package var oldestOverdueSeconds: Double?

    /// `failing` when nothing can be reported (orphaned, every connection refused) or `failingAfter` attempts in a
    /// row failed; `degraded` while attempts fail, accounts are overdue or some are rejected; else `ok`.
    static func assess(_ live: AppStatusBoard.Entry, overdue: Int, oldestOverdue: Double?, rejected: Int,
                       failingAfter: Int) -> AppHealth {
        var health = AppHealth(state: .ok, reason: nil, since: nil, overdueAccounts: overdue,
                               oldestOverdueSeconds: oldestOverdue)
        if let refused = live.allConnectionsRefused {
            (health.state, health.reason, health.since) = (.failing, refused, live.problemSince)
        } else if live.orphaned {
            (health.state, health.reason, health.since) = (.failing, "no-usable-grant", live.orphanedSince)
        } else if let problem = live.problem {
            health.state = live.consecutiveFailures >= failingAfter ? .failing : .degraded
            (health.reason, health.since) = (problem, live.problemSince)
        } else if overdue > 0 {
            (health.state, health.reason) = (.degraded, "overdue")
        } else if rejected > 0 {
            (health.state, health.reason) = (.degraded, "rejected-accounts")
        }
        return health
    }
}

/// One app's state for `GET /v1/apps`.
package struct AppReportingStatus: Codable, Sendable, Equatable {
    package var appId: String
    package var accountsHeld: Int
    package var dueNow: Int
    package var reportedInCurrentCycle: Int
    /// Refused by Atlassian on their own (400): out of the batches, retried alone every hour.
    package var rejected: Int
    /// The first 20 of them by accountId, so an operator can find what is wrong with them.
    package var rejectedAccountIds: [String]
    package var lastCallAt: Date?
    /// When the app's next account is due (its next call, give or take the batch window; a rejected account's retry
    /// counts); in the past when accounts are waiting; absent when none is held.
    package var nextDueAt: Date?
    /// `ok`, `rate-limited`, `unauthorized`, `forbidden`, `bad-request` or `failed`.
    package var lastOutcome: String?
    package var health: AppHealth
    package var rateLimitedCount: Int
    package var orphaned: Bool
    package var cyclePeriodSeconds: Int64
    /// The `Cycle-Period` Atlassian last answered, in seconds, when it lay outside the accepted bounds and
    /// `cyclePeriodSeconds` is the bound followed instead; absent when the last answer was within them.
    package var clampedCyclePeriodSeconds: Int64?
}

/// Runs one `AppReporter` per app in the registry, each in its own child task, so a slow or rate-limited app never
/// holds up another. New apps are picked up within `idlePoll`. Graceful shutdown cancels the reporters; a batch in
/// flight at that moment stays due and is re-sent on the next start (at most that one batch per app).
package final class ReportingLoop: Service, Sendable {
    private let registry: any AccountRegistry
    private let api: any AtlassianAPI
    private let tokens: any ReportingTokenProvider
    private let sink: any ReportSink
    private let schedule: Schedule
    private let settings: ReportingSettings
    private let now: @Sendable () -> Date
    private let logger: Logger
    package let board = AppStatusBoard()
    /// PDR calls sent but not yet recorded, across all apps; a partition revocation waits for them.
    package let inFlight = InFlightCalls()
    /// This replica's share of every app's request rate; the partitioned intake sets it on each assignment.
    package let pacing = PacingShare()
    /// The reason each app's `lethe_pdr_app_failing` gauge was last set to 1 for, so it goes back to 0 on recovery.
    private let failingGauges = Mutex<[String: String]>([:])

    package init(registry: any AccountRegistry, api: any AtlassianAPI, tokens: any ReportingTokenProvider,
                 sink: any ReportSink, schedule: Schedule, settings: ReportingSettings,
                 now: @escaping @Sendable () -> Date = { Date() }, logger: Logger) {
        self.registry = registry
        self.api = api
        self.tokens = tokens
        self.sink = sink
        self.schedule = schedule
        self.settings = settings
        self.now = now
        self.logger = logger
    }

    package func run() async throws {
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                group.addTask {
                    while !Task.isCancelled {
                        await self.recordHealthMetrics()
                        try? await Task.sleep(for: self.settings.healthInterval)
                    }
                }
                var started = Set<String>()
                while !Task.isCancelled {
                    let apps = (try? await self.registry.appIds()) ?? []
                    for appId in apps where !started.contains(appId) {
                        started.insert(appId)
                        let reporter = self.makeReporter(appId)
                        group.addTask { await reporter.run() }
                    }
                    try? await Task.sleep(for: self.settings.idlePoll)
                }
            }
        }
    }

    private func makeReporter(_ appId: String) -> AppReporter {
        AppReporter(appId: appId, registry: registry, api: api, tokens: tokens, sink: sink, schedule: schedule,
                    settings: settings, board: board, inFlight: inFlight, pacing: pacing, now: now, logger: logger)
    }

    /// Registers what is held (the `AccountHeld` consumer calls this, with the record's partition): a new account's
    /// first due time is spread over the app's current cycle.
    package func hold(_ account: HeldAccount, partition: Int32 = 0) async throws {
        let cycle = schedule.cycle(override: try await registry.cyclePeriod(appId: account.appId))
        try await registry.upsert(account, partition: partition, seenAt: now(), cycle: cycle)
    }

    /// Many `lethe.pdr.accounts.v1` records in their order (the intake's batches): one registry transaction, each new
    /// account spread over its app's current cycle. All records of a batch share one `seenAt`: they arrived together.
    package func apply(_ changes: [HeldChange]) async throws {
        var cycles: [String: Duration] = [:]
        for case .hold(let account, _) in changes where cycles[account.appId] == nil {
            cycles[account.appId] = schedule.cycle(override: try await registry.cyclePeriod(appId: account.appId))
        }
        try await registry.apply(changes, seenAt: now(), cycles: cycles)
    }

    /// Adopts the cycle a restored changelog implies for an app (`nextDueAt − reportedAt` of its latest records), unless
    /// the registry already follows it (within 2 ms: the changelog's dates carry milliseconds). This is how a new or
    /// restarted instance recovers a `Cycle-Period` Atlassian answered to another instance: without it, it would fall
    /// back to `PDR_CYCLE_SECONDS` until its own first call for the app.
    package func adoptRestoredCycle(appId: String, implied: Duration) async throws {
        let cycle = schedule.cycle(override: implied)
        let current = schedule.cycle(override: try await registry.cyclePeriod(appId: appId))
        let tolerance: Duration = .milliseconds(2)
        guard current - cycle > tolerance || cycle - current > tolerance else { return }
        try await registry.setCyclePeriod(appId: appId, cycle: cycle)
        logger.notice("cycle period recovered from the restored changelog", metadata: [
            "pdr.app_id": "\(appId)", "pdr.cycle_seconds": "\(cycle.components.seconds)",
        ])
    }

    /// A tombstone: stop reporting the account at once.
    package func release(appId: String, accountId: String) async throws {
        try await registry.remove(appId: appId, accountId: accountId)
    }

    /// Waits until every call sent so far is recorded (its `AccountReported` acknowledged), at most `timeout`.
    /// Returns whether it got there.
    package func drainInFlight(timeout: Duration) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while await inFlight.count > 0 {
            guard ContinuousClock.now < deadline else { return false }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return true
    }

    /// The status of every app, for `GET /v1/apps`.
    package func status() async throws -> [AppReportingStatus] {
        var result: [AppReportingStatus] = []
        let current = now()
        // Due longer ago than this is overdue: the batch window is a promised wait, `overdueAfter` the slack on top.
        let overdueBefore = current.addingTimeInterval(-(settings.batchWindow + settings.overdueAfter).timeInterval)
        for appId in try await registry.appIds() {
            let cycle = schedule.cycle(override: try await registry.cyclePeriod(appId: appId))
            let counts = try await registry.counts(appId: appId, at: current, cycle: cycle)
            let overdue = try await registry.counts(appId: appId, at: overdueBefore, cycle: cycle).dueNow
            let oldest = overdue == 0 ? nil
                : try await registry.dueAccounts(appId: appId, at: overdueBefore, limit: 1).first
                    .map { current.timeIntervalSince($0.nextDueAt) }
            let live = await board.entry(appId)
            result.append(AppReportingStatus(
                appId: appId, accountsHeld: counts.held, dueNow: counts.dueNow,
                reportedInCurrentCycle: counts.reportedInCurrentCycle, rejected: counts.rejected,
                rejectedAccountIds: counts.rejected == 0 ? []
                    : try await registry.rejectedAccountIds(appId: appId, limit: 20),
                lastCallAt: live.lastCallAt, nextDueAt: try await registry.nextDueAt(appId: appId),
                lastOutcome: live.lastOutcome,
                health: AppHealth.assess(live, overdue: overdue, oldestOverdue: oldest, rejected: counts.rejected,
                                         failingAfter: settings.failingAfter),
                rateLimitedCount: live.rateLimited,
                orphaned: live.orphaned, cyclePeriodSeconds: cycle.components.seconds,
                clampedCyclePeriodSeconds: live.clampedCyclePeriod.map { $0.components.seconds }))
        }
        return result
    }

    /// `lethe_pdr_app_failing{app_id,reason}` (1 while failing for that reason, else 0),
    /// `lethe_pdr_overdue_accounts{app_id}` and `lethe_pdr_oldest_overdue_seconds{app_id}` from `status()`.
    private func recordHealthMetrics() async {
        guard let statuses = try? await status() else { return }
        for status in statuses {
            let failingReason = status.health.state == .failing ? status.health.reason : nil
            let previous = failingGauges.withLock { gauges in
                defer { gauges[status.appId] = failingReason }
                return gauges[status.appId]
            }
            if let previous, previous != failingReason {
                Gauge(label: "lethe_pdr_app_failing", dimensions: [("app_id", status.appId), ("reason", previous)])
                    .record(0)
            }
            if let failingReason {
                Gauge(label: "lethe_pdr_app_failing", dimensions: [("app_id", status.appId), ("reason", failingReason)])
                    .record(1)
            }
            Gauge(label: "lethe_pdr_overdue_accounts", dimensions: [("app_id", status.appId)])
                .record(status.health.overdueAccounts)
            Gauge(label: "lethe_pdr_oldest_overdue_seconds", dimensions: [("app_id", status.appId)])
                .record(status.health.oldestOverdueSeconds ?? 0)
        }
    }
}
