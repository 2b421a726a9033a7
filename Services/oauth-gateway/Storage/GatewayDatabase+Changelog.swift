import Contracts
import Foundation
import GRDB
import Messaging
import Storage

/// The gateway's changelog on `lethe.gateway.state.v1` (`GatewayRowChanged`, keyed `<table>:<primary key>`; a
/// tombstone for a deleted row): every row of its state, so a replica that becomes active with a volume of its own — or
/// after losing its volume — takes over with every tenant, key, connection and pending security event.
///
/// Nothing has to remember to publish. While a replica is active, temporary triggers on its writer connection
/// (``captureChanges()``) list the primary key of every row a transaction inserts, updates or deletes in
/// `gateway_changes`, in that transaction; ``GatewayChangelog`` publishes each listed row as it is then (or a
/// tombstone) and deletes the listing once the broker has it. A standby installs no trigger: what it writes on its own
/// file before it is active (the first keys of a new file) is never published, and its read-back replaces it.
extension GatewayDatabase {
    /// A table of the gateway's state and its primary key's columns.
    struct ChangelogTable: Sendable {
        var name: String
        var key: [String]

        /// `col = ? AND …` over the key's columns, for a statement about one row.
        var keyMatch: String { key.map { "\($0) = ?" }.joined(separator: " AND ") }
        /// The columns of `gateway_changes` that list the key (`k1`, `k2`).
        var listingColumns: String { key.indices.map { "k\($0 + 1)" }.joined(separator: ", ") }

        /// The state table called `name`, if it is one.
        static func named(_ name: String) -> ChangelogTable? {
            GatewayDatabase.changelogTables.first { $0.name == name }
        }
    }

    /// Every table of the gateway's state. Not here: the outbox (a replica acknowledges nothing before its records are
    /// on the broker) and the changelog's own listing.
    static let changelogTables: [ChangelogTable] = [
        ChangelogTable(name: "data_keys", key: ["id"]),
        ChangelogTable(name: "signing_keys", key: ["kid"]),
        ChangelogTable(name: "tenants", key: ["tenant_id"]),
        ChangelogTable(name: "apps", key: ["app_id"]),
        ChangelogTable(name: "public_clients", key: ["client_id"]),
        ChangelogTable(name: "connections", key: ["connection_id"]),
        ChangelogTable(name: "suppressed_accounts", key: ["account_digest"]),
        ChangelogTable(name: "signin_nonces", key: ["nonce"]),
        ChangelogTable(name: "revoked_access_tokens", key: ["token_id"]),
        ChangelogTable(name: "ssf_streams", key: ["stream_id"]),
        ChangelogTable(name: "ssf_events", key: ["seq"]),
        ChangelogTable(name: "ssf_erasure_subjects", key: ["subject_digest", "user_id"]),
        // The erasures applied and their outcomes: a replica that takes over answers a re-sent command from the
        // state it holds, never from a record its own file kept of a state the changelog does not hold.
        ChangelogTable(name: "lethe_processed_events", key: ["consumer", "event_id"]),
    ]

    /// Starts listing every change to the state tables on the writer connection, for ``GatewayChangelog``. Called when
    /// this replica becomes the active one, after its read-back. `recursive_triggers` makes the rows an `INSERT OR
    /// REPLACE` removes count as deleted, so a row replaced through another unique column is tombstoned too.
    func captureChanges() async throws {
        try await database.pool.writeWithoutTransaction { db in
            try db.execute(sql: "PRAGMA recursive_triggers = ON")
            for table in Self.changelogTables {
                let columns = table.listingColumns
                func values(_ row: String) -> String {
                    table.key.map { "\(row).\($0)" }.joined(separator: ", ")
                }
                let changed = table.key.map { "OLD.\($0) IS NOT NEW.\($0)" }.joined(separator: " OR ")
                try db.execute(sql: """
                    CREATE TEMP TRIGGER IF NOT EXISTS changelog_\(table.name)_insert AFTER INSERT ON main.\(table.name)
                    BEGIN INSERT INTO gateway_changes (tbl, \(columns)) VALUES ('\(table.name)', \(values("NEW"))); END;
                    CREATE TEMP TRIGGER IF NOT EXISTS changelog_\(table.name)_update AFTER UPDATE ON main.\(table.name)
                    BEGIN
                        INSERT INTO gateway_changes (tbl, \(columns)) VALUES ('\(table.name)', \(values("NEW")));
                        INSERT INTO gateway_changes (tbl, \(columns))
                            SELECT '\(table.name)', \(values("OLD")) WHERE \(changed);
                    END;
                    CREATE TEMP TRIGGER IF NOT EXISTS changelog_\(table.name)_delete AFTER DELETE ON main.\(table.name)
                    BEGIN INSERT INTO gateway_changes (tbl, \(columns)) VALUES ('\(table.name)', \(values("OLD"))); END;
                    """)
            }
        }
    }

