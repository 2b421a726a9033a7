import Contracts
import ErasureKit
import Foundation
import GRDB
import Messaging
import ServiceKit
import Storage

/// What one ingest transaction did, for metrics and tests.
struct IngestSummary: Sendable, Equatable {
    /// Profiles inserted or updated.
    var applied = 0
    /// Events older than (or as old as) the stored profile: duplicates and late arrivals.
    var stale = 0
    /// Events for a suppressed (closed) account, dropped.
    var suppressed = 0
    /// Events fetched before an erasure of the tenant's profile of the account was issued, dropped: a profile
    /// that overtook its erasure, or arrived after it, never comes back (issue 15).
    var erased = 0
    /// `AccountHeld` records and tombstones written to the outbox.
    var announced = 0
}

/// A stored profile, as the HTTP API and tests see it.
struct StoredProfile: Sendable, Equatable {
    var platformUserId: String
    var tenantId: String
    var appId: String
    var accountId: String?
    var name: String?
    var email: String?
    var nickname: String?
    var picture: String?
    var fetchedAt: Date
    /// Its place in a tenant's list, the same on every replica: `appId:accountId`, or `:<id>` once unlinked.
    var listKey: String
}

/// profile-store's SQLite file: profiles per (tenant, app, accountId), the suppression list, the `AccountHeld` state
/// last announced, and the outbox that announces it. Every write method is one transaction.
final class ProfileDatabase: Sendable {
    /// The participant name erasure outcomes are recorded under in the processed-events table.
    static let erasureConsumer = "erasure"
    /// `ce_source` of what profile-store publishes.
    static let source = "lethe/profile-store"

    let database: SQLiteDatabase
    let accountsTopic: String
    /// Where every change is also written, for the replica that owns its partition next; nil in tests that do not
    /// look at it (nothing is written, and no partition is ever dropped).
    let changelog: ProfileChangelog?

    init(path: String, accountsTopic: String = Topics.pdrAccounts.name, changelog: ProfileChangelog? = nil) throws {
        // secure_delete: an erased name or email is overwritten in the file, not left in a free page.
        // An ingest batch dirties pages all over the profiles table, its three indexes, the announcements and the
        // outbox: with SQLite's 2 MiB cache the writer spilled dirty pages to the WAL mid-transaction (seen in the
        // profile of `make bench-ingest`). Checkpointing every 32 MiB of WAL instead of every 4 MiB keeps the
        // copy-and-sync out of most commits and copies a page rewritten by several batches once. Peak RSS grows by
        // at most the cache.
        database = try SQLiteDatabase(
            path: path, migrations: Self.migrations + Self.changelogMigrations, secureDelete: true,
            writerCacheKiB: 32 * 1024, walAutocheckpointPages: 8192)
        self.accountsTopic = accountsTopic
        self.changelog = changelog
    }

