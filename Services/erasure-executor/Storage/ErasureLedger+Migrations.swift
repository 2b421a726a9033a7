import GRDB
import Storage

extension ErasureLedger {
    static let migrations: [Migration] = [
        Migration("erasure-executor.v1.schema") { db in
            try db.execute(sql: """
                CREATE TABLE tenants (
                    tenant_id TEXT PRIMARY KEY,
                    policy TEXT NOT NULL,
                    deadline_days INTEGER NOT NULL,
                    app_ids TEXT NOT NULL,
                    updated_at REAL NOT NULL
                );
                CREATE TABLE participants (
                    name TEXT PRIMARY KEY,
                    holds TEXT NOT NULL,
                    declared_at REAL NOT NULL
                );
                CREATE TABLE erasures (
                    row INTEGER PRIMARY KEY AUTOINCREMENT,
                    id TEXT NOT NULL UNIQUE,
                    tenant_id TEXT NOT NULL,
                    app_id TEXT NOT NULL,
                    account_id TEXT,
                    subject TEXT NOT NULL,
                    policy TEXT NOT NULL,
                    cause TEXT NOT NULL,
                    status TEXT NOT NULL,
                    overdue INTEGER NOT NULL DEFAULT 0,
                    deadline REAL NOT NULL,
                    requests INTEGER NOT NULL DEFAULT 1,
                    issued_at REAL,
                    created_at REAL NOT NULL,
                    updated_at REAL NOT NULL,
                    completed_at REAL
                );
                CREATE UNIQUE INDEX erasures_open_key ON erasures(tenant_id, app_id, account_id)
                    WHERE account_id IS NOT NULL;
                CREATE INDEX erasures_by_tenant ON erasures(tenant_id, row);
                CREATE INDEX erasures_open ON erasures(status) WHERE status != 'completed';
                CREATE TABLE erasure_participants (
                    erasure_id TEXT NOT NULL REFERENCES erasures(id),
                    participant TEXT NOT NULL,
                    outcome TEXT,
                    detail TEXT,
                    failed_attempts INTEGER NOT NULL DEFAULT 0,
                    sends INTEGER NOT NULL DEFAULT 0,
                    last_sent_at REAL,
                    acked_at REAL,
                    PRIMARY KEY (erasure_id, participant)
                ) WITHOUT ROWID;
                CREATE TABLE audit_log (
                    sequence INTEGER PRIMARY KEY,
                    erasure_id TEXT NOT NULL UNIQUE,
                    subject TEXT NOT NULL,
                    tenant_id TEXT NOT NULL,
                    policy TEXT NOT NULL,
                    cause TEXT NOT NULL,
                    outcomes TEXT NOT NULL,
                    completed_at_ms INTEGER NOT NULL,
                    previous_hash TEXT NOT NULL,
                    entry_hash TEXT NOT NULL,
                    signature TEXT NOT NULL,
                    key_id TEXT NOT NULL
                );
                CREATE INDEX audit_by_time ON audit_log(completed_at_ms);
                """)
        },
        // Every per-erasure statement must be an index lookup: without these, completing one erasure scanned the whole
        // outbox (DELETE … WHERE topic = ? AND key = ?: 13 ms at 10k rows) and every sweep scanned all erasures and
        // their participants, so throughput fell as the backlog grew.
        Migration("erasure-executor.v2.indexes") { db in
            // For the sweep (pending, waiting participants, deadlines) and for completion (other open erasures of
            // the same account); Storage indexes the outbox by key.
            try db.execute(sql: """
                CREATE INDEX erasures_open_account ON erasures(app_id, account_id) WHERE account_id IS NOT NULL;
                CREATE INDEX erasures_pending ON erasures(id) WHERE status = 'pending';
                CREATE INDEX erasures_open_deadline ON erasures(deadline) WHERE account_id IS NOT NULL AND overdue = 0;
                CREATE INDEX erasure_participants_waiting ON erasure_participants(last_sent_at)
                    WHERE outcome IS NULL OR outcome = 'failed';
                """)
        },
        // The overdue gauge counted by scanning every erasure ever recorded; open overdue ones are few.
        Migration("erasure-executor.v3.overdue-index") { db in
            try db.execute(sql: """
                CREATE INDEX erasures_open_overdue ON erasures(id) WHERE overdue = 1 AND account_id IS NOT NULL;
                """)
        },
        // Issue 15: a declaration that cannot be read keeps its participant (flagged), operators retire participants
        // (history kept; open erasures waiting for one are completed with it `waived`), and a state-topic record sent
        // to its DLQ is remembered so the re-read at each start does not send it again.
        Migration("erasure-executor.v4.participants-lifecycle") { db in
            try db.execute(sql: """
                ALTER TABLE participants ADD COLUMN rejected TEXT;
                ALTER TABLE erasures ADD COLUMN command_id TEXT;
                CREATE UNIQUE INDEX erasures_by_command ON erasures(command_id) WHERE command_id IS NOT NULL;
                CREATE TABLE participant_retirements (
                    row INTEGER PRIMARY KEY AUTOINCREMENT,
                    participant TEXT NOT NULL,
                    reason TEXT NOT NULL,
                    retired_at REAL NOT NULL,
                    waived INTEGER NOT NULL,
                    completed INTEGER NOT NULL
                );
                CREATE INDEX participant_retirements_by_name ON participant_retirements(participant, retired_at);
                CREATE TABLE state_dead_letters (
                    topic TEXT NOT NULL,
                    partition INTEGER NOT NULL,
                    "offset" INTEGER NOT NULL,
                    reason TEXT NOT NULL,
                    at REAL NOT NULL,
                    PRIMARY KEY (topic, partition, "offset")
                ) WITHOUT ROWID;
                CREATE INDEX erasure_participants_waiting_by_name ON erasure_participants(participant)
                    WHERE outcome IS NULL OR outcome = 'failed';
                """)
        },
        // Issue 18: the changelog (ErasureLedger+Changelog). Triggers list every erasure a transaction changes in a way
        // that cannot be asked again (opened, its identity or status, a participant added, removed or waived), so no
        // write path can forget to publish it; acknowledgements and re-sends are not listed (a restore asks again).
        // `version` orders an erasure's records. The erasures already in the file are listed once, so they are
        // published too (a batch per transaction).
        // `changelog_positions`: where the last read-back ended, per partition, so the next starts there.
        Migration("erasure-executor.v5.changelog") { db in
            try db.execute(sql: """
                ALTER TABLE erasures ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
                CREATE TABLE erasure_changes (erasure_id TEXT PRIMARY KEY NOT NULL) WITHOUT ROWID;
                CREATE TRIGGER erasures_changed_by_insert AFTER INSERT ON erasures
                    BEGIN INSERT OR IGNORE INTO erasure_changes VALUES (NEW.id); END;
                CREATE TRIGGER erasures_changed_by_update
                    AFTER UPDATE OF status, command_id, cause, policy, account_id, deadline, tenant_id ON erasures
                    WHEN NEW.status IS NOT OLD.status OR NEW.command_id IS NOT OLD.command_id
                        OR NEW.cause IS NOT OLD.cause OR NEW.policy IS NOT OLD.policy
                        OR NEW.account_id IS NOT OLD.account_id OR NEW.deadline IS NOT OLD.deadline
                        OR NEW.tenant_id IS NOT OLD.tenant_id
                    BEGIN INSERT OR IGNORE INTO erasure_changes VALUES (NEW.id); END;
                CREATE TRIGGER erasure_participants_changed_by_insert AFTER INSERT ON erasure_participants
                    BEGIN INSERT OR IGNORE INTO erasure_changes VALUES (NEW.erasure_id); END;
                CREATE TRIGGER erasure_participants_changed_by_waiver AFTER UPDATE OF outcome ON erasure_participants
                    WHEN NEW.outcome = 'waived' AND OLD.outcome IS NOT 'waived'
                    BEGIN INSERT OR IGNORE INTO erasure_changes VALUES (NEW.erasure_id); END;
                CREATE TRIGGER erasure_participants_changed_by_delete AFTER DELETE ON erasure_participants
                    BEGIN INSERT OR IGNORE INTO erasure_changes VALUES (OLD.erasure_id); END;
                INSERT INTO erasure_changes SELECT id FROM erasures;
                CREATE TABLE retirement_changes (retirement INTEGER PRIMARY KEY NOT NULL);
                CREATE TRIGGER participant_retirements_changed AFTER INSERT ON participant_retirements
                    BEGIN INSERT OR IGNORE INTO retirement_changes VALUES (NEW.row); END;
                INSERT INTO retirement_changes SELECT row FROM participant_retirements;
                CREATE TABLE changelog_positions (
                    partition INTEGER PRIMARY KEY NOT NULL,
                    next_offset INTEGER NOT NULL
                );
                """)
        },
        // Issue 18: one audit chain per partition (Audit.swift). `chain` is the partition of a lethe-audit-v2 entry,
        // NULL for the entries of the single lethe-audit-v1 chain written before; `sequence` is the position in its
        // chain. The table is rebuilt because `sequence` was its primary key; the old entries keep their sequences.
        Migration("erasure-executor.v6.audit-chains") { db in
            try db.execute(sql: """
                CREATE TABLE audit_entries (
                    row INTEGER PRIMARY KEY AUTOINCREMENT,
                    chain INTEGER,
                    sequence INTEGER NOT NULL,
                    erasure_id TEXT NOT NULL UNIQUE,
                    subject TEXT NOT NULL,
                    tenant_id TEXT NOT NULL,
                    policy TEXT NOT NULL,
                    cause TEXT NOT NULL,
                    outcomes TEXT NOT NULL,
                    completed_at_ms INTEGER NOT NULL,
                    previous_hash TEXT NOT NULL,
                    entry_hash TEXT NOT NULL,
                    signature TEXT NOT NULL,
                    key_id TEXT NOT NULL
                );
                INSERT INTO audit_entries (chain, sequence, erasure_id, subject, tenant_id, policy, cause, outcomes,
                    completed_at_ms, previous_hash, entry_hash, signature, key_id)
                SELECT NULL, sequence, erasure_id, subject, tenant_id, policy, cause, outcomes, completed_at_ms,
                    previous_hash, entry_hash, signature, key_id
                FROM audit_log ORDER BY sequence;
                DROP TABLE audit_log;
                ALTER TABLE audit_entries RENAME TO audit_log;
                CREATE UNIQUE INDEX audit_by_chain ON audit_log(ifnull(chain, -1), sequence);
                CREATE INDEX audit_by_time ON audit_log(completed_at_ms);
                """)
        },
        // Issue 18: lists of erasures are gathered from every replica and merged, so they are ordered by what every
        // replica sees the same — the second an erasure was opened (as the API shows it) and its id — not by a
        // file's row numbers.
        Migration("erasure-executor.v7.list-order") { db in
            try db.execute(sql: """
                ALTER TABLE erasures ADD COLUMN created_second INTEGER
                    GENERATED ALWAYS AS (CAST(created_at AS INTEGER)) VIRTUAL;
                CREATE INDEX erasures_by_opening ON erasures(created_second, id);
                CREATE INDEX erasures_by_tenant_opening ON erasures(tenant_id, created_second, id);
                DROP INDEX erasures_by_tenant;
                """)
        },
    ]
}