    /// The changes listed so far, oldest first, at most `limit`, each as the record to publish (the row as it is now,
    /// or a tombstone), one per row; and the last listing they cover, for ``forgetChanges(through:)``.
    func pendingChanges(limit: Int = 500, topic: String) async throws -> (records: [OutgoingMessage], through: Int64)? {
        try await database.read { db in
            let listed = try Row.fetchAll(
                db, sql: "SELECT seq, tbl, k1, k2 FROM gateway_changes ORDER BY seq LIMIT ?", arguments: [limit])
            guard let last = listed.last else { return nil }
            var seen = Set<String>()
            var records: [OutgoingMessage] = []
            // The newest listing of a row first, so each row is published once, then in listing order.
            for change in listed.reversed() {
                guard let table = ChangelogTable.named(change["tbl"]) else { continue }
                let keyValues: [DatabaseValue] = table.key.indices.map { change["k\($0 + 1)"] }
                let key = Self.changelogKey(table: table, values: keyValues)
                guard seen.insert(key).inserted else { continue }
                records.append(try Self.record(of: table, key: key, keyValues: keyValues, topic: topic, in: db))
            }
            return (records.reversed(), last["seq"])
        }
    }

    /// The newest listing not yet published (``GatewayChangelog/waitUntilPublished(deadline:)``); nil when none is.
    func newestListing() async throws -> Int64? {
        try await database.read { db in try Int64.fetchOne(db, sql: "SELECT max(seq) FROM gateway_changes") }
    }

    /// When the newest change still listed was made; nil when none is.
    func newestListedChange() async throws -> Date? {
        try await database.read { db in
            try Double.fetchOne(db, sql: "SELECT max(listed_at) FROM gateway_changes").map(Date.init(timeIntervalSince1970:))
        }
    }

    /// Forgets every listed change unpublished; returns how many listings went.
    func discardListedChanges() async throws -> Int {
        try await database.write { db in
            try db.execute(sql: "DELETE FROM gateway_changes")
            return db.changesCount
        }
    }

    /// Forgets the listed changes through `seq`, once their records are on the broker.
    func forgetChanges(through seq: Int64) async throws {
        try await database.write { db in
            try db.execute(sql: "DELETE FROM gateway_changes WHERE seq <= ?", arguments: [seq])
        }
    }

    /// Lists every row of every state table, so that the next publication writes the whole state: for a file whose
    /// state the changelog does not hold (made before it, or the topic was emptied). Returns how many rows.
    @discardableResult
    func listEveryRow() async throws -> Int {
        try await database.write { db in
            var listed = 0
            for table in Self.changelogTables {
                try db.execute(sql: """
                    INSERT INTO gateway_changes (tbl, \(table.listingColumns))
                    SELECT '\(table.name)', \(table.key.joined(separator: ", ")) FROM \(table.name)
                    """)
                listed += db.changesCount
            }
            return listed
        }
    }

    /// What a read-back has applied so far.
    struct ChangelogReadBack: Sendable, Equatable {
        var rows = 0
        var deleted = 0
        /// Records whose table, key or columns this file does not know (logged by the caller).
        var refused = 0
        /// Every key the changelog holds a record of (a row or a tombstone).
        var seen: Set<String> = []
        /// Rows that clashed, through a unique column other than their key, with a row the file held then, by key:
        /// applied by ``finishReadBack(_:)`` unless a later record of the key supersedes them.
        var deferred: [String: GatewayRowChanged] = [:]

        /// Adds what the next batch applied: a key it met supersedes what waited under that key before it.
        mutating func absorb(_ batch: ChangelogReadBack) {
            rows += batch.rows
            deleted += batch.deleted
            refused += batch.refused
            for key in batch.seen { deferred[key] = nil }
            deferred.merge(batch.deferred) { $1 }
            seen.formUnion(batch.seen)
        }
    }

