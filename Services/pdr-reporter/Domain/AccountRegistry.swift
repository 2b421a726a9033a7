import Contracts
import ErasureKit
import Foundation

/// An account the platform holds through an app: the content of `AccountHeld`, which is all PDR needs.
package struct HeldAccount: Sendable, Equatable {
    package var appId: String
    package var accountId: String
    /// The oldest retrieval time of the data held: what PDR reports as `updatedAt`.
    package var updatedAt: Date
    /// Copied onto every `AccountStatusReported`, so the executor knows whose data to erase.
    package var tenantIds: [String]

    package init(appId: String, accountId: String, updatedAt: Date, tenantIds: [String]) {
        self.appId = appId
        self.accountId = accountId
        self.updatedAt = updatedAt
        self.tenantIds = tenantIds
    }

    package init(_ event: AccountHeld) {
        self.init(appId: event.appId, accountId: event.accountId, updatedAt: event.updatedAt,
                  tenantIds: event.tenantIds)
    }
}

/// One record of `lethe.pdr.accounts.v1`, as the registry applies it: held (with the record's partition) or released
/// (a tombstone).
package enum HeldChange: Sendable, Equatable {
    case hold(HeldAccount, partition: Int32)
    case release(appId: String, accountId: String)
}

/// One row of the registry: what is held plus where it stands in its cycle.
package struct RegisteredAccount: Sendable, Equatable {
    package var held: HeldAccount
    /// When the account was first seen; with `spread` it fixes the first due time (see `Schedule`).
    package var firstSeenAt: Date
    /// The stable fraction of the cycle at which a never-reported account becomes due.
    package var spread: Double
    package var lastReportedAt: Date?
    package var nextDueAt: Date
    /// Atlassian refused this account alone with a 400; it is skipped until its data changes (`updatedAt` moves),
    /// so one bad row can never make the reporter loop on it.
    package var rejected: Bool

    package var appId: String { held.appId }
    package var accountId: String { held.accountId }
}

/// Per-app counts for the status endpoint, computed where the data lives (a `COUNT(*)` in SQLite).
package struct RegistryCounts: Sendable, Equatable {
    package var held: Int
    package var dueNow: Int
    /// Reported within the last cycle.
    package var reportedInCurrentCycle: Int
    /// Skipped after a 400 until their data changes.
    package var rejected: Int
}

