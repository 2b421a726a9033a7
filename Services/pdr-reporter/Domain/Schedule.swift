import Foundation

/// When each account is due, as pure arithmetic so the in-memory and the SQLite registry agree exactly.
///
/// Every account is reported once per cycle and never more often (ATLASSIAN.md §3.5). The cycle is
/// `PDR_CYCLE_SECONDS` unless Atlassian answered a `Cycle-Period` for the app, which then wins for that app.
/// Fewest calls, still spread (issue 15). Accounts reported in one call share their next due time — a *group* —
/// and stay together cycle after cycle. A new account joins the earliest group of its app that is due within its
/// first cycle and has room (fewer than 90, one call's worth); only when none has room does it start a group, due
/// at `firstSeen + spread × cycle` with `spread` a stable fraction in [0, 1) of `appId:accountId`. So an app with N
/// accounts makes ⌈N/90⌉ calls a cycle however its accounts arrive (more only when departures leave groups part
/// full), groups of different apps — and a burst of new accounts beyond 90 — are spread over the cycle, and no
/// account is reported early (it has no earlier report) or later than one cycle after it was first seen. The
/// fraction of the cycle an account's first due time lies at is stored as its `spread`, which lets a registry
/// reschedule unreported accounts in plain SQL when the cycle changes.
package struct Schedule: Sendable, Equatable {
    /// The cycle when Atlassian has not said otherwise (`PDR_CYCLE_SECONDS`, default 7 days).
    package var defaultCycle: Duration
    /// The cycles a `Cycle-Period` answer is followed within; a value outside is clamped to the nearer end
    /// (`clamped(_:)`). A tiny or zero value (a server bug, a misread unit) must not turn the reporter into a busy loop
    /// against Atlassian, nor a huge one stop reporting for months.
    package var cycleBounds: ClosedRange<Duration>

    package static let sevenDays: Duration = .seconds(604_800)
    /// Production: one day to 31 days (issue 15). Atlassian documents 7 days and users have seen 15 (§3.5).
    package static let productionBounds: ClosedRange<Duration> = .seconds(86_400) ... .seconds(31 * 86_400)
    /// With `PDR_ALLOW_SHORT_CYCLE=1` only: tests and the demo run cycles of seconds against the sandbox.
    package static let shortCycleBounds: ClosedRange<Duration> = .seconds(1) ... .seconds(31 * 86_400)

    package init(defaultCycle: Duration = Schedule.sevenDays, cycleBounds: ClosedRange<Duration> = Schedule.productionBounds) {
        self.defaultCycle = defaultCycle
        self.cycleBounds = cycleBounds
    }

    /// The cycle to follow for an app, given the `Cycle-Period` last answered for it (if any).
    package func cycle(override: Duration?) -> Duration {
        guard let override else { return defaultCycle }
        return clamped(override)
    }

    /// `cycle` within `cycleBounds`.
    package func clamped(_ cycle: Duration) -> Duration {
        min(max(cycle, cycleBounds.lowerBound), cycleBounds.upperBound)
    }

    /// The stable spread fraction of an account, in [0, 1): FNV-1a 64 of `appId:accountId`, then MurmurHash3's
    /// 64-bit finalizer.
    ///
    /// Swift's `Hasher` is seeded per process, so it would move every account's due time on each restart; FNV-1a is
    /// fixed and cheap, but its high bits barely move between ids that differ in the last characters (sequential
    /// ids bunch together), so the finalizer mixes every input bit into the top bits used here. Load levelling
    /// only: this is not a security property.
    package static func spread(appId: String, accountId: String) -> Double {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in "\(appId):\(accountId)".utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01b3
        }
        hash ^= hash >> 33
        hash = hash &* 0xff51_afd7_ed55_8ccd
        hash ^= hash >> 33
        hash = hash &* 0xc4ce_b9fe_1a85_ec53
        hash ^= hash >> 33
        // The top 53 bits fit a Double's mantissa exactly, so the result is < 1 even for an all-ones hash.
        return Double(hash >> 11) / Double(UInt64(1) << 53)
    }

    /// Most accounts in a group: what one PDR call carries (ATLASSIAN.md §3.2).
    package static let groupCapacity = 90

    /// The fraction of the cycle at which `due` lies after `firstSeenAt`: the `spread` of an account that joined the
    /// group due then, so `firstDue(firstSeenAt:spread:cycle:)` gives that time back.
    package static func spread(of due: Date, firstSeenAt: Date, cycle: Duration) -> Double {
        min(max(due.timeIntervalSince(firstSeenAt) / cycle.timeInterval, 0), 1)
    }

    /// An account's first due time: somewhere in the cycle that starts when it was first seen.
    package func firstDue(firstSeenAt: Date, spread: Double, cycle: Duration) -> Date {
        firstSeenAt.addingTimeInterval(spread * cycle.timeInterval)
    }

    /// The next due time after a report: one full cycle later, never earlier.
    package func nextDue(reportedAt: Date, cycle: Duration) -> Date {
        reportedAt.addingTimeInterval(cycle.timeInterval)
    }
}

extension Duration {
    /// Seconds as `TimeInterval`, for `Date` arithmetic.
    package var timeInterval: TimeInterval {
        let (seconds, attoseconds) = components
        return TimeInterval(seconds) + TimeInterval(attoseconds) / 1e18
    }
}
