import Foundation
import GRDB

/// One named schema change. Migrations run once each, in the order given, and are never edited once landed: a
/// change to the schema is a new migration, so every existing file reaches the same schema.
package struct Migration: Sendable {
    /// The stable identifier GRDB records in `grdb_migrations`, e.g. `profile-store.v1.profiles`.
    package var name: String
    /// The schema change, run inside its own transaction.
    package var apply: @Sendable (GRDB.Database) throws -> Void

    package init(_ name: String, _ apply: @escaping @Sendable (GRDB.Database) throws -> Void) {
        self.name = name
        self.apply = apply
    }
}

/// A service's SQLite file: one `DatabasePool` (WAL: readers never block the writer) per file per process, migrated
/// when opened, so a value of this type always has the current schema.
///
/// The Storage tables (``Outbox``, ``ProcessedEvents``) are migrated first, then the service's own migrations.
/// Commits are synchronous (`synchronous=FULL`): a transaction that returned survives a process crash and a power
/// loss, which is what lets consumers commit their Kafka offsets right after it.
package final class SQLiteDatabase: Sendable {
    /// The pool. Use ``write(_:)`` and ``read(_:)``; the pool is exposed for GRDB features these do not cover.
    package let pool: DatabasePool
    /// The file path.
    package let path: String
    /// The connection of ``readNow(_:)``: read-only and apart from the pool's readers.
    private let immediateReader: DatabaseQueue

    /// Opens (creating when missing) and migrates the file at `path`.
    /// - Parameters:
    ///   - secureDelete: overwrite deleted content with zeros (`PRAGMA secure_delete`) on every connection, for files
    ///     that hold personal data or secrets which an erasure must really remove, not leave in a free page.
    ///   - writerCacheKiB: the writer connection's page cache (`PRAGMA cache_size`), nil for SQLite's 2 MiB. A
    ///     transaction that touches more pages than fit spills dirty pages to the WAL before it commits and reads them
    ///     back; a service writing large batches sets it to hold one batch's pages. Readers keep the default.
    ///   - walAutocheckpointPages: how large the WAL may grow (in pages) before a commit copies it into the database
    ///     file (`PRAGMA wal_autocheckpoint`), nil for SQLite's 1000. The copy and its sync run inside the committing
    ///     write, so a high-volume writer checkpoints less often (a page rewritten by many batches is copied once);
    ///     the WAL then holds that much more between checkpoints. ``checkpoint()`` still empties it on request.
    package init(
        path: String, migrations: [Migration], secureDelete: Bool = false, writerCacheKiB: Int? = nil,
        walAutocheckpointPages: Int? = nil
    ) throws {
        var configuration = Configuration()
        // Another process may hold the write lock for a moment (a migration, a backup, a test reading the file):
        // wait for it rather than fail.
        configuration.busyMode = .timeout(10)
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = FULL")
            if secureDelete { try db.execute(sql: "PRAGMA secure_delete = ON") }
        }
        self.path = path
        self.pool = try DatabasePool(path: path, configuration: configuration)
        // GRDB switches the writer to synchronous=NORMAL when it turns WAL on, after prepareDatabase ran: set FULL
        // again on the writer, or a commit would not survive a power loss (it would still survive a process crash).
        try pool.writeWithoutTransaction { db in
            try db.execute(sql: "PRAGMA synchronous = FULL")
            if let writerCacheKiB { try db.execute(sql: "PRAGMA cache_size = \(-max(writerCacheKiB, 64))") }
            if let walAutocheckpointPages {
                try db.execute(sql: "PRAGMA wal_autocheckpoint = \(max(walAutocheckpointPages, 1))")
            }
        }
        var migrator = DatabaseMigrator()
        for migration in StorageSchema.migrations + migrations {
            migrator.registerMigration(migration.name, migrate: migration.apply)
        }
        // Replicas sharing a volume start together, and GRDB checks which migrations are applied before it takes the
        // write lock: two processes migrating a new file at once both ran the first migration, and the second died on
        // "table already exists". One process migrates a file at a time (a lock file beside it); the next finds the
        // work done.
        let pool = self.pool
        try MigrationLock.holding(path + ".migrating") { try migrator.migrate(pool) }
        var readerConfiguration = Configuration()
        readerConfiguration.readonly = true
        readerConfiguration.busyMode = .timeout(10)
        immediateReader = try DatabaseQueue(path: path, configuration: readerConfiguration)
    }

    /// Runs `body` in one write transaction: everything it does commits together or not at all.
    package func write<T: Sendable>(_ body: @escaping @Sendable (GRDB.Database) throws -> T) async throws -> T {
        try await pool.write(body)
    }

    /// Runs `body` in one write transaction that is not synced to disk when it commits (`synchronous=NORMAL` for this
    /// transaction only): it survives a process crash, but a power loss may undo it. Only for short-lived values whose
    /// loss costs a retry and nothing else (a pending sign-in's one-time state). The next ``write(_:)`` syncs it too,
    /// since a WAL sync covers every earlier frame.
    package func writeUnsynced<T: Sendable>(_ body: @escaping @Sendable (GRDB.Database) throws -> T) async throws -> T {
        try await pool.writeWithoutTransaction { db in
            try db.execute(sql: "PRAGMA synchronous = NORMAL")
            defer { try? db.execute(sql: "PRAGMA synchronous = FULL") }
            var result: T?
            try db.inTransaction {
                result = try body(db)
                return .commit
            }
            return result!
        }
    }

    /// Runs `body` on a read-only snapshot on the calling thread, for a request path where SQLite answers in
    /// microseconds, less than the two thread hops of ``read(_:)`` cost. It has a connection of its own, used by one
    /// caller at a time (the next waits microseconds), and never one of the pool's readers: an async read may hold
    /// one of those while it waits for a thread of Swift's cooperative pool, and a synchronous read waiting for it on
    /// that pool's threads would wait for ever (seen with 16 sign-ins in flight on 2 cores).
    package func readNow<T>(_ body: (GRDB.Database) throws -> T) throws -> T {
        try immediateReader.read(body)
    }

    /// Runs `body` on a read-only snapshot; never blocks or is blocked by the writer.
    package func read<T: Sendable>(_ body: @escaping @Sendable (GRDB.Database) throws -> T) async throws -> T {
        try await pool.read(body)
    }

    /// Copies the WAL into the database file and truncates the WAL, so page images of deleted rows do not linger in
    /// the `-wal` file. Best effort: a reader holding an old snapshot keeps part of the WAL until it finishes.
    package func checkpoint() async throws {
        try await pool.writeWithoutTransaction(Self.truncateWAL)
    }

    /// ``checkpoint()`` on the calling thread, for a service opening its file.
    package func checkpointNow() throws {
        try pool.writeWithoutTransaction(Self.truncateWAL)
    }

    private static func truncateWAL(_ db: GRDB.Database) throws { _ = try db.checkpoint(.truncate) }

    /// Readiness: the file can be read. Throws the SQLite error otherwise.
    package func check() async throws {
        _ = try await pool.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM grdb_migrations") }
    }
}