/// The reporter's registry: which accounts are held per app and when each is due.
///
/// Every method is a plain value-in/value-out call so an SQLite implementation (one transaction per call, indexed
/// on `(appId, rejected, nextDueAt)`) fits without holding live state; the in-memory actor below is the reference.
/// Scheduling inputs (`Schedule`, the cycle) are passed in rather than kept here, so the arithmetic lives in one
/// place.
package protocol AccountRegistry: Sendable {
    /// Records what is held. A new account gets `nextDueAt = seenAt + spread × cycle` — unless the registry knows
    /// from the changelog when it was last reported, which then wins (a restore never makes an account due early); a
    /// known one keeps its schedule (re-holding never makes an account due earlier) and, when `updatedAt` changed,
    /// loses its `rejected` mark — new data deserves a new try. `partition` is the `lethe.pdr.accounts.v1` partition
    /// the record came from, so a revoked partition's rows can be dropped together.
    func upsert(_ account: HeldAccount, partition: Int32, seenAt: Date, cycle: Duration) async throws
    /// A tombstone: the account is no longer held and is never reported again (unless held anew).
    func remove(appId: String, accountId: String) async throws
    /// Applies many `lethe.pdr.accounts.v1` records in their order, as `upsert` (with `seenAt` and the app's cycle from
    /// `cycles`, else the default) and `remove` would one by one — but as one unit, so an SQLite registry pays one
    /// transaction for a whole batch instead of one per record (a 100k-account partition is ingested in seconds).
    func apply(_ changes: [HeldChange], seenAt: Date, cycles: [String: Duration]) async throws
    /// Up to `limit` accounts of the app due at `now` (not rejected), earliest due first.
    func dueAccounts(appId: String, at now: Date, limit: Int) async throws -> [RegisteredAccount]
    /// The earliest due time of the app's accounts (rejected ones included: they are retried alone), to know how long
    /// to sleep; nil when none.
    func nextDueAt(appId: String) async throws -> Date?
    /// The rejected account due earliest at `now`, if any: sent alone, never in a batch with others.
    func dueRejected(appId: String, at now: Date) async throws -> RegisteredAccount?
    /// Up to `limit` of the app's rejected accounts, by accountId: what `GET /v1/apps` names.
    func rejectedAccountIds(appId: String, limit: Int) async throws -> [String]
    /// Records successful reports: `lastReportedAt` and `nextDueAt` per account, and clears a `rejected` mark (an
    /// account Atlassian accepts again). Accounts removed meanwhile are ignored (a tombstone wins over a late record).
    func recordReported(_ reports: [AccountReported]) async throws
    /// Atlassian answered `closed` for these accounts: they leave the registry at once — their rows and the last
    /// report a re-hold would resume from — so they are never reported again, even while the tenants' erasures are
    /// still running and profile-store still holds them (issue 15: Atlassian flags apps that keep checking a closed
    /// account). Only a digest of each is kept (`SuppressionDigest`), and a later `upsert` of a closed account is
    /// ignored, so no raw accountId of a closed account stays here.
    func close(_ keys: [AccountKey]) async throws
    /// Marks an account Atlassian refused on its own (400): it leaves the batches (one bad account would fail every
    /// call it rides in) and is retried alone at `retryAt`, until Atlassian accepts it or its data changes.
    func markRejected(appId: String, accountId: String, retryAt: Date) async throws
    /// The `Cycle-Period` Atlassian last answered for the app, if any.
    func cyclePeriod(appId: String) async throws -> Duration?
    /// Stores a new cycle for the app and reschedules all its accounts under it: reported ones at
    /// `lastReportedAt + cycle`, the others at `firstSeenAt + spread × cycle`.
    func setCyclePeriod(appId: String, cycle: Duration) async throws
    /// The changelog records a switch of the app to `cycle` implies: one per reported account (except those whose
    /// reports were forgotten since their last report), its last report with `nextDueAt = lastReportedAt + cycle`. Published before `setCyclePeriod`, so the changelog carries the new cycle
    /// for every reported account (see `AppReporter.adopt`).
    func rescheduledReports(appId: String, cycle: Duration) async throws -> [AccountReported]
    /// Every app with at least one held account.
    func appIds() async throws -> [String]
    /// The account as registered, or nil.
    func account(appId: String, accountId: String) async throws -> RegisteredAccount?
    /// Counts for the status endpoint.
    func counts(appId: String, at now: Date, cycle: Duration) async throws -> RegistryCounts
}

extension AccountRegistry {
    /// `upsert` outside any Kafka partition (tests, tools): partition 0.
    package func upsert(_ account: HeldAccount, seenAt: Date, cycle: Duration) async throws {
        try await upsert(account, partition: 0, seenAt: seenAt, cycle: cycle)
    }
}