    /// Applies one batch of records read back, in the order read (a key's records are in order on its partition, but
    /// partitions interleave): a row is written over the file's row of its key, every column as the record says; a
    /// tombstone deletes it. A row that clashes with another row through a unique column other than its key — another
    /// key's older record, read after that key's latest, or a stale row of the file (a connection replaced under the
    /// same account) — is deferred, never allowed to displace the other row now. Returns what the batch applied, for
    /// ``ChangelogReadBack/absorb(_:)``.
    func applyChangelog(_ messages: [KafkaMessage]) async throws -> ChangelogReadBack {
        try await database.write { db in
            var batch = ChangelogReadBack()
            for message in messages {
                guard let key = message.keyString, let (table, keyValues) = try Self.parseChangelogKey(key, in: db) else {
                    batch.refused += 1
                    continue
                }
                batch.seen.insert(key)
                batch.deferred[key] = nil
                guard message.value != nil else {
                    try db.execute(
                        sql: "DELETE FROM \(table.name) WHERE \(table.keyMatch)", arguments: StatementArguments(keyValues))
                    batch.deleted += db.changesCount
                    continue
                }
                let event: GatewayRowChanged
                do {
                    event = try message.decodeEvent(GatewayRowChanged.self)
                    guard event.table == table.name else { throw ContractError.malformedJSON(reason: "table") }
                } catch {
                    batch.refused += 1
                    continue
                }
                do {
                    try Self.write(event, to: table, displacingClashes: false, in: db)
                    batch.rows += 1
                } catch let error as DatabaseError where error.extendedResultCode == .SQLITE_CONSTRAINT_UNIQUE {
                    batch.deferred[key] = event
                } catch is ContractError {
                    batch.refused += 1
                }
            }
            return batch
        }
    }

    /// Writes the deferred rows, the latest of their keys: the rows they clashed with are stale now (a key's latest
    /// rows agree with each other, as the file they were published from did), and give way.
    func finishReadBack(_ readBack: ChangelogReadBack) async throws -> ChangelogReadBack {
        guard !readBack.deferred.isEmpty else { return readBack }
        var result = readBack
        result.rows += try await database.write { [deferred = readBack.deferred] db in
            for event in deferred.values {
                // Its table was checked when it was deferred.
                guard let table = ChangelogTable.named(event.table) else { continue }
                try Self.write(event, to: table, displacingClashes: true, in: db)
            }
            return deferred.count
        }
        result.deferred = [:]
        return result
    }

    /// Records that this file now holds the changelog's state (the end of a take-over).
    func markReadBack(at date: Date = Date()) async throws {
        try await database.write { db in
            try db.execute(
                sql: "INSERT OR REPLACE INTO gateway_changelog_meta (id, read_back_at) VALUES (1, ?)",
                arguments: [date.timeIntervalSince1970])
        }
    }

    /// Tables ``dropStaleState()`` keeps: no personal data (keys wrapped under the master key, signing keys sealed),
    /// and with them the start checks the master key as before and a standby makes no key of its own.
    static let keptAtStart: Set<String> = ["data_keys", "signing_keys"]

    /// At the start of a process that holds this file alone and is not (yet) the active replica: the file's state is
    /// another replica's by now, and may hold what was erased since — so every row of it goes but the keys
    /// (``keptAtStart``) and the rows of changes it lists as unpublished (published when it becomes active). A file
    /// never read back (made before the changelog) is left whole: it may be the only copy, carried over when it
    /// becomes active. Returns how many rows went, nil for such a file.
    func dropStaleState() async throws -> Int? {
        try await database.write { db in
            guard try Bool.fetchOne(db, sql: "SELECT EXISTS (SELECT 1 FROM gateway_changelog_meta)") == true else {
                return nil
            }
            var dropped = 0
            for table in Self.changelogTables where !Self.keptAtStart.contains(table.name) {
                let listed = table.key.enumerated().map { "c.k\($0.offset + 1) = \(table.name).\($0.element)" }.joined(separator: " AND ")
                try db.execute(sql: """
                    DELETE FROM \(table.name) WHERE NOT EXISTS (
                        SELECT 1 FROM gateway_changes c WHERE c.tbl = '\(table.name)' AND \(listed))
                    """)
                dropped += db.changesCount
            }
            return dropped
        }
    }

    /// Deletes every row whose key the read-back did not meet: rows a standby made on its own file (a new file's first
    /// keys), and rows deleted while this file was not read. Returns how many.
    func deleteRows(notIn seen: Set<String>) async throws -> Int {
        try await database.write { db in
            var deleted = 0
            for table in Self.changelogTables {
                let keyList = table.key.joined(separator: ", ")
                let rows = try Row.fetchAll(db, sql: "SELECT \(keyList) FROM \(table.name)")
                for row in rows {
                    let values = table.key.map { row[$0] as DatabaseValue }
                    guard !seen.contains(Self.changelogKey(table: table, values: values)) else { continue }
                    try db.execute(
                        sql: "DELETE FROM \(table.name) WHERE \(table.keyMatch)", arguments: StatementArguments(values))
                    deleted += db.changesCount
                }
            }
            return deleted
        }
    }

    // MARK: - Records

    /// `<table>:<key>`: a text or integer key as it is, a BLOB key in lower-case hex; two key columns joined by ':'
    /// (only `ssf_erasure_subjects`, whose first is a hex digest).
    static func changelogKey(table: ChangelogTable, values: [DatabaseValue]) -> String {
        let parts = values.map { value -> String in
            switch value.storage {
            case .blob(let data): return data.hex
            case .int64(let int): return String(int)
            case .double(let double): return String(double)
            case .string(let string): return string
            case .null: return ""
            }
        }
        return ([table.name] + parts).joined(separator: ":")
    }