/// The tables Storage itself owns. Their migration names start with `storage.` so they never clash with a service's.
enum StorageSchema {
    static let migrations: [Migration] = [
        Migration("storage.v1.outbox") { db in
            try db.execute(sql: """
                CREATE TABLE lethe_outbox (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    topic TEXT NOT NULL,
                    key BLOB,
                    value BLOB,
                    headers BLOB NOT NULL,
                    partition INTEGER,
                    created_at REAL NOT NULL,
                    sent_at REAL
                );
                CREATE INDEX lethe_outbox_unsent ON lethe_outbox(id) WHERE sent_at IS NULL;
                CREATE INDEX lethe_outbox_sent ON lethe_outbox(sent_at) WHERE sent_at IS NOT NULL;
                """)
        },
        Migration("storage.v1.processed-events") { db in
            try db.execute(sql: """
                CREATE TABLE lethe_processed_events (
                    consumer TEXT NOT NULL,
                    event_id TEXT NOT NULL,
                    outcome TEXT NOT NULL,
                    processed_at REAL NOT NULL,
                    PRIMARY KEY (consumer, event_id)
                ) WITHOUT ROWID;
                """)
        },
        Migration("storage.v2.outbox-by-key") { db in
            // Outbox.discard (an erasure removes an account's pending records) looks records up by topic and key.
            try db.execute(sql: "CREATE INDEX lethe_outbox_by_key ON lethe_outbox(topic, key)")
        },
    ]
}

/// An exclusive `flock` on a file beside the database, held while `body` runs: processes opening the same SQLite file
/// migrate it one after the other. Released when the descriptor closes, so a process killed mid-migration leaves no
/// stale lock (and its transaction rolls back).
enum MigrationLock {
    static func holding<T>(_ path: String, _ body: () throws -> T) throws -> T {
        let descriptor = open(path, O_CREAT | O_RDWR | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw MigrationLockError(path: path, errno: errno) }
        defer { close(descriptor) }
        while flock(descriptor, LOCK_EX) != 0 {
            guard errno == EINTR else { throw MigrationLockError(path: path, errno: errno) }
        }
        return try body()
    }
}

struct MigrationLockError: Error, CustomStringConvertible {
    var path: String
    var errno: Int32
    var description: String { "cannot lock \(path) for the migration (errno \(errno))" }
}