/// The in-memory registry: the reference implementation (`SQLiteAccountRegistry` must behave the same; the registry
/// tests run against both), used by the reporting-core tests.
/// `dueAccounts` scans the app's accounts, which is fine for tests, not for 100k accounts.
package actor InMemoryAccountRegistry: AccountRegistry {
    private var accounts: [String: [String: RegisteredAccount]] = [:]
    private var cycles: [String: Duration] = [:]
    /// Closed accounts, by app, as digests (see `close`).
    private var closed: [String: Set<String>] = [:]
    private let schedule: Schedule

    package init(schedule: Schedule) {
        self.schedule = schedule
    }

    /// Partitions are not tracked here: the in-memory registry never restores nor drops a partition.
    package func upsert(_ account: HeldAccount, partition: Int32, seenAt: Date, cycle: Duration) {
        if closed[account.appId]?.contains(SuppressionDigest.of(accountId: account.accountId)) == true { return }
        if var existing = accounts[account.appId]?[account.accountId] {
            if existing.held.updatedAt != account.updatedAt { existing.rejected = false }
            existing.held = account
            accounts[account.appId]![account.accountId] = existing
            return
        }
        var spread = Schedule.spread(appId: account.appId, accountId: account.accountId)
        var nextDue = schedule.firstDue(firstSeenAt: seenAt, spread: spread, cycle: cycle)
        // The earliest group with room due within this account's first cycle (what pdr_due_groups gives SQLite).
        let horizon = seenAt.addingTimeInterval(cycle.timeInterval)
        let groups = Dictionary(grouping: (accounts[account.appId] ?? [:]).values, by: \.nextDueAt)
        if let group = groups.filter({ $0.key > seenAt && $0.key < horizon && $0.value.count < Schedule.groupCapacity })
            .keys.min() {
            nextDue = group
            spread = Schedule.spread(of: group, firstSeenAt: seenAt, cycle: cycle)
        }
        accounts[account.appId, default: [:]][account.accountId] = RegisteredAccount(
            held: account, firstSeenAt: seenAt, spread: spread, lastReportedAt: nil, nextDueAt: nextDue,
            rejected: false)
    }

    package func remove(appId: String, accountId: String) {
        accounts[appId]?[accountId] = nil
        if accounts[appId]?.isEmpty == true { accounts[appId] = nil }
    }

    package func apply(_ changes: [HeldChange], seenAt: Date, cycles: [String: Duration]) {
        for change in changes {
            switch change {
            case .hold(let account, let partition):
                upsert(account, partition: partition, seenAt: seenAt,
                       cycle: cycles[account.appId] ?? schedule.defaultCycle)
            case .release(let appId, let accountId):
                remove(appId: appId, accountId: accountId)
            }
        }
    }

    package func dueAccounts(appId: String, at now: Date, limit: Int) -> [RegisteredAccount] {
        guard let app = accounts[appId] else { return [] }
        let due = app.values.filter { !$0.rejected && $0.nextDueAt <= now }
        return Array(due.sorted { ($0.nextDueAt, $0.accountId) < ($1.nextDueAt, $1.accountId) }.prefix(limit))
    }

    package func nextDueAt(appId: String) -> Date? {
        accounts[appId]?.values.lazy.map(\.nextDueAt).min()
    }

    package func dueRejected(appId: String, at now: Date) -> RegisteredAccount? {
        accounts[appId]?.values.filter { $0.rejected && $0.nextDueAt <= now }
            .min { ($0.nextDueAt, $0.accountId) < ($1.nextDueAt, $1.accountId) }
    }

    package func rejectedAccountIds(appId: String, limit: Int) -> [String] {
        Array((accounts[appId]?.values.filter(\.rejected).map(\.held.accountId) ?? []).sorted().prefix(limit))
    }

    package func recordReported(_ reports: [AccountReported]) {
        for report in reports {
            guard var account = accounts[report.appId]?[report.accountId] else { continue }
            account.lastReportedAt = report.reportedAt
            account.nextDueAt = report.nextDueAt
            account.rejected = false
            accounts[report.appId]![report.accountId] = account
        }
    }

    package func close(_ keys: [AccountKey]) {
        for key in keys {
            closed[key.appId, default: []].insert(SuppressionDigest.of(accountId: key.accountId))
            remove(appId: key.appId, accountId: key.accountId)
        }
    }

    package func markRejected(appId: String, accountId: String, retryAt: Date) {
        accounts[appId]?[accountId]?.rejected = true
        accounts[appId]?[accountId]?.nextDueAt = retryAt
    }

    package func cyclePeriod(appId: String) -> Duration? { cycles[appId] }

    package func setCyclePeriod(appId: String, cycle: Duration) {
        cycles[appId] = cycle
        guard let app = accounts[appId] else { return }
        for (id, var account) in app {
            account.nextDueAt = account.lastReportedAt.map { schedule.nextDue(reportedAt: $0, cycle: cycle) }
                ?? schedule.firstDue(firstSeenAt: account.firstSeenAt, spread: account.spread, cycle: cycle)
            accounts[appId]![id] = account
        }
    }

    package func rescheduledReports(appId: String, cycle: Duration) -> [AccountReported] {
        guard let app = accounts[appId] else { return [] }
        return app.values.compactMap { account in
            account.lastReportedAt.map {
                AccountReported(appId: appId, accountId: account.accountId, reportedAt: $0,
                                nextDueAt: schedule.nextDue(reportedAt: $0, cycle: cycle))
            }
        }.sorted { $0.accountId < $1.accountId }
    }

    package func appIds() -> [String] { accounts.keys.sorted() }

    package func account(appId: String, accountId: String) -> RegisteredAccount? { accounts[appId]?[accountId] }

    package func counts(appId: String, at now: Date, cycle: Duration) -> RegistryCounts {
        let app = accounts[appId].map { Array($0.values) } ?? []
        let cycleStart = now.addingTimeInterval(-cycle.timeInterval)
        return RegistryCounts(
            held: app.count,
            dueNow: app.filter { !$0.rejected && $0.nextDueAt <= now }.count,
            reportedInCurrentCycle: app.filter { ($0.lastReportedAt ?? .distantPast) > cycleStart }.count,
            rejected: app.filter(\.rejected).count)
    }
}
