import Contracts
import ErasureKit
import Foundation
import GRDB
import Messaging
import Storage

// profile-store's changelog (`lethe.profiles.state.v1`): what a replica writes with every change, so that whichever
// replica owns a partition next can read its state back (docs/profile-store.md, "Replicas own partitions").

/// Where profile-store's changelog goes: the topic, and the partition count it shares with the profiles and erasure
/// commands topics (a record goes to the partition of its subject's `appId:accountId` in them).
struct ProfileChangelog: Sendable {
    var topic: String
    var partitions: Int

    /// The partition of an account's records in every co-partitioned topic.
    func partition(of key: AccountKey) -> Int32 {
        KeyPartitioner.partition(of: key.rawValue, count: partitions)
    }

    /// The partition of a profile carried over unlinked from a file made before the changelog (its former account
    /// is unknown): its own key's.
    func partition(ofUnlinked id: String) -> Int32 {
        KeyPartitioner.partition(of: ProfileDatabase.unlinkedKey(id), count: partitions)
    }
}

/// What reading a changelog back did.
struct ChangelogRestored: Sendable, Equatable {
    /// Keys whose profiles were replaced (or removed, by a tombstone).
    var keys = 0
    /// Erasure records applied (watermarks, suppressions, outcomes).
    var erasures = 0
    /// Records that could not be read; left out, and logged.
    var unreadable = 0
}

extension ProfileDatabase {
    /// The changelog keys that are not an account's start with ':', which no `AccountKey` does (its appId is not
    /// empty): `:unlinked:<id>` and `:erasure:<erasureId>`.
    static let unlinkedPrefix = ":unlinked:"
    static let erasurePrefix = ":erasure:"

    /// The changelog key of a profile no longer linked to an account.
    static func unlinkedKey(_ id: String) -> String { unlinkedPrefix + id }

    static let changelogMigrations: [Migration] = [
        // Partition-owned state (issue 18): each profile row knows its partition (that of its account, kept when it
        // is unlinked from it) so a replica can drop the partitions it no longer owns; an unlinked row gets an id,
        // its changelog key; lists page by a key every replica orders the same way.
        Migration("profile-store.v5.partitions") { db in
            try db.execute(sql: """
                ALTER TABLE profiles ADD COLUMN kafka_partition INTEGER;
                ALTER TABLE profiles ADD COLUMN unlinked_id TEXT;
                UPDATE profiles SET unlinked_id = lower(hex(randomblob(16))) WHERE account_id IS NULL;
                ALTER TABLE profiles ADD COLUMN list_key TEXT GENERATED ALWAYS AS (
                    CASE WHEN account_id IS NOT NULL THEN app_id || ':' || account_id ELSE ':' || unlinked_id END
                ) VIRTUAL;
                CREATE INDEX profiles_by_list_key ON profiles(tenant_id, list_key);
                CREATE UNIQUE INDEX profiles_by_unlinked_id ON profiles(unlinked_id) WHERE unlinked_id IS NOT NULL;
                CREATE INDEX profiles_by_partition ON profiles(kafka_partition);
                CREATE TABLE profile_store_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
                """)
        },
    ]

    // MARK: Writing

