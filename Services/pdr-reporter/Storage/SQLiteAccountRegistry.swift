import Contracts
import ErasureKit
import Foundation
import GRDB
import Logging
import Storage

/// A registry that can be restored and dropped one Kafka partition at a time: what the partitioned intake needs.
package protocol PartitionedAccountRegistry: AccountRegistry {
    /// Applies one changelog record (`AccountReported` from `lethe.pdr.reports.v1` partition `partition`) during a
    /// restore: last value per key wins, exactly as compaction would leave it. Remembered even when the account is not
    /// (yet) held, because the changelog is restored *before* the accounts records are read.
    func restoreReported(_ reports: [AccountReported], partition: Int32) async throws
    /// Forgets everything of a partition (accounts and changelog): on revocation, and before a restore so a stale copy
    /// from an earlier assignment can never mix with the restored one.
    func dropPartition(_ partition: Int32) async throws
    /// Forgets everything: at start, nothing is assigned to this instance yet.
    func dropAll() async throws
}

/// The registry in the service's SQLite file (`pdr-reporter.sqlite`), one row per held account.
///
/// Behaves exactly like `InMemoryAccountRegistry` (the same tests run against both); in addition it keeps the restored
/// changelog per account (`pdr_changelog`), so an account held after a restore resumes its schedule from its last
/// report instead of starting a new one, and rows carry their partition so a revoked partition is dropped in one
/// statement. Every method is one transaction. Dates are stored as `timeIntervalSinceReferenceDate` (REAL), which is
/// `Date`'s own representation, so values round-trip exactly and SQL comparisons match `Date` comparisons.
package final class SQLiteAccountRegistry: PartitionedAccountRegistry {
    private let database: SQLiteDatabase
    private let schedule: Schedule

    /// Empties the WAL after accounts were released, closed or dropped with their partition, and once at start, so a
    /// closed account's accountId leaves the `-wal` file too (in the database file, `secure_delete` zeroes it). Run it
    /// as a service. At start: a replica killed before its checkpoint leaves the frames it wrote in the WAL, and the
    /// replica that restarts on the file may never release those accounts itself (their partitions went elsewhere);
    /// found by the replica run (Tests/replicas).
    package let checkpointer: WALCheckpointer

    /// Opens (and migrates) the registry at `path`.
    package init(path: String, schedule: Schedule, logger: Logger = Logger(label: "pdr-reporter")) throws {
        self.database = try SQLiteDatabase(path: path, migrations: Self.migrations, secureDelete: true)
        self.schedule = schedule
        self.checkpointer = WALCheckpointer(database: database, logger: logger)
        // At once rather than through the checkpointer: its first request would make the next one (a closed account
        // during the first restore) wait out its interval.
        try database.checkpointNow()
    }

    /// Readiness: the file can be read.
    package func check() async throws { try await database.check() }

    private static func encode(_ date: Date) -> Double { date.timeIntervalSinceReferenceDate }
    private static func decode(_ value: Double) -> Date { Date(timeIntervalSinceReferenceDate: value) }

    private static func tenantJSON(_ ids: [String]) -> String {
        String(decoding: (try? JSONEncoder().encode(ids)) ?? Data("[]".utf8), as: UTF8.self)
    }

    private static func account(_ row: Row) -> RegisteredAccount {
        let tenants = (try? JSONDecoder().decode([String].self, from: Data((row["tenant_ids"] as String).utf8))) ?? []
        return RegisteredAccount(
            held: HeldAccount(appId: row["app_id"], accountId: row["account_id"],
                              updatedAt: decode(row["updated_at"]), tenantIds: tenants),
            firstSeenAt: decode(row["first_seen_at"]), spread: row["spread"],
            lastReportedAt: (row["last_reported_at"] as Double?).map(decode), nextDueAt: decode(row["next_due_at"]),
            rejected: row["rejected"])
    }

    package func upsert(_ account: HeldAccount, partition: Int32, seenAt: Date, cycle: Duration) async throws {
        let schedule = self.schedule
        try await database.write { db in
            try Self.upsert(db, account, partition: partition, seenAt: seenAt, cycle: cycle, schedule: schedule)
        }
    }

    package func remove(appId: String, accountId: String) async throws {
        try await database.write { db in try Self.remove(db, appId: appId, accountId: accountId) }
        checkpointer.request()
    }

    /// One transaction for the whole batch (the intake hands over whatever the consumer had buffered, up to a few
    /// thousand records): one commit per batch instead of one per record, with cached statements, is what makes
    /// ingesting or re-ingesting a 100k-account partition take seconds rather than a minute.
    package func apply(_ changes: [HeldChange], seenAt: Date, cycles: [String: Duration]) async throws {
        guard !changes.isEmpty else { return }
        let schedule = self.schedule
        try await database.write { db in
            for change in changes {
                switch change {
                case .hold(let account, let partition):
                    try Self.upsert(db, account, partition: partition, seenAt: seenAt,
                                    cycle: cycles[account.appId] ?? schedule.defaultCycle, schedule: schedule)
                case .release(let appId, let accountId):
                    try Self.remove(db, appId: appId, accountId: accountId)
                }
            }
        }
        if changes.contains(where: { if case .release = $0 { true } else { false } }) { checkpointer.request() }
    }

    private static func upsert(
        _ db: GRDB.Database, _ account: HeldAccount, partition: Int32, seenAt: Date, cycle: Duration, schedule: Schedule
    ) throws {
        // A closed account is never registered again (see `close`).
        guard try Int.fetchOne(
            db.cachedStatement(sql: "SELECT 1 FROM pdr_closed WHERE app_id = ? AND account_digest = ?"),
            arguments: [account.appId, SuppressionDigest.of(accountId: account.accountId)]) == nil
        else { return }
        if let row = try Row.fetchOne(
            db.cachedStatement(sql: "SELECT updated_at FROM pdr_accounts WHERE app_id = ? AND account_id = ?"),
            arguments: [account.appId, account.accountId]) {
            let changed = decode(row["updated_at"]) != account.updatedAt
            try db.cachedStatement(sql: """
                UPDATE pdr_accounts SET partition = ?, updated_at = ?, tenant_ids = ?,
                    rejected = CASE WHEN ? THEN 0 ELSE rejected END
                WHERE app_id = ? AND account_id = ?
                """).execute(arguments: [partition, encode(account.updatedAt), tenantJSON(account.tenantIds),
                                         changed, account.appId, account.accountId])
            return
        }
        var spread = Schedule.spread(appId: account.appId, accountId: account.accountId)
        var lastReported: Double?
        var nextDue = encode(schedule.firstDue(firstSeenAt: seenAt, spread: spread, cycle: cycle))
        // The changelog knows better than a fresh schedule: resume from the last report, never earlier.
        if let report = try Row.fetchOne(
            db.cachedStatement(sql: "SELECT reported_at, next_due_at FROM pdr_changelog WHERE app_id = ? AND account_id = ?"),
            arguments: [account.appId, account.accountId]) {
            lastReported = report["reported_at"]
            nextDue = report["next_due_at"]
        } else if let group = try Double.fetchOne(
            db.cachedStatement(sql: """
                SELECT next_due_at FROM pdr_due_groups
                WHERE app_id = ? AND members < \(Schedule.groupCapacity) AND next_due_at > ? AND next_due_at < ?
                ORDER BY next_due_at LIMIT 1
                """),
            arguments: [account.appId, encode(seenAt), encode(seenAt.addingTimeInterval(cycle.timeInterval))]) {
            // A group with room, due within this account's first cycle: join it (see `Schedule`).
            nextDue = group
            spread = Schedule.spread(of: decode(group), firstSeenAt: seenAt, cycle: cycle)
        }
        try db.cachedStatement(sql: """
            INSERT INTO pdr_accounts (app_id, account_id, partition, updated_at, tenant_ids, first_seen_at, spread,
                last_reported_at, next_due_at, rejected)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0)
            """).execute(arguments: [account.appId, account.accountId, partition, encode(account.updatedAt),
                                     tenantJSON(account.tenantIds), encode(seenAt), spread, lastReported, nextDue])
    }

    private static func remove(_ db: GRDB.Database, appId: String, accountId: String) throws {
        try db.cachedStatement(sql: "DELETE FROM pdr_accounts WHERE app_id = ? AND account_id = ?")
            .execute(arguments: [appId, accountId])
    }

    package func dueAccounts(appId: String, at now: Date, limit: Int) async throws -> [RegisteredAccount] {
        try await database.read { db in
            try Row.fetchAll(db, sql: """
                SELECT * FROM pdr_accounts WHERE app_id = ? AND rejected = 0 AND next_due_at <= ?
                ORDER BY next_due_at, account_id LIMIT ?
                """, arguments: [appId, Self.encode(now), limit]).map(Self.account)
        }
    }

    package func nextDueAt(appId: String) async throws -> Date? {
        try await database.read { db in
            // Two index lookups (the due index leads with rejected), not a scan of the app's rows.
            try Double.fetchOne(db, sql: """
                SELECT MIN(due) FROM (
                    SELECT MIN(next_due_at) AS due FROM pdr_accounts WHERE app_id = ?1 AND rejected = 0
                    UNION ALL SELECT MIN(next_due_at) FROM pdr_accounts WHERE app_id = ?1 AND rejected = 1)
                """, arguments: [appId]).map(Self.decode)
        }
    }

    package func dueRejected(appId: String, at now: Date) async throws -> RegisteredAccount? {
        try await database.read { db in
            try Row.fetchOne(db, sql: """
                SELECT * FROM pdr_accounts WHERE app_id = ? AND rejected = 1 AND next_due_at <= ?
                ORDER BY next_due_at, account_id LIMIT 1
                """, arguments: [appId, Self.encode(now)]).map(Self.account)
        }
    }

    package func rejectedAccountIds(appId: String, limit: Int) async throws -> [String] {
        try await database.read { db in
            try String.fetchAll(db, sql: """
                SELECT account_id FROM pdr_accounts WHERE app_id = ? AND rejected = 1 ORDER BY account_id LIMIT ?
                """, arguments: [appId, limit])
        }
    }

    /// Also updates the changelog copy, so a later re-hold (after a tombstone) still knows the last report.
    package func recordReported(_ reports: [AccountReported]) async throws {
        try await database.write { db in
            for report in reports {
                guard let partition = try Int32.fetchOne(
                    db.cachedStatement(sql: "SELECT partition FROM pdr_accounts WHERE app_id = ? AND account_id = ?"),
                    arguments: [report.appId, report.accountId]) else { continue }
                try db.cachedStatement(sql: """
                    UPDATE pdr_accounts SET last_reported_at = ?, next_due_at = ?, rejected = 0
                    WHERE app_id = ? AND account_id = ?
                    """).execute(arguments: [Self.encode(report.reportedAt), Self.encode(report.nextDueAt),
                                             report.appId, report.accountId])
                try Self.storeChangelog(db, report, partition: partition)
            }
        }
    }

    private static func storeChangelog(_ db: GRDB.Database, _ report: AccountReported, partition: Int32) throws {
        try db.cachedStatement(sql: """
            INSERT INTO pdr_changelog (app_id, account_id, partition, reported_at, next_due_at) VALUES (?, ?, ?, ?, ?)
            ON CONFLICT (app_id, account_id) DO UPDATE SET partition = excluded.partition,
                reported_at = excluded.reported_at, next_due_at = excluded.next_due_at
            """).execute(arguments: [report.appId, report.accountId, partition, encode(report.reportedAt),
                                     encode(report.nextDueAt)])
    }

    package func close(_ keys: [AccountKey]) async throws {
        guard !keys.isEmpty else { return }
        let closedAt = Self.encode(Date())
        try await database.write { db in
            for key in keys {
                let arguments: StatementArguments = [key.appId, key.accountId]
                try db.cachedStatement(sql: "DELETE FROM pdr_accounts WHERE app_id = ? AND account_id = ?")
                    .execute(arguments: arguments)
                try db.cachedStatement(sql: "DELETE FROM pdr_changelog WHERE app_id = ? AND account_id = ?")
                    .execute(arguments: arguments)
                try db.cachedStatement(sql: """
                    INSERT INTO pdr_closed (app_id, account_digest, closed_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING
                    """).execute(arguments: [key.appId, SuppressionDigest.of(accountId: key.accountId), closedAt])
            }
        }
        checkpointer.request()
    }

    /// The last report the changelog copy knows for the account (held or not), or nil.
    package func lastReport(appId: String, accountId: String) async throws -> Date? {
        try await database.read { db in
            try Double.fetchOne(
                db, sql: "SELECT reported_at FROM pdr_changelog WHERE app_id = ? AND account_id = ?",
                arguments: [appId, accountId]).map(Self.decode)
        }
    }

    package func markRejected(appId: String, accountId: String, retryAt: Date) async throws {
        try await database.write { db in
            try db.execute(sql: "UPDATE pdr_accounts SET rejected = 1, next_due_at = ? WHERE app_id = ? AND account_id = ?",
                           arguments: [Self.encode(retryAt), appId, accountId])
        }
    }

    package func cyclePeriod(appId: String) async throws -> Duration? {
        try await database.read { db in
            try Row.fetchOne(db, sql: "SELECT seconds, attoseconds FROM pdr_app_cycles WHERE app_id = ?",
                             arguments: [appId])
                .map { Duration(secondsComponent: $0["seconds"], attosecondsComponent: $0["attoseconds"]) }
        }
    }

    /// Reschedules in Swift (with `Schedule`), not in SQL, so the arithmetic is the in-memory registry's to the bit.
    /// The restored changelog copy of the app's accounts moves too (its `next_due_at` is what an account held later
    /// resumes from): an account of a partition restored before its `AccountHeld` arrives must follow the new cycle.
    package func setCyclePeriod(appId: String, cycle: Duration) async throws {
        let schedule = self.schedule
        try await database.write { db in
            try db.execute(sql: """
                INSERT INTO pdr_app_cycles (app_id, seconds, attoseconds) VALUES (?, ?, ?)
                ON CONFLICT (app_id) DO UPDATE SET seconds = excluded.seconds, attoseconds = excluded.attoseconds
                """, arguments: [appId, cycle.components.seconds, cycle.components.attoseconds])
            let changelog = try Row.fetchAll(
                db, sql: "SELECT account_id, reported_at FROM pdr_changelog WHERE app_id = ?", arguments: [appId])
            for row in changelog {
                let next = schedule.nextDue(reportedAt: Self.decode(row["reported_at"]), cycle: cycle)
                try db.cachedStatement(sql: "UPDATE pdr_changelog SET next_due_at = ? WHERE app_id = ? AND account_id = ?")
                    .execute(arguments: [Self.encode(next), appId, row["account_id"] as String])
            }
            let rows = try Row.fetchAll(
                db, sql: "SELECT account_id, first_seen_at, spread, last_reported_at FROM pdr_accounts WHERE app_id = ?",
                arguments: [appId])
            for row in rows {
                let next = (row["last_reported_at"] as Double?).map {
                    schedule.nextDue(reportedAt: Self.decode($0), cycle: cycle)
                } ?? schedule.firstDue(firstSeenAt: Self.decode(row["first_seen_at"]), spread: row["spread"],
                                       cycle: cycle)
                try db.execute(sql: "UPDATE pdr_accounts SET next_due_at = ? WHERE app_id = ? AND account_id = ?",
                               arguments: [Self.encode(next), appId, row["account_id"] as String])
            }
        }
    }

    package func rescheduledReports(appId: String, cycle: Duration) async throws -> [AccountReported] {
        let schedule = self.schedule
        return try await database.read { db in
            // Every reported account has its changelog copy (`close` deletes both together); the join keeps a
            // record from ever being republished without one, which could undo a closed account's tombstone.
            try Row.fetchAll(db, sql: """
                SELECT a.account_id, a.last_reported_at FROM pdr_accounts a
                WHERE a.app_id = ? AND a.last_reported_at IS NOT NULL
                    AND EXISTS (SELECT 1 FROM pdr_changelog c WHERE c.app_id = a.app_id AND c.account_id = a.account_id)
                ORDER BY a.account_id
                """, arguments: [appId]).map { row in
                let reportedAt = Self.decode(row["last_reported_at"])
                return AccountReported(appId: appId, accountId: row["account_id"], reportedAt: reportedAt,
                                       nextDueAt: schedule.nextDue(reportedAt: reportedAt, cycle: cycle))
            }
        }
    }

    package func appIds() async throws -> [String] {
        try await database.read { db in
            try String.fetchAll(db, sql: "SELECT DISTINCT app_id FROM pdr_accounts ORDER BY app_id")
        }
    }

    package func account(appId: String, accountId: String) async throws -> RegisteredAccount? {
        try await database.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM pdr_accounts WHERE app_id = ? AND account_id = ?",
                             arguments: [appId, accountId]).map(Self.account)
        }
    }

    package func counts(appId: String, at now: Date, cycle: Duration) async throws -> RegistryCounts {
        let cycleStart = Self.encode(now.addingTimeInterval(-cycle.timeInterval))
        return try await database.read { db in
            let row = try Row.fetchOne(db, sql: """
                SELECT COUNT(*) AS held,
                    COALESCE(SUM(rejected = 0 AND next_due_at <= ?), 0) AS due,
                    COALESCE(SUM(last_reported_at IS NOT NULL AND last_reported_at > ?), 0) AS reported,
                    COALESCE(SUM(rejected), 0) AS rejected
                FROM pdr_accounts WHERE app_id = ?
                """, arguments: [Self.encode(now), cycleStart, appId])!
            return RegistryCounts(held: row["held"], dueNow: row["due"], reportedInCurrentCycle: row["reported"],
                                  rejected: row["rejected"])
        }
    }

    /// One transaction for the whole slice: a restore of a large partition must not pay one fsync per record.
    package func restoreReported(_ reports: [AccountReported], partition: Int32) async throws {
        guard !reports.isEmpty else { return }
        try await database.write { db in
            for report in reports {
                try Self.storeChangelog(db, report, partition: partition)
                try db.cachedStatement(sql: """
                    UPDATE pdr_accounts SET last_reported_at = ?, next_due_at = ? WHERE app_id = ? AND account_id = ?
                    """).execute(arguments: [Self.encode(report.reportedAt), Self.encode(report.nextDueAt),
                                             report.appId, report.accountId])
            }
        }
    }

    package func dropPartition(_ partition: Int32) async throws {
        try await drop(where: "partition = ?", arguments: [partition])
    }

    package func dropAll() async throws {
        try await drop(where: "1", arguments: [])
    }

    /// Deletes the accounts and changelog rows matching `condition`, then asks for a checkpoint — only when rows went:
    /// the checkpointer runs at most once a second, and a needless one (an assignment drops what is usually already
    /// empty) would delay the one a closed account asks for during the restore.
    private func drop(where condition: String, arguments: StatementArguments) async throws {
        let dropped = try await database.write { db in
            try db.execute(sql: "DELETE FROM pdr_accounts WHERE \(condition)", arguments: arguments)
            var count = db.changesCount
            try db.execute(sql: "DELETE FROM pdr_changelog WHERE \(condition)", arguments: arguments)
            count += db.changesCount
            return count
        }
        if dropped > 0 { checkpointer.request() }
    }
}