    /// The table and typed key values of a changelog key, or nil for a key of no state table.
    private static func parseChangelogKey(_ key: String, in db: GRDB.Database) throws
        -> (ChangelogTable, [DatabaseValue])?
    {
        guard let colon = key.firstIndex(of: ":"),
              let table = ChangelogTable.named(String(key[..<colon]))
        else { return nil }
        let rest = String(key[key.index(after: colon)...])
        let parts = table.key.count == 1
            ? [rest] : rest.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
        guard parts.count == table.key.count else { return nil }
        let types = try columnTypes(of: table.name, in: db)
        var values: [DatabaseValue] = []
        for (column, text) in zip(table.key, parts) {
            guard let value = typed(text, type: types[column], keyColumn: true) else { return nil }
            values.append(value)
        }
        return (table, values)
    }

    /// The record of one listed row: the row as it is now, or a tombstone when it is gone.
    private static func record(
        of table: ChangelogTable, key: String, keyValues: [DatabaseValue], topic: String, in db: GRDB.Database
    ) throws -> OutgoingMessage {
        guard let row = try Row.fetchOne(
            db.cachedStatement(sql: "SELECT * FROM \(table.name) WHERE \(table.keyMatch)"),
            arguments: StatementArguments(keyValues))
        else { return .tombstone(topic: topic, key: key) }
        var columns: [String: String] = [:]
        for (column, value) in row {
            switch value.storage {
            case .null: continue
            case .int64(let int): columns[column] = String(int)
            case .double(let double): columns[column] = String(double)
            case .string(let string): columns[column] = string
            case .blob(let data): columns[column] = data.base64EncodedString()
            }
        }
        return try OutgoingMessage(
            event: GatewayRowChanged(table: table.name, columns: columns), topic: topic, key: key,
            source: "lethe/oauth-gateway")
    }

    /// Writes a changelog row over the file's row of the same key, every column as the record says (a nullable one it
    /// leaves out is NULL). A clash with another row through a unique column other than the key throws
    /// (SQLITE_CONSTRAINT_UNIQUE), or with `displacingClashes` deletes that row (`INSERT OR REPLACE`).
    private static func write(
        _ event: GatewayRowChanged, to table: ChangelogTable, displacingClashes: Bool, in db: GRDB.Database
    ) throws {
        let columns = try db.columns(in: table.name)
        guard Set(event.columns.keys).isSubset(of: columns.map(\.name)) else {
            throw ContractError.malformedJSON(reason: "a column \(table.name) does not have")
        }
        var names: [String] = []
        var values: [DatabaseValue] = []
        var updates: [String] = []
        for column in columns {
            if let text = event.columns[column.name] {
                guard let value = typed(text, type: column.type.uppercased(), keyColumn: false) else {
                    throw ContractError.malformedJSON(reason: "column \(column.name) of \(table.name)")
                }
                names.append(column.name)
                values.append(value)
                if !table.key.contains(column.name) { updates.append("\(column.name) = excluded.\(column.name)") }
            } else if !column.isNotNull {
                updates.append("\(column.name) = NULL")
            }
        }
        let insert = """
            INSERT \(displacingClashes ? "OR REPLACE " : "")INTO \(table.name) (\(names.joined(separator: ", ")))
            VALUES (\(Array(repeating: "?", count: names.count).joined(separator: ", ")))
            """
        let onConflict = updates.isEmpty ? "DO NOTHING" : "DO UPDATE SET \(updates.joined(separator: ", "))"
        let sql = displacingClashes ? insert : "\(insert) ON CONFLICT (\(table.key.joined(separator: ", "))) \(onConflict)"
        try db.cachedStatement(sql: sql).execute(arguments: StatementArguments(values))
    }

    /// Each column's declared type (`INTEGER`, `REAL`, `TEXT`, `BLOB`) of `table`.
    private static func columnTypes(of table: String, in db: GRDB.Database) throws -> [String: String] {
        var types: [String: String] = [:]
        for column in try db.columns(in: table) { types[column.name] = column.type.uppercased() }
        return types
    }

    /// `text` as a value of a column of `type`: a key's BLOB is hex, a column's BLOB base64.
    private static func typed(_ text: String, type: String?, keyColumn: Bool) -> DatabaseValue? {
        switch type {
        case "INTEGER": return Int64(text).map(\.databaseValue)
        case "REAL": return Double(text).map(\.databaseValue)
        case "BLOB": return (keyColumn ? [UInt8](hex: text).map { Data($0) } : Data(base64Encoded: text)).map(\.databaseValue)
        default: return text.databaseValue
        }
    }
}