    /// Writes to the outbox, for each of `keys`, the changelog record of what is held under the account now: its
    /// profiles, or a tombstone when none is linked to it any more.
    static func writeChangelog(
        accounts keys: [AccountKey], to changelog: ProfileChangelog, in db: GRDB.Database
    ) throws {
        guard !keys.isEmpty else { return }
        var held: [[ProfilesHeld.Profile]] = Array(repeating: [], count: keys.count)
        let rows = try Row.fetchCursor(
            db.cachedStatement(sql: """
                WITH keys (position, app_id, account_id) AS (
                    SELECT key, substr(value, 1, instr(value, ':') - 1), substr(value, instr(value, ':') + 1)
                    FROM json_each(?)
                )
                SELECT k.position, p.* FROM keys AS k
                JOIN profiles AS p ON p.app_id = k.app_id AND p.account_id = k.account_id
                ORDER BY k.position, p.tenant_id
                """),
            arguments: [jsonArray(of: keys.map(\.rawValue))])
        while let row = try rows.next() {
            held[row["position"]].append(changelogProfile(row))
        }
        let now = Date()
        for (key, profiles) in zip(keys, held) {
            var message = profiles.isEmpty
                ? OutgoingMessage.tombstone(topic: changelog.topic, key: key.rawValue)
                : try OutboxRecords.profilesHeld(
                    ProfilesHeld(appId: key.appId, accountId: key.accountId, profiles: profiles),
                    key: key.rawValue, topic: changelog.topic, source: source, time: now)
            message.partition = changelog.partition(of: key)
            try Outbox.enqueue(message, in: db)
        }
    }

    /// Writes to the outbox the changelog record of each unlinked profile of `ids`, on its row's partition.
    static func writeChangelog(unlinked ids: [String], to changelog: ProfileChangelog, in db: GRDB.Database) throws {
        for id in ids {
            guard let row = try Row.fetchOne(
                db.cachedStatement(sql: "SELECT * FROM profiles WHERE unlinked_id = ?"), arguments: [id])
            else { continue }
            var message = try OutboxRecords.profilesHeld(
                ProfilesHeld(appId: row["app_id"], accountId: nil, profiles: [changelogProfile(row)]),
                key: unlinkedKey(id), topic: changelog.topic, source: source, time: Date())
            message.partition = row["kafka_partition"] ?? changelog.partition(ofUnlinked: id)
            try Outbox.enqueue(message, in: db)
        }
    }

    /// Writes to the outbox the changelog record of an applied erasure command, on its subject's partition.
    static func writeChangelog(
        erasure record: ProfileErasureRecorded, key: String, partition: Int32, to changelog: ProfileChangelog,
        in db: GRDB.Database
    ) throws {
        var message = try OutgoingMessage(event: record, topic: changelog.topic, key: key, source: source)
        message.partition = partition
        try Outbox.enqueue(message, in: db)
    }

    private static func changelogProfile(_ row: Row) -> ProfilesHeld.Profile {
        ProfilesHeld.Profile(
            platformUserId: row["platform_user_id"], tenantId: row["tenant_id"], name: row["name"],
            email: row["email"], nickname: row["nickname"], picture: row["picture"],
            holdsPersonalData: row["holds_personal_data"], fetchedAt: date(row["fetched_at"]))
    }

    // MARK: Carrying a file made before the changelog over