    static let migrations: [Migration] = [
        Migration("profile-store.v1.profiles") { db in
            try db.execute(sql: """
                CREATE TABLE profiles (
                    id INTEGER PRIMARY KEY,
                    platform_user_id TEXT NOT NULL UNIQUE,
                    tenant_id TEXT NOT NULL,
                    app_id TEXT NOT NULL,
                    account_id TEXT,
                    name TEXT,
                    email TEXT,
                    nickname TEXT,
                    picture TEXT,
                    holds_personal_data INTEGER NOT NULL DEFAULT 1,
                    fetched_at INTEGER NOT NULL,
                    stored_at INTEGER NOT NULL
                );
                CREATE UNIQUE INDEX profiles_by_account ON profiles(tenant_id, app_id, account_id)
                    WHERE account_id IS NOT NULL;
                CREATE INDEX profiles_by_app_account ON profiles(app_id, account_id) WHERE account_id IS NOT NULL;
                CREATE TABLE suppressed_accounts (
                    app_id TEXT NOT NULL,
                    account_id TEXT NOT NULL,
                    erasure_id TEXT NOT NULL,
                    suppressed_at INTEGER NOT NULL,
                    PRIMARY KEY (app_id, account_id)
                ) WITHOUT ROWID;
                CREATE TABLE announced_accounts (
                    app_id TEXT NOT NULL,
                    account_id TEXT NOT NULL,
                    updated_at INTEGER NOT NULL,
                    tenant_ids TEXT NOT NULL,
                    PRIMARY KEY (app_id, account_id)
                ) WITHOUT ROWID;
                """)
        },
        // The platform user id is now the gateway's (ProfileFetched 1.1 `userId`), which one user keeps across the
        // apps a tenant used, so it is no longer unique per row. SQLite cannot drop a column's UNIQUE: rebuild.
        Migration("profile-store.v2.platform-user-id-not-unique") { db in
            try db.execute(sql: """
                CREATE TABLE profiles_v2 (
                    id INTEGER PRIMARY KEY,
                    platform_user_id TEXT NOT NULL,
                    tenant_id TEXT NOT NULL,
                    app_id TEXT NOT NULL,
                    account_id TEXT,
                    name TEXT,
                    email TEXT,
                    nickname TEXT,
                    picture TEXT,
                    holds_personal_data INTEGER NOT NULL DEFAULT 1,
                    fetched_at INTEGER NOT NULL,
                    stored_at INTEGER NOT NULL
                );
                INSERT INTO profiles_v2 SELECT id, platform_user_id, tenant_id, app_id, account_id, name, email,
                    nickname, picture, holds_personal_data, fetched_at, stored_at FROM profiles;
                DROP TABLE profiles;
                ALTER TABLE profiles_v2 RENAME TO profiles;
                CREATE UNIQUE INDEX profiles_by_account ON profiles(tenant_id, app_id, account_id)
                    WHERE account_id IS NOT NULL;
                CREATE INDEX profiles_by_app_account ON profiles(app_id, account_id) WHERE account_id IS NOT NULL;
                CREATE INDEX profiles_by_user ON profiles(tenant_id, platform_user_id);
                """)
        },
        // The suppression list keeps digests, not accountIds (see `SuppressionDigest`): a closed account's accountId
        // leaves the file with its erasure. Entries of older files are converted here; secure_delete zeroes the dropped
        // table's pages, and the service checkpoints its WAL at start.
        Migration("profile-store.v3.suppression-digests") { db in
            let entries = try Row.fetchAll(
                db, sql: "SELECT app_id, account_id, erasure_id, suppressed_at FROM suppressed_accounts")
            try db.execute(sql: """
                CREATE TABLE suppressed_accounts_v3 (
                    app_id TEXT NOT NULL,
                    account_digest TEXT NOT NULL,
                    erasure_id TEXT NOT NULL,
                    suppressed_at INTEGER NOT NULL,
                    PRIMARY KEY (app_id, account_digest)
                ) WITHOUT ROWID;
                """)
            for entry in entries {
                try db.execute(
                    sql: "INSERT OR IGNORE INTO suppressed_accounts_v3 VALUES (?, ?, ?, ?)",
                    arguments: [entry["app_id"], SuppressionDigest.of(accountId: entry["account_id"]),
                                entry["erasure_id"], entry["suppressed_at"]])
            }
            try db.execute(sql: """
                DROP TABLE suppressed_accounts;
                ALTER TABLE suppressed_accounts_v3 RENAME TO suppressed_accounts;
                """)
        },
        // Every erasure, whatever its policy and cause, leaves a watermark: a ProfileFetched of that tenant's profile
        // of the account fetched at or before the erasure was issued is dropped at ingest, so a profile that overtook
        // its erasure (or arrived after it) cannot bring the erased data back. A later genuine sign-in (fetched
        // after it) is stored again; a closed account is suppressed for good besides. Digests, like the suppression
        // list, so no accountId stays for an erasure's sake.
        Migration("profile-store.v4.erasure-watermarks") { db in
            try db.execute(sql: """
                CREATE TABLE erased_accounts (
                    tenant_id TEXT NOT NULL,
                    app_id TEXT NOT NULL,
                    account_digest TEXT NOT NULL,
                    erased_through INTEGER NOT NULL,
                    PRIMARY KEY (tenant_id, app_id, account_digest)
                ) WITHOUT ROWID;
                """)
        },
    ]

