import GRDB
import Storage

extension SQLiteAccountRegistry {
    /// The registry's named migrations; never edit one that has landed, add a new one.
    package static let migrations: [Migration] = [
        Migration("pdr-reporter.v1.registry") { db in
            try db.execute(sql: """
                CREATE TABLE pdr_accounts (
                    app_id TEXT NOT NULL,
                    account_id TEXT NOT NULL,
                    partition INTEGER NOT NULL,
                    updated_at REAL NOT NULL,
                    tenant_ids TEXT NOT NULL,
                    first_seen_at REAL NOT NULL,
                    spread REAL NOT NULL,
                    last_reported_at REAL,
                    next_due_at REAL NOT NULL,
                    rejected INTEGER NOT NULL DEFAULT 0,
                    PRIMARY KEY (app_id, account_id)
                ) WITHOUT ROWID;
                CREATE INDEX pdr_accounts_due ON pdr_accounts(app_id, rejected, next_due_at);
                CREATE INDEX pdr_accounts_partition ON pdr_accounts(partition);
                CREATE TABLE pdr_changelog (
                    app_id TEXT NOT NULL,
                    account_id TEXT NOT NULL,
                    partition INTEGER NOT NULL,
                    reported_at REAL NOT NULL,
                    next_due_at REAL NOT NULL,
                    PRIMARY KEY (app_id, account_id)
                ) WITHOUT ROWID;
                CREATE INDEX pdr_changelog_partition ON pdr_changelog(partition);
                CREATE TABLE pdr_app_cycles (
                    app_id TEXT PRIMARY KEY NOT NULL,
                    seconds INTEGER NOT NULL,
                    attoseconds INTEGER NOT NULL
                ) WITHOUT ROWID;
                """)
        },
        // Accounts Atlassian answered `closed` for, as digests (`close`): never registered again. Not per partition,
        // and kept across partition drops: a restore finds the same in the changelog's tombstones anyway.
        Migration("pdr-reporter.v2.closed-accounts") { db in
            try db.execute(sql: """
                CREATE TABLE pdr_closed (
                    app_id TEXT NOT NULL,
                    account_digest TEXT NOT NULL,
                    closed_at REAL NOT NULL,
                    PRIMARY KEY (app_id, account_digest)
                ) WITHOUT ROWID;
                """)
        },
        // How many accounts of an app share each due time (a group: reported in one call, they stay together), kept
        // by triggers whatever changes a row, so a new account can join a group with room in one indexed lookup
        // (`Schedule`, "fewest calls").
        Migration("pdr-reporter.v3.due-groups") { db in
            try db.execute(sql: """
                CREATE TABLE pdr_due_groups (
                    app_id TEXT NOT NULL,
                    next_due_at REAL NOT NULL,
                    members INTEGER NOT NULL,
                    PRIMARY KEY (app_id, next_due_at)
                ) WITHOUT ROWID;
                CREATE INDEX pdr_due_groups_open ON pdr_due_groups(app_id, next_due_at)
                    WHERE members < \(Schedule.groupCapacity);
                INSERT INTO pdr_due_groups SELECT app_id, next_due_at, COUNT(*) FROM pdr_accounts GROUP BY 1, 2;
                CREATE TRIGGER pdr_due_groups_insert AFTER INSERT ON pdr_accounts BEGIN
                    INSERT INTO pdr_due_groups (app_id, next_due_at, members) VALUES (NEW.app_id, NEW.next_due_at, 1)
                        ON CONFLICT (app_id, next_due_at) DO UPDATE SET members = members + 1;
                END;
                CREATE TRIGGER pdr_due_groups_delete AFTER DELETE ON pdr_accounts BEGIN
                    UPDATE pdr_due_groups SET members = members - 1
                        WHERE app_id = OLD.app_id AND next_due_at = OLD.next_due_at;
                    DELETE FROM pdr_due_groups
                        WHERE app_id = OLD.app_id AND next_due_at = OLD.next_due_at AND members <= 0;
                END;
                CREATE TRIGGER pdr_due_groups_move AFTER UPDATE OF next_due_at ON pdr_accounts
                    WHEN OLD.next_due_at != NEW.next_due_at BEGIN
                    UPDATE pdr_due_groups SET members = members - 1
                        WHERE app_id = OLD.app_id AND next_due_at = OLD.next_due_at;
                    DELETE FROM pdr_due_groups
                        WHERE app_id = OLD.app_id AND next_due_at = OLD.next_due_at AND members <= 0;
                    INSERT INTO pdr_due_groups (app_id, next_due_at, members) VALUES (NEW.app_id, NEW.next_due_at, 1)
                        ON CONFLICT (app_id, next_due_at) DO UPDATE SET members = members + 1;
                END;
                """)
        },
    ]
}