    /// Once per file: gives every row its partition and writes the changelog of everything the file holds — each
    /// account's profiles, each unlinked profile, and each watermark and suppression onto every partition (a digest
    /// does not tell its account's partition). A file made with the changelog has nothing to carry over. Returns how
    /// many records it wrote.
    func carryOverToChangelog() async throws -> Int {
        guard let changelog else { return 0 }
        return try await database.write { db in
            let done = "changelog-carried-over"
            guard try String.fetchOne(db, sql: "SELECT value FROM profile_store_meta WHERE name = ?", arguments: [done])
                == nil
            else { return 0 }
            let before = try Outbox.pendingCount(in: db)
            var accounts: [AccountKey] = []
            let rows = try Row.fetchAll(db, sql: """
                SELECT id, app_id, account_id, unlinked_id FROM profiles WHERE kafka_partition IS NULL
                """)
            var unlinked: [String] = []
            for row in rows {
                let partition: Int32
                if let accountId: String = row["account_id"], let key = try? AccountKey(
                    appId: row["app_id"], accountId: accountId)
                {
                    partition = changelog.partition(of: key)
                    accounts.append(key)
                } else {
                    let id: String = row["unlinked_id"]
                    partition = changelog.partition(ofUnlinked: id)
                    unlinked.append(id)
                }
                try db.execute(
                    sql: "UPDATE profiles SET kafka_partition = ? WHERE id = ?", arguments: [partition, row["id"]])
            }
            let distinct = Array(Set(accounts)).sorted { $0.rawValue < $1.rawValue }
            try Self.writeChangelog(accounts: distinct, to: changelog, in: db)
            try Self.writeChangelog(unlinked: unlinked, to: changelog, in: db)
            var marks: [(key: String, record: ProfileErasureRecorded)] = []
            for row in try Row.fetchAll(db, sql: "SELECT * FROM erased_accounts") {
                let (tenant, app, digest): (String, String, String) =
                    (row["tenant_id"], row["app_id"], row["account_digest"])
                let suppressed = try Int.fetchOne(
                    db, sql: "SELECT 1 FROM suppressed_accounts WHERE app_id = ? AND account_digest = ?",
                    arguments: [app, digest]) != nil
                marks.append(("\(Self.erasurePrefix)legacy:\(tenant):\(app):\(digest)", ProfileErasureRecorded(
                    erasureId: "legacy", tenantId: tenant, appId: app, accountDigest: digest,
                    erasedThrough: date(row["erased_through"]), suppressed: suppressed, outcome: nil)))
            }
            for row in try Row.fetchAll(db, sql: "SELECT * FROM suppressed_accounts") {
                let erasureId: String = row["erasure_id"]
                marks.append((Self.erasurePrefix + erasureId, ProfileErasureRecorded(
                    erasureId: erasureId, tenantId: nil, appId: row["app_id"], accountDigest: row["account_digest"],
                    erasedThrough: nil, suppressed: true, outcome: nil)))
            }
            for mark in marks {
                for partition in 0..<Int32(changelog.partitions) {
                    try Self.writeChangelog(
                        erasure: mark.record, key: mark.key, partition: partition, to: changelog, in: db)
                }
            }
            try db.execute(
                sql: "INSERT INTO profile_store_meta (name, value) VALUES (?, ?)",
                arguments: [done, ISO8601DateFormatter().string(from: Date())])
            return try Outbox.pendingCount(in: db) - before
        }
    }

    // MARK: Partitions

    /// Forgets every profile (and what was announced of it) of the partitions not in `keeping`; returns how many
    /// profiles it forgot. Watermarks, suppressions and recorded outcomes stay: they name no one, and only grow.
    func dropPartitions(keeping: Set<Int32>) async throws -> Int {
        guard let changelog else { return 0 }
        return try await database.write { db in
            try db.execute(
                sql: """
                    DELETE FROM profiles
                    WHERE kafka_partition IS NULL OR kafka_partition NOT IN (SELECT value FROM json_each(?))
                    """,
                arguments: ["[" + keeping.map(String.init).joined(separator: ",") + "]"])
            let dropped = db.changesCount
            let announced = try Row.fetchAll(db, sql: "SELECT app_id, account_id FROM announced_accounts")
            let delete = try db.cachedStatement(
                sql: "DELETE FROM announced_accounts WHERE app_id = ? AND account_id = ?")
            for row in announced {
                let (app, account): (String, String) = (row[0], row[1])
                let key = try? AccountKey(appId: app, accountId: account)
                if !(key.map { keeping.contains(changelog.partition(of: $0)) } ?? false) {
                    try delete.execute(arguments: [app, account])
                }
            }
            return dropped
        }
    }