    // MARK: Ingest

    /// Applies a batch of fetched profiles in one transaction, with the `AccountHeld` changes they cause in the
    /// outbox. A newer stored `fetchedAt` wins; a suppressed account is dropped. A profile is filed under the
    /// event's `userId` (the gateway's user); an event without one (a 1.0 producer) gets a new random id.
    func ingest(_ events: [ProfileFetched]) async throws -> IngestSummary {
        let (topic, changelog) = (accountsTopic, self.changelog)
        return try await database.write { db in
            var summary = IngestSummary()
            var touched: [AccountKey] = []
            var seen = Set<AccountKey>()
            // One statement per event: the suppression check rides in the upsert (a suppressed account inserts
            // nothing), and only an event that changed nothing is looked at again, to count it as suppressed or stale.
            let upsert = try db.cachedStatement(sql: """
                INSERT INTO profiles (platform_user_id, tenant_id, app_id, account_id, name, email, nickname, picture,
                    holds_personal_data, fetched_at, stored_at, kafka_partition)
                SELECT coalesce(?11, ?1), ?2, ?3, ?4, ?5, ?6, ?7, ?8, 1, ?9, ?10, ?13
                WHERE NOT EXISTS (SELECT 1 FROM suppressed_accounts WHERE app_id = ?3 AND account_digest = ?12)
                    AND NOT EXISTS (SELECT 1 FROM erased_accounts
                        WHERE tenant_id = ?2 AND app_id = ?3 AND account_digest = ?12 AND erased_through >= ?9)
                ON CONFLICT (tenant_id, app_id, account_id) WHERE account_id IS NOT NULL DO UPDATE SET
                    platform_user_id = coalesce(?11, profiles.platform_user_id), name = excluded.name, email = excluded.email, nickname = excluded.nickname,
                    picture = excluded.picture, holds_personal_data = 1, fetched_at = excluded.fetched_at,
                    stored_at = excluded.stored_at
                WHERE excluded.fetched_at > profiles.fetched_at
                """)
            let now = millis(Date())
            for event in events {
                let key = try AccountKey(appId: event.appId, accountId: event.accountId)
                try upsert.execute(arguments: [
                    RandomIdentifier.uuidString(), event.tenantId, event.appId, event.accountId, event.name,
                    event.email, event.nickname, event.picture, millis(event.fetchedAt), now, event.userId,
                    SuppressionDigest.of(accountId: event.accountId), changelog?.partition(of: key),
                ])
                if db.changesCount == 0 {
                    if try Self.isSuppressed(appId: event.appId, accountId: event.accountId, in: db) {
                        summary.suppressed += 1
                    } else if try Self.isErased(event, in: db) {
                        summary.erased += 1
                    } else {
                        summary.stale += 1
                    }
                    continue
                }
                summary.applied += 1
                if seen.insert(key).inserted { touched.append(key) }
            }
            summary.announced = try Self.announce(touched, topic: topic, in: db)
            if let changelog { try Self.writeChangelog(accounts: touched, to: changelog, in: db) }
            return summary
        }
    }

    /// Compares what the account's profiles now hold with what was last announced and, when it changed, writes
    /// `AccountHeld` (tenants holding personal data, oldest retrieval time) or its tombstone to the outbox.
    /// Returns whether it wrote one.
    static func announce(_ key: AccountKey, topic: String, in db: GRDB.Database) throws -> Bool {
        try announce([key], topic: topic, in: db) > 0
    }

