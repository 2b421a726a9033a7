import Foundation

/// Counts PDR calls between "sent" and "recorded", so a partition revocation can wait until every report of the
/// revoked accounts is in the changelog before the partition is handed over (see `PartitionedIntake`).
package actor InFlightCalls {
    private(set) var count = 0

    package init() {}

    func begin() { count += 1 }

    func end() { count -= 1 }
}

/// Live per-app facts the registry does not hold (last call, 429s, orphaned), shared by the reporters and read by
/// the status endpoint.
package actor AppStatusBoard {
    package struct Entry: Sendable, Equatable {
        package var lastCallAt: Date?
        package var lastOutcome: String?
        package var rateLimited = 0
        package var orphaned = false
        package var badRequests = 0
        /// The last `Cycle-Period` Atlassian answered outside `Schedule.cycleBounds`, as answered (nil: none was).
        package var clampedCyclePeriod: Duration?
        /// Attempts that failed since the last accepted call, the last one's reason, and when the run began.
        package var consecutiveFailures = 0
        package var problem: String?
        package var problemSince: Date?
        /// Every connection tried answered 401 (`unauthorized`) or 403 (`forbidden`) in a row; cleared by a success.
        package var allConnectionsRefused: String?
        package var orphanedSince: Date?
    }

    private var entries: [String: Entry] = [:]

    package init() {}

    package func entry(_ appId: String) -> Entry { entries[appId] ?? Entry() }

    func call(_ appId: String, at date: Date, outcome: String) {
        entries[appId, default: Entry()].lastCallAt = date
        entries[appId, default: Entry()].lastOutcome = outcome
        if outcome == "rate-limited" { entries[appId, default: Entry()].rateLimited += 1 }
        if outcome == "bad-request" { entries[appId, default: Entry()].badRequests += 1 }
        if outcome == "ok" {
            entries[appId, default: Entry()].consecutiveFailures = 0
            entries[appId, default: Entry()].problem = nil
            entries[appId, default: Entry()].problemSince = nil
            entries[appId, default: Entry()].allConnectionsRefused = nil
        } else {
            problem(appId, at: date, reason: outcome)
        }
    }

    /// A failed attempt that made no call (`token-unavailable`: the gateway could not be asked) or a failed call.
    func problem(_ appId: String, at date: Date, reason: String) {
        var entry = entries[appId] ?? Entry()
        entry.consecutiveFailures += 1
        entry.problem = reason
        entry.problemSince = entry.problemSince ?? date
        entries[appId] = entry
    }

    /// 401 or 403 from as many connections as the reporter tries before backing off.
    func allConnectionsRefused(_ appId: String, reason: String) {
        entries[appId, default: Entry()].allConnectionsRefused = reason
    }

    func orphaned(_ appId: String, _ value: Bool, at date: Date) {
        var entry = entries[appId] ?? Entry()
        entry.orphaned = value
        entry.orphanedSince = value ? entry.orphanedSince ?? date : nil
        entries[appId] = entry
    }

    /// Records an answered cycle that was clamped (or nil: the last answer was within bounds). Returns whether it
    /// differs from the one recorded before, so each app's clamped value is logged once, not on every call.
    func cyclePeriodClamped(_ appId: String, answered: Duration?) -> Bool {
        defer { entries[appId, default: Entry()].clampedCyclePeriod = answered }
        return entries[appId]?.clampedCyclePeriod != answered
    }
}
