import AtlassianClient
import Contracts
import Foundation
import Logging
import Metrics

/// Reports one app's due accounts: ≤ 90 per request, one request at a time, paced by `requestInterval` over this
/// replica's ``PacingShare``.
///
/// Failures stay inside the app: a 429 sleeps this reporter only, so other apps' reporters continue. Every failure
/// leaves the batch's accounts due; only a successful call (after the sink and the registry recorded it) moves them
/// to their next cycle, so nothing is skipped and, short of a crash, nothing is sent twice.
package actor AppReporter {
    package let appId: String
    private let registry: any AccountRegistry
    private let api: any AtlassianAPI
    private let tokens: any ReportingTokenProvider
    private let sink: any ReportSink
    private let schedule: Schedule
    private let settings: ReportingSettings
    private let board: AppStatusBoard
    private let inFlight: InFlightCalls
    private let pacing: PacingShare
    private let now: @Sendable () -> Date
    private let logger: Logger
    private var lastRequestAt: ContinuousClock.Instant?
    private var failures = 0

    /// The app is orphaned: no connection has a usable grant. Its accounts stay due.
    private struct Orphaned: Error {}

    package init(appId: String, registry: any AccountRegistry, api: any AtlassianAPI,
                 tokens: any ReportingTokenProvider, sink: any ReportSink, schedule: Schedule,
                 settings: ReportingSettings, board: AppStatusBoard, inFlight: InFlightCalls = InFlightCalls(),
                 pacing: PacingShare = PacingShare(), now: @escaping @Sendable () -> Date, logger: Logger) {
        self.appId = appId
        self.registry = registry
        self.api = api
        self.tokens = tokens
        self.sink = sink
        self.schedule = schedule
        self.settings = settings
        self.board = board
        self.inFlight = inFlight
        self.pacing = pacing
        self.now = now
        var logger = logger
        logger[metadataKey: "pdr.app_id"] = "\(appId)"
        self.logger = logger
    }

    /// Runs until cancelled: sleeps until the next account is due (at most `idlePoll`), then sends one batch.
    /// A cancellation in the middle of a call leaves that batch due: it is re-sent after restart.
    package func run() async {
        while !Task.isCancelled {
            do {
                let current = now()
                let due = try await registry.dueAccounts(
                    appId: appId, at: current, limit: AtlassianClient.maxAccountsPerReport)
                if due.isEmpty {
                    if let rejected = try await registry.dueRejected(appId: appId, at: current) {
                        try await deliver([rejected], refill: false)
                        continue
                    }
                    let next = try await registry.nextDueAt(appId: appId)
                    let wait = min(next.map { $0.timeIntervalSince(current) } ?? .infinity, settings.idlePoll.timeInterval)
                    try await Task.sleep(for: .seconds(max(wait, 0.002)))
                    continue
                }
                if due.count < AtlassianClient.maxAccountsPerReport, let wake = try await fillTime(of: due, at: current) {
                    let wait = min(wake.timeIntervalSince(current), settings.idlePoll.timeInterval)
                    try await Task.sleep(for: .seconds(max(wait, 0.002)))
                    continue
                }
                try await deliver(due)
            } catch is CancellationError {
                return
            } catch is Orphaned {
                try? await Task.sleep(for: settings.orphanRetry)
            } catch {
                logger.warning("reporting step failed; backing off", metadata: ["error": "\(type(of: error))"])
                try? await Task.sleep(for: nextBackoff())
            }
        }
    }

    /// When a partial batch should go: once 90 accounts are due, or once its oldest has waited `batchWindow` —
    /// whichever comes first. nil when that time has come (or there is no window).
    private func fillTime(of due: [RegisteredAccount], at current: Date) async throws -> Date? {
        guard settings.batchWindow > .zero, let oldest = due.first else { return nil }
        let flushAt = oldest.nextDueAt.addingTimeInterval(settings.batchWindow.timeInterval)
        guard flushAt > current else { return nil }
        let upcoming = try await registry.dueAccounts(
            appId: appId, at: flushAt, limit: AtlassianClient.maxAccountsPerReport)
        let fullAt = upcoming.count == AtlassianClient.maxAccountsPerReport ? upcoming[upcoming.count - 1].nextDueAt
            : flushAt
        let wake = min(fullAt, flushAt)
        return wake > current ? wake : nil
    }

    /// Sends one batch until Atlassian accepted it (or, for a 400, until each account was settled alone).
    ///
    /// With `refill`, every attempt after the first takes the app's due accounts afresh (earliest due first, up to 90):
    /// the batch's own accounts are still the earliest due, and whatever came due during the wait (`Retry-After`,
    /// backoff) fills the rest, so a retried partial batch goes out as full as it now can — never with an account
    /// that is not due. The single-account attempts of a 400 isolation do not refill.
    private func deliver(_ original: [RegisteredAccount], refill: Bool = true) async throws {
        var excluded = Set<String>()
        var attempt = 0
        while true {
            try Task.checkCancellation()
            guard let token = try await reportingToken(excluding: excluded) else { continue }
            await board.orphaned(appId, false, at: now())

            try await pace()
            // Registered as in flight *before* checking the accounts are still ours: a revocation drops the rows and
            // then waits for in-flight calls, so either it waits for this call or this check sees the rows gone. A
            // revoked (or tombstoned) account is never sent after its partition was handed over.
            await inFlight.begin()
            let batch: [RegisteredAccount]
            do {
                if refill && attempt > 0 {
                    batch = try await registry.dueAccounts(
                        appId: appId, at: now(), limit: AtlassianClient.maxAccountsPerReport)
                } else {
                    batch = try await stillHeld(original)
                }
                attempt += 1
            } catch {
                await inFlight.end()
                throw error
            }
            guard !batch.isEmpty else {
                await inFlight.end()
                return
            }
            let accounts = batch.map { ReportedAccount(accountId: $0.accountId, updatedAt: $0.held.updatedAt) }
            let result: PDRResult
            do {
                result = try await api.reportAccounts(accounts, accessToken: token.accessToken)
            } catch let error as AtlassianError {
                await inFlight.end()
                if Task.isCancelled { throw CancellationError() }
                if try await settleFailedCall(error, batch: batch, connectionId: token.connectionId, excluded: &excluded) {
                    return
                }
                continue
            } catch {
                await inFlight.end()
                throw error
            }
            failures = 0
            await board.call(appId, at: now(), outcome: "ok")
            do {
                try await complete(batch, result, reportedAt: now())
            } catch {
                await inFlight.end()
                throw error
            }
            await inFlight.end()
            return
        }
    }

    /// A reporting token from one of the app's connections other than `excluded`; nil after backing off because the
    /// gateway could not give one (the caller asks again). Throws ``Orphaned`` when no connection has a usable grant.
    private func reportingToken(excluding excluded: Set<String>) async throws -> ReportingToken? {
        do {
            return try await tokens.token(appId: appId, excluding: excluded)
        } catch ReportingTokenError.noUsableGrant {
            // With connections excluded, the last ones were refused (401/403): that is the reason to show.
            if !excluded.isEmpty, let refusal = await board.entry(appId).lastOutcome,
               ["unauthorized", "forbidden"].contains(refusal) {
                await board.allConnectionsRefused(appId, reason: refusal)
            }
            if await !board.entry(appId).orphaned {
                logger.error("app orphaned: no connection with a usable grant; its accounts stay due")
            }
            await board.orphaned(appId, true, at: now())
            throw Orphaned()
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            logger.warning("no reporting token; backing off", metadata: ["error": "\(error)"])
            await board.problem(appId, at: now(), reason: "token-unavailable")
            try await Task.sleep(for: nextBackoff())
            return nil
        }
    }

    /// Records a PDR call that failed with `error` and waits as it requires. Returns true when that settled the batch
    /// (a 400: each account was then settled alone), false when the batch is to be sent again.
    private func settleFailedCall(
        _ error: AtlassianError, batch: [RegisteredAccount], connectionId: String, excluded: inout Set<String>
    ) async throws -> Bool {
        switch error {
        case .unauthorized, .forbidden:
            // 401: this user's grant is probably gone; 403: it lacks report:personal-data (a consent from
            // before the gateway asked for it). Either way another connection's token may work (§3.3).
            let outcome = error == .unauthorized ? "unauthorized" : "forbidden"
            await board.call(appId, at: now(), outcome: outcome)
            excluded.insert(connectionId)
            if excluded.count >= settings.maxTokenAttempts {
                await board.allConnectionsRefused(appId, reason: outcome)
                logger.warning("401 or 403 from every connection tried; backing off", metadata: [
                    "pdr.connections_tried": "\(excluded.count)", "pdr.last_outcome": "\(outcome)",
                ])
                excluded = []
                try await Task.sleep(for: nextBackoff())
            }
        case .rateLimited(let retryAfter):
            await board.call(appId, at: now(), outcome: "rate-limited")
            try await Task.sleep(for: retryAfter ?? settings.defaultRetryAfter)
        case .badRequest(let errorType, _):
            await board.call(appId, at: now(), outcome: "bad-request")
            // Only the errorType: the message may quote the request, and accountIds are personal data.
            logger.error("PDR refused a batch", metadata: [
                "atlassian.error_type": "\(errorType ?? "none")", "pdr.batch_size": "\(batch.count)",
            ])
            try await isolate(batch)
            return true
        default:
            await board.call(appId, at: now(), outcome: "failed")
            logger.info("PDR call failed; backing off", metadata: ["error": "\(error)"])
            try await Task.sleep(for: nextBackoff())
        }
        return false
    }

    /// The accounts of `batch` the registry still holds: between two attempts of a batch (429, backoff) its partition
    /// may have been revoked or an account tombstoned.
    private func stillHeld(_ batch: [RegisteredAccount]) async throws -> [RegisteredAccount] {
        var held: [RegisteredAccount] = []
        for account in batch where try await registry.account(appId: appId, accountId: account.accountId) != nil {
            held.append(account)
        }
        return held
    }

    /// A 400 names no account, so each is sent alone: the good ones are reported, a bad one is marked rejected —
    /// out of the batches, retried alone every `rejectedRetry`, named in `GET /v1/apps` and degrading the app's
    /// health — never silently dropped. Each account is tried once alone here, so this always ends.
    private func isolate(_ batch: [RegisteredAccount]) async throws {
        guard batch.count > 1 else {
            // No accountId in the log (it is personal data here); GET /v1/apps names it for the operator.
            logger.error("PDR refused an account on its own; it is retried alone later", metadata: [
                "pdr.retry_after_seconds": "\(settings.rejectedRetry.components.seconds)",
            ])
            try await registry.markRejected(
                appId: appId, accountId: batch[0].accountId,
                retryAt: now().addingTimeInterval(settings.rejectedRetry.timeInterval))
            return
        }
        for account in batch { try await deliver([account], refill: false) }
    }

    /// Records a successful call: the sink first (durable events), then the registry (which ends the batch). If
    /// either fails, only that step is retried — the call itself is not repeated.
    private func complete(_ batch: [RegisteredAccount], _ result: PDRResult, reportedAt: Date) async throws {
        let (cycle, changed) = try await self.cycle(answered: result.cyclePeriod)
        var adopting = changed
        let reported = batch.map {
            AccountReported(appId: appId, accountId: $0.accountId, reportedAt: reportedAt,
                            nextDueAt: schedule.nextDue(reportedAt: reportedAt, cycle: cycle))
        }
        let statuses = self.statuses(of: result, batch: batch, reportedAt: reportedAt)
        let closed = try statuses.filter { $0.status == .closed }.map {
            try AccountKey(appId: $0.appId, accountId: $0.accountId)
        }
        while true {
            do {
                if adopting {
                    try await adopt(cycle)
                    adopting = false
                }
                try await sink.publish(reported: reported, statuses: statuses)
                try await registry.recordReported(reported)
                try await registry.close(closed)
                return
            } catch is CancellationError {
                throw CancellationError()
            } catch {
                logger.error("could not record a reported batch; retrying the record only",
                             metadata: ["error": "\(type(of: error))"])
                try await Task.sleep(for: nextBackoff())
            }
        }
    }

    /// The app's cycle after a call that answered `answered` (Atlassian's `Cycle-Period`, if any), kept within
    /// `Schedule.cycleBounds`, and whether it changes the app's cycle (then ``adopt(_:)`` must record it).
    private func cycle(answered: Duration?) async throws -> (cycle: Duration, changed: Bool) {
        let cycle = schedule.cycle(override: try await registry.cyclePeriod(appId: appId))
        guard let answered else { return (cycle, false) }
        let newCycle = schedule.cycle(override: answered)
        let clamped = newCycle != answered
        if await board.cyclePeriodClamped(appId, answered: clamped ? answered : nil), clamped {
            logger.warning("Atlassian answered a Cycle-Period outside the accepted bounds; following the nearest bound", metadata: [
                "pdr.cycle_answered_seconds": "\(answered.components.seconds)",
                "pdr.cycle_seconds": "\(newCycle.components.seconds)",
                "pdr.cycle_bounds_seconds": "\(schedule.cycleBounds.lowerBound.components.seconds)...\(schedule.cycleBounds.upperBound.components.seconds)",
            ])
        }
        if clamped {
            Counter(label: "lethe_pdr_cycle_period_clamped_total", dimensions: [("app_id", appId)]).increment()
        }
        guard newCycle != cycle else { return (cycle, false) }
        logger.notice("Atlassian set a new cycle period for the app",
                      metadata: ["pdr.cycle_seconds": "\(newCycle.components.seconds)"])
        return (newCycle, true)
    }

    /// The statuses Atlassian reported for accounts of `batch` (`closed`, `updated`); unknown ones are logged and
    /// left out.
    private func statuses(of result: PDRResult, batch: [RegisteredAccount], reportedAt: Date) -> [AccountStatusReported] {
        guard case .needsAction(let actions) = result.outcome else { return [] }
        var statuses: [AccountStatusReported] = []
        let byId = Dictionary(batch.map { ($0.accountId, $0) }, uniquingKeysWith: { first, _ in first })
        for action in actions {
            guard let account = byId[action.accountId] else { continue }
            let status: AccountStatus
            switch action.status {
            case .closed: status = .closed
            case .updated: status = .updated
            case .other(let raw):
                logger.warning("unknown PDR status ignored", metadata: ["atlassian.status": "\(raw.prefix(32))"])
                continue
            }
            statuses.append(AccountStatusReported(
                appId: appId, accountId: action.accountId, tenantIds: account.held.tenantIds, status: status,
                reportedAt: reportedAt))
        }
        return statuses
    }

    /// Switches the app to `cycle`, durably: first the changelog gets a record per reported account with its next due
    /// time under the new cycle, then the registry reschedules. The cycle is in no event field of its own, but every
    /// `AccountReported` carries it as `nextDueAt − reportedAt`, and a restore adopts the one its partition's latest
    /// records imply (`PartitionedIntake`); republishing makes that true for every reported account at once, so an
    /// instance that restores these partitions later — even where no account of the app was reported since the
    /// change — follows the cycle Atlassian asked for instead of the default, and never reports early under it.
    private func adopt(_ cycle: Duration) async throws {
        let rescheduled = try await registry.rescheduledReports(appId: appId, cycle: cycle)
        var start = 0
        while start < rescheduled.count {
            let end = min(start + 5000, rescheduled.count)
            try await sink.republish(Array(rescheduled[start..<end]))
            start = end
        }
        try await registry.setCyclePeriod(appId: appId, cycle: cycle)
    }

    /// Keeps at least `requestInterval` ÷ this replica's share of the partitions between two requests of this app.
    private func pace() async throws {
        let clock = ContinuousClock()
        if let last = lastRequestAt {
            let earliest = last.advanced(by: pacing.interval(for: settings.requestInterval))
            if earliest > clock.now { try await Task.sleep(until: earliest, clock: clock) }
        }
        lastRequestAt = clock.now
    }

    /// Exponential backoff with jitter (a random point in the upper half), capped: spreads retries of many apps and instances apart.
    private func nextBackoff() -> Duration {
        failures += 1
        let exponent = min(failures - 1, 20)
        let ceiling = min(settings.backoffBase.timeInterval * pow(2, Double(exponent)), settings.backoffMax.timeInterval)
        return .seconds(Double.random(in: (ceiling / 2)...ceiling))
    }
}