    /// ``announce(_:topic:in:)`` for distinct accounts, in order: what they hold and what was last announced is read
    /// with one query for all of them (the keys travel as one JSON array), then each changed account is written.
    /// Returns how many records it wrote to the outbox.
    static func announce(_ keys: [AccountKey], topic: String, in db: GRDB.Database) throws -> Int {
        guard !keys.isEmpty else { return 0 }
        struct State {
            var held: [(tenantId: String, fetchedAt: Int64)] = []
            var previous: (updatedAt: Int64, tenantIds: String)?
        }
        var states = [State](repeating: State(), count: keys.count)
        // appId never contains ':' (AccountKey), so the key splits at its first ':' exactly as Kafka keys do.
        let rows = try Row.fetchCursor(
            db.cachedStatement(sql: """
                WITH keys (position, app_id, account_id) AS (
                    SELECT key, substr(value, 1, instr(value, ':') - 1), substr(value, instr(value, ':') + 1)
                    FROM json_each(?)
                )
                SELECT k.position, p.tenant_id, p.fetched_at, a.updated_at, a.tenant_ids
                FROM keys AS k
                LEFT JOIN profiles AS p
                    ON p.app_id = k.app_id AND p.account_id = k.account_id AND p.holds_personal_data = 1
                LEFT JOIN announced_accounts AS a ON a.app_id = k.app_id AND a.account_id = k.account_id
                """),
            arguments: [jsonArray(of: keys.map(\.rawValue))])
        while let row = try rows.next() {
            let position: Int = row[0]
            if let tenantId: String = row[1] { states[position].held.append((tenantId, row[2])) }
            if let updatedAt: Int64 = row[3] { states[position].previous = (updatedAt, row[4]) }
        }
        // Every record of the transaction is stamped with one time: they all become true when it commits.
        let now = Date()
        var written = 0
        for (key, state) in zip(keys, states) {
            if state.held.isEmpty {
                guard state.previous != nil else { continue }
                try db.cachedStatement(sql: "DELETE FROM announced_accounts WHERE app_id = ? AND account_id = ?")
                    .execute(arguments: [key.appId, key.accountId])
                try Outbox.enqueue(.tombstone(topic: topic, key: key.rawValue), in: db)
                written += 1
                continue
            }
            let tenantIds = Set(state.held.map(\.tenantId)).sorted()
            let updatedAt = state.held.map(\.fetchedAt).min()!
            let joined = tenantIds.joined(separator: "\n")
            if let previous = state.previous, previous.updatedAt == updatedAt, previous.tenantIds == joined { continue }
            try db.cachedStatement(sql: """
                INSERT INTO announced_accounts (app_id, account_id, updated_at, tenant_ids) VALUES (?, ?, ?, ?)
                ON CONFLICT (app_id, account_id) DO UPDATE SET updated_at = excluded.updated_at,
                    tenant_ids = excluded.tenant_ids
                """).execute(arguments: [key.appId, key.accountId, updatedAt, joined])
            let event = AccountHeld(
                appId: key.appId, accountId: key.accountId, updatedAt: date(updatedAt), tenantIds: tenantIds)
            try Outbox.enqueue(OutboxRecords.accountHeld(event, topic: topic, source: source, time: now), in: db)
            written += 1
        }
        return written
    }

    // MARK: Queries

    /// The tenant's profile of an account, or nil (also for another tenant's account).
    func profile(tenantId: String, appId: String, accountId: String) async throws -> StoredProfile? {
        try await database.read { db in
            try Row.fetchOne(
                db, sql: "SELECT * FROM profiles WHERE tenant_id = ? AND app_id = ? AND account_id = ?",
                arguments: [tenantId, appId, accountId]
            ).map(Self.profile)
        }
    }

    /// The tenant's profiles of an account across its apps (a tenant may move from the shared app to its own), the most
    /// recently fetched first; narrowed to one app when `appId` is given.
    func profiles(tenantId: String, accountId: String, appId: String?) async throws -> [StoredProfile] {
        try await database.read { db in
            var sql = "SELECT * FROM profiles WHERE tenant_id = ? AND account_id = ?"
            var arguments: StatementArguments = [tenantId, accountId]
            if let appId {
                sql += " AND app_id = ?"
                arguments += [appId]
            }
            return try Row.fetchAll(db, sql: sql + " ORDER BY fetched_at DESC, id DESC", arguments: arguments)
                .map(Self.profile)
        }
    }

