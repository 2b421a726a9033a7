import Contracts
import Foundation

/// What one page of the console shows, gathered when it is asked for. Each part comes from one service (or the
/// broker) and may be missing on its own: the page then says which and why, and shows everything else.
struct ConsoleSnapshot: Sendable {
    var takenAt: Date
    var tenants: Part<[TenantSummary]>
    var streams: Part<[StreamOverview]>
    var apps: Part<[AppReporting]>
    /// Reporters asked, and those that did not answer (with why).
    var reporters: [ReporterAnswer]
    var counts: Part<ErasureCounts>
    /// Every open erasure (pending, dispatched, needs attention), oldest first.
    var openErasures: Part<[ErasureSummary]>
    var participants: Part<ParticipantsSummary>
    var audit: Part<AuditSummary>
    var deadLetters: Part<[DeadLetterDepth]>

    /// A part of the snapshot: what its source answered, or why it could not be had.
    enum Part<Value: Sendable>: Sendable {
        case loaded(Value)
        case unavailable(String)

        var value: Value? {
            if case .loaded(let value) = self { return value }
            return nil
        }
    }
}

// MARK: What the services answer (only the fields the console shows; unknown fields are ignored)

struct TenantSummary: Decodable, Sendable, Equatable {
    struct App: Decodable, Sendable, Equatable {
        var appId: String
        var shared: Bool
    }

    var tenantId: String
    var erasurePolicy: String
    var deadlineDays: Int
    var disabled: Bool
    var app: App?
}

struct AppReporting: Decodable, Sendable, Equatable {
    struct Health: Decodable, Sendable, Equatable {
        var state: String
        var reason: String?
        var since: String?
        var overdueAccounts: Int
    }

    var appId: String
    var accountsHeld: Int
    var dueNow: Int
    var reportedInCurrentCycle: Int
    var rejected: Int
    var cyclePeriodSeconds: Int
    var lastCallAt: String?
    var nextDueAt: String?
    var health: Health
}

struct ErasureSummary: Decodable, Sendable, Equatable {
    struct Participant: Decodable, Sendable, Equatable {
        var participant: String
        var outcome: String?
        var detail: String?
        var failedAttempts: Int
        var sends: Int
        var ackedAt: String?
    }

    var id: String
    var tenantId: String
    var appId: String
    /// The HMAC of the account (never the accountId itself, which the console does not show).
    var subject: String
    var policy: String
    var cause: String
    var status: String
    var overdue: Bool
    var deadline: String
    var createdAt: String
    var completedAt: String?
    var participants: [Participant]
}

struct ParticipantsSummary: Decodable, Sendable, Equatable {
    struct Declared: Decodable, Sendable, Equatable {
        var participant: String
        var holds: [String]
        var declaredAt: String
        var rejectedDeclaration: String?
        var lastAckAt: String?
        var awaited: Int
    }

    struct Retirement: Decodable, Sendable, Equatable {
        var participant: String
        var reason: String
        var retiredAt: String
        var waived: Int
        var completed: Int
    }

    var declared: [Declared]
    var retirements: [Retirement]
}

struct AuditSummary: Decodable, Sendable, Equatable {
    var ok: Bool
    var entries: Int
    /// Hash chains checked (one per partition, and the single chain of entries written before): absent from an
    /// executor older than chains.
    var chains: Int?
    var firstBrokenChain: Int?
    var firstBrokenSequence: Int?
    var reason: String?
    var keyId: String
}

struct DeadLetterDepth: Sendable, Equatable {
    var topic: String
    /// Records held; nil when the topic does not exist (nothing was ever dead-lettered there by a service that
    /// creates it).
    var records: Int?
}

/// One reporter replica's answer.
struct ReporterAnswer: Sendable, Equatable {
    var address: String
    var apps: Int?
    var problem: String?
}

// MARK: Merging

extension AppReporting {
    /// One line per app across reporter replicas: each holds the accounts of its partitions, so counts add up and the
    /// health shown is the worst any replica reports (with that replica's reason).
    static func merged(_ answers: [[AppReporting]]) -> [AppReporting] {
        var byApp: [String: AppReporting] = [:]
        for app in answers.joined() {
            guard var merged = byApp[app.appId] else {
                byApp[app.appId] = app
                continue
            }
            merged.accountsHeld += app.accountsHeld
            merged.dueNow += app.dueNow
            merged.reportedInCurrentCycle += app.reportedInCurrentCycle
            merged.rejected += app.rejected
            merged.lastCallAt = [merged.lastCallAt, app.lastCallAt].compactMap { $0 }.max()
            merged.nextDueAt = [merged.nextDueAt, app.nextDueAt].compactMap { $0 }.min()
            let overdue = merged.health.overdueAccounts + app.health.overdueAccounts
            if Health.severity(app.health.state) > Health.severity(merged.health.state) { merged.health = app.health }
            merged.health.overdueAccounts = overdue
            byApp[app.appId] = merged
        }
        return byApp.values.sorted { $0.appId < $1.appId }
    }
}

extension AppReporting.Health {
    static func severity(_ state: String) -> Int {
        switch state {
        case "ok": 0
        case "degraded": 1
        default: 2
        }
    }
}