    /// Applies changelog records read back from the partitions a replica was assigned, in the order read: a key's
    /// record replaces what is held under it, a tombstone removes it, an erasure record restores its watermark,
    /// suppression and outcome. One transaction; nothing goes to the outbox.
    func restore(_ messages: [KafkaMessage]) async throws -> ChangelogRestored {
        try await database.write { db in
            var restored = ChangelogRestored()
            for message in messages {
                guard let key = message.key.flatMap({ String(bytes: $0, encoding: .utf8) }) else {
                    restored.unreadable += 1
                    continue
                }
                do {
                    if key.hasPrefix(Self.erasurePrefix) {
                        guard message.value != nil else { continue }
                        try Self.restore(try message.decodeEvent(ProfileErasureRecorded.self), in: db)
                        restored.erasures += 1
                        continue
                    }
                    let unlinkedId = key.hasPrefix(Self.unlinkedPrefix)
                        ? String(key.dropFirst(Self.unlinkedPrefix.count)) : nil
                    let account = unlinkedId == nil ? try AccountKey(parsing: key) : nil
                    let held = try message.value.map { _ in try message.decodeEvent(ProfilesHeld.self) }
                    if let unlinkedId {
                        try db.execute(sql: "DELETE FROM profiles WHERE unlinked_id = ?", arguments: [unlinkedId])
                    } else if let account {
                        try db.execute(
                            sql: "DELETE FROM profiles WHERE app_id = ? AND account_id = ?",
                            arguments: [account.appId, account.accountId])
                    }
                    for profile in held?.profiles ?? [] {
                        try db.execute(
                            sql: """
                                INSERT INTO profiles (platform_user_id, tenant_id, app_id, account_id, name, email,
                                    nickname, picture, holds_personal_data, fetched_at, stored_at, kafka_partition,
                                    unlinked_id)
                                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                                """,
                            arguments: [
                                profile.platformUserId, profile.tenantId, held!.appId, account?.accountId,
                                profile.name, profile.email, profile.nickname, profile.picture,
                                profile.holdsPersonalData, millis(profile.fetchedAt), millis(Date()),
                                message.partition, unlinkedId,
                            ])
                    }
                    restored.keys += 1
                } catch is ContractError {
                    restored.unreadable += 1
                }
            }
            return restored
        }
    }

    private static func restore(_ record: ProfileErasureRecorded, in db: GRDB.Database) throws {
        if let tenantId = record.tenantId, let through = record.erasedThrough {
            try db.cachedStatement(sql: """
                INSERT INTO erased_accounts (tenant_id, app_id, account_digest, erased_through) VALUES (?, ?, ?, ?)
                ON CONFLICT DO UPDATE SET erased_through = max(erased_through, excluded.erased_through)
                """).execute(arguments: [tenantId, record.appId, record.accountDigest, millis(through)])
        }
        if record.suppressed {
            try db.cachedStatement(sql: """
                INSERT INTO suppressed_accounts (app_id, account_digest, erasure_id, suppressed_at)
                VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING
                """).execute(arguments: [record.appId, record.accountDigest, record.erasureId, millis(Date())])
        }
        if let outcome = record.outcome {
            try ProcessedEvents.record(record.erasureId, consumer: erasureConsumer, outcome: outcome.rawValue, in: db)
        }
    }

    /// Announces what is held of every account of `partitions` (after they were read back, when nothing of them was
    /// announced by this replica): an `AccountHeld` for each held account, in transactions of 5000. Returns how many.
    func announceAll(partitions: Set<Int32>) async throws -> Int {
        let topic = accountsTopic
        let keys = try await database.read { db in
            try Row.fetchAll(
                db, sql: """
                    SELECT DISTINCT app_id, account_id FROM profiles
                    WHERE account_id IS NOT NULL AND kafka_partition IN (SELECT value FROM json_each(?))
                    """,
                arguments: ["[" + partitions.map(String.init).joined(separator: ",") + "]"]
            ).compactMap { row in try? AccountKey(appId: row[0], accountId: row[1]) }
        }
        var written = 0
        for start in stride(from: 0, to: keys.count, by: 5000) {
            let chunk = Array(keys[start..<min(keys.count, start + 5000)])
            written += try await database.write { db in try Self.announce(chunk, topic: topic, in: db) }
        }
        return written
    }
}