    /// One page of a tenant's profiles in list-key order (the same on every replica, so replicas' pages merge): the
    /// profiles after `afterKey`, at most `limit`, and whether more follow.
    func profilePage(tenantId: String, afterKey: String?, limit: Int) async throws
        -> (profiles: [StoredProfile], more: Bool)
    {
        try await database.read { db in
            let rows = try Row.fetchAll(
                db, sql: "SELECT * FROM profiles WHERE tenant_id = ? AND list_key > ? ORDER BY list_key LIMIT ?",
                arguments: [tenantId, afterKey ?? "", limit + 1])
            return (rows.prefix(limit).map(Self.profile), rows.count > limit)
        }
    }

    /// Every profile row of a tenant, including disassociated ones (accountId nil).
    func profiles(tenantId: String) async throws -> [StoredProfile] {
        try await database.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM profiles WHERE tenant_id = ? ORDER BY id", arguments: [tenantId])
                .map(Self.profile)
        }
    }

    /// How many profile rows exist.
    func profileCount() async throws -> Int {
        try await database.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM profiles") ?? 0 }
    }

    /// Whether the account is on the suppression list.
    func isSuppressed(appId: String, accountId: String) async throws -> Bool {
        try await database.read { db in try Self.isSuppressed(appId: appId, accountId: accountId, in: db) }
    }

    /// Whether an erasure of the event's tenant, app and account was issued at or after the event's `fetchedAt`.
    static func isErased(_ event: ProfileFetched, in db: GRDB.Database) throws -> Bool {
        try Int.fetchOne(
            db.cachedStatement(sql: """
                SELECT 1 FROM erased_accounts
                WHERE tenant_id = ? AND app_id = ? AND account_digest = ? AND erased_through >= ?
                """),
            arguments: [event.tenantId, event.appId, SuppressionDigest.of(accountId: event.accountId),
                        millis(event.fetchedAt)]) != nil
    }

    static func isSuppressed(appId: String, accountId: String, in db: GRDB.Database) throws -> Bool {
        try Int.fetchOne(
            db.cachedStatement(sql: "SELECT 1 FROM suppressed_accounts WHERE app_id = ? AND account_digest = ?"),
            arguments: [appId, SuppressionDigest.of(accountId: accountId)]) != nil
    }

    private static func profile(_ row: Row) -> StoredProfile {
        StoredProfile(
            platformUserId: row["platform_user_id"], tenantId: row["tenant_id"], appId: row["app_id"],
            accountId: row["account_id"], name: row["name"], email: row["email"], nickname: row["nickname"],
            picture: row["picture"], fetchedAt: date(row["fetched_at"]), listKey: row["list_key"])
    }
}

/// Milliseconds since the epoch: exact, so equal times compare equal after a round trip (JSON carries milliseconds).
func millis(_ date: Date) -> Int64 { Int64((date.timeIntervalSince1970 * 1000).rounded()) }

func date(_ millis: Int64) -> Date { Date(timeIntervalSince1970: Double(millis) / 1000) }

/// `strings` as a JSON array, for SQLite's `json_each`: one bound parameter carries a whole batch of keys.
func jsonArray(of strings: [String]) -> String {
    var json = "["
    json.reserveCapacity(strings.reduce(2) { $0 + $1.utf8.count + 3 })
    for (index, string) in strings.enumerated() {
        if index > 0 { json += "," }
        json += "\""
        if string.utf8.allSatisfy({ $0 >= 0x20 && $0 != UInt8(ascii: "\"") && $0 != UInt8(ascii: "\\") }) {
            json += string
            json += "\""
            continue
        }
        for scalar in string.unicodeScalars {
            switch scalar {
            case "\"": json += "\\\""
            case "\\": json += "\\\\"
            case let control where control.value < 0x20:
                json += "\\u00" + String(control.value >> 4, radix: 16) + String(control.value & 0xf, radix: 16)
            default: json.unicodeScalars.append(scalar)
            }
        }
        json += "\""
    }
    return json + "]"
}

