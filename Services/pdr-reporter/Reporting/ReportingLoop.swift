import AtlassianClient
import Foundation
import Logging
import ServiceLifecycle

/// One app's state for `GET /v1/apps`.
package struct AppReportingStatus: Codable, Sendable, Equatable {
    package var appId: String
    package var accountsHeld: Int
    package var dueNow: Int
    package var reportedInCurrentCycle: Int
    /// Skipped after Atlassian refused them alone (400), until their data changes.
    package var rejected: Int
    package var lastCallAt: Date?
    /// `ok`, `rate-limited`, `unauthorized`, `forbidden`, `bad-request` or `failed`.
    package var lastOutcome: String?
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
                    settings: settings, board: board, inFlight: inFlight, now: now, logger: logger)
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
        for appId in try await registry.appIds() {
            let cycle = schedule.cycle(override: try await registry.cyclePeriod(appId: appId))
            let counts = try await registry.counts(appId: appId, at: current, cycle: cycle)
            let live = await board.entry(appId)
            result.append(AppReportingStatus(
                appId: appId, accountsHeld: counts.held, dueNow: counts.dueNow,
                reportedInCurrentCycle: counts.reportedInCurrentCycle, rejected: counts.rejected,
                lastCallAt: live.lastCallAt, lastOutcome: live.lastOutcome, rateLimitedCount: live.rateLimited,
                orphaned: live.orphaned, cyclePeriodSeconds: cycle.components.seconds,
                clampedCyclePeriodSeconds: live.clampedCyclePeriod.map { $0.components.seconds }))
        }
        return result
    }
}
