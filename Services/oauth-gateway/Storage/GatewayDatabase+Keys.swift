import Foundation
import GRDB

extension GatewayDatabase {
    // MARK: Signing keys

    struct StoredSigningKey: Sendable {
        var kid: String
        var sealedPrivateKey: Data
        var createdAt: Date
        var retiredAt: Date?
    }

    /// Signing keys still published: the active one (newest, not retired) and those retired after `publishedSince`.
    func signingKeys(publishedSince: Date) async throws -> [StoredSigningKey] {
        try await database.read { db in
            try Row.fetchAll(try db.cachedStatement(sql: "SELECT * FROM signing_keys WHERE retired_at IS NULL OR retired_at > ? ORDER BY created_at DESC"),
                arguments: [publishedSince.timeIntervalSince1970]
            ).map {
                StoredSigningKey(
                    kid: $0["kid"], sealedPrivateKey: $0["private_key"],
                    createdAt: Date(timeIntervalSince1970: $0["created_at"]),
                    retiredAt: ($0["retired_at"] as Double?).map(Date.init(timeIntervalSince1970:)))
            }
        }
    }

    /// Retires the active keys and stores a new one.
    func rotateSigningKey(kid: String, sealedPrivateKey: Data, now: Date = Date()) async throws {
        try await database.write { db in
            try db.cachedStatement(sql: "UPDATE signing_keys SET retired_at = ? WHERE retired_at IS NULL")
                .execute(arguments: [now.timeIntervalSince1970])
            try Self.insertSigningKey(kid: kid, sealedPrivateKey: sealedPrivateKey, now: now, in: db)
        }
    }

    /// Stores `kid` as the first signing key unless an active one exists already (in the same transaction): replicas
    /// starting together on a new file each make a key, and one of them is kept, for all of them.
    func addFirstSigningKey(kid: String, sealedPrivateKey: Data, now: Date = Date()) async throws {
        try await database.write { db in
            let active = try Int.fetchOne(db, sql: "SELECT count(*) FROM signing_keys WHERE retired_at IS NULL") ?? 0
            guard active == 0 else { return }
            try Self.insertSigningKey(kid: kid, sealedPrivateKey: sealedPrivateKey, now: now, in: db)
        }
    }

    private static func insertSigningKey(kid: String, sealedPrivateKey: Data, now: Date, in db: GRDB.Database) throws {
        try db.cachedStatement(sql: "INSERT INTO signing_keys (kid, private_key, created_at) VALUES (?, ?, ?)")
            .execute(arguments: [kid, sealedPrivateKey, now.timeIntervalSince1970])
    }

    /// Takes a key out of the published set at once: it is marked retired at the epoch, long before any
    /// `publishedSince`, so it is neither in the JWKS nor used to verify. Rotation only retires keys not yet retired,
    /// so nothing brings it back.
    func revokeSigningKey(kid: String) async throws {
        try await database.write { db in
            try db.cachedStatement(sql: "UPDATE signing_keys SET retired_at = 0 WHERE kid = ?").execute(arguments: [kid])
        }
    }

    // MARK: Data keys

    /// The data keys as stored (each wrapped under the master key), by id; on a new database `makeFirst` wraps the
    /// first one, stored as id 1 in the same transaction.
    func wrappedDataKeys(makeFirst: () throws -> Data) throws -> [(id: UInt32, wrapped: Data)] {
        try writer.write { db in
            if try Int.fetchOne(db, sql: "SELECT count(*) FROM data_keys") == 0 {
                try db.execute(
                    sql: "INSERT INTO data_keys (id, wrapped, created_at) VALUES (1, ?, ?)",
                    arguments: [try makeFirst(), Date().timeIntervalSince1970])
            }
            return try Row.fetchAll(db, sql: "SELECT id, wrapped FROM data_keys ORDER BY id").map {
                (UInt32(truncatingIfNeeded: $0["id"] as Int64), $0["wrapped"] as Data)
            }
        }
    }

    /// The data keys as stored, read at once (``SecretBox/reload()``, off the async pool).
    func wrappedDataKeysNow() throws -> [(id: UInt32, wrapped: Data)] {
        try database.readNow { db in
            try Row.fetchAll(db, sql: "SELECT id, wrapped FROM data_keys ORDER BY id").map {
                (UInt32(truncatingIfNeeded: $0["id"] as Int64), $0["wrapped"] as Data)
            }
        }
    }

    /// Stores data keys wrapped again (under a new master key).
    func replaceWrappedDataKeys(_ keys: [(UInt32, Data)]) throws {
        try writer.write { db in
            for (id, wrapped) in keys {
                try db.execute(sql: "UPDATE data_keys SET wrapped = ? WHERE id = ?", arguments: [wrapped, Int64(id)])
            }
        }
    }

    /// Adds a data key with the next id, wrapped by `wrap`; returns its id.
    func addDataKey(now: Date, wrap: (UInt32) throws -> Data) throws -> UInt32 {
        try writer.write { db in
            let next = UInt32(try Int64.fetchOne(db, sql: "SELECT max(id) FROM data_keys") ?? 0) + 1
            try db.execute(
                sql: "INSERT INTO data_keys (id, wrapped, created_at) VALUES (?, ?, ?)",
                arguments: [Int64(next), try wrap(next), now.timeIntervalSince1970])
            return next
        }
    }

    /// Each data key's id and creation time, oldest first.
    func dataKeyAges() async throws -> [(id: UInt32, createdAt: Date)] {
        try await database.read { db in
            try Row.fetchAll(db, sql: "SELECT id, created_at FROM data_keys ORDER BY id").map {
                (UInt32(truncatingIfNeeded: $0["id"] as Int64), Date(timeIntervalSince1970: $0["created_at"]))
            }
        }
    }

    /// Deletes data keys (nothing stored is sealed under them any more).
    func deleteDataKeys(_ ids: [UInt32]) async throws {
        try await database.write { db in
            for id in ids { try db.execute(sql: "DELETE FROM data_keys WHERE id = ?", arguments: [Int64(id)]) }
        }
    }

    // MARK: Values sealed at rest

    /// A stored column of sealed values: its table, the row's key column, and the context each value is bound to.
    struct SealedColumn: Sendable {
        var table: String
        var rowKey: String
        var column: String
        var context: @Sendable (String) -> String
    }

    /// Every column that holds values sealed under a data key (``SecretBox``). Whatever is added to this list is
    /// re-sealed by ``DataKeyRotation``; a sealed column missing from it would stop opening once its key is deleted —
    /// `DataKeyRotationTests` checks every BLOB column of the schema is either here or known not to be sealed.
    static let sealedColumns: [SealedColumn] = [
        SealedColumn(table: "apps", rowKey: "app_id", column: "client_secret") { "app:\($0):client_secret" },
        SealedColumn(table: "connections", rowKey: "connection_id", column: "access_token") {
            TokenVault.context($0, "access_token")
        },
        SealedColumn(table: "connections", rowKey: "connection_id", column: "refresh_token") {
            TokenVault.context($0, "refresh_token")
        },
        SealedColumn(table: "connections", rowKey: "connection_id", column: "profile_digests") {
            ProfileDigests.context($0)
        },
        SealedColumn(table: "signing_keys", rowKey: "kid", column: "private_key") { "signing_key:\($0)" },
        SealedColumn(table: "ssf_streams", rowKey: "stream_id", column: "authorization_header") {
            SecurityEvents.authorizationContext(streamId: $0)
        },
    ]

    /// Up to `limit` values of `column` sealed under another key than `keyId`: (row key, sealed value).
    func valuesSealed(notUnder keyId: UInt32, in column: SealedColumn, limit: Int) async throws -> [(String, Data)] {
        try await database.read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT \(column.rowKey) AS row_key, \(column.column) AS sealed FROM \(column.table)
                    WHERE \(column.column) IS NOT NULL AND substr(\(column.column), 2, 4) != ? LIMIT ?
                    """,
                arguments: [Self.keyIdBytes(keyId), limit]
            ).map { ($0["row_key"], $0["sealed"]) }
        }
    }

    /// How many values of `column` are sealed under another key than `keyId`.
    func countSealed(notUnder keyId: UInt32, in column: SealedColumn) async throws -> Int {
        try await database.read { db in
            try Int.fetchOne(
                db,
                sql: """
                    SELECT count(*) FROM \(column.table)
                    WHERE \(column.column) IS NOT NULL AND substr(\(column.column), 2, 4) != ?
                    """,
                arguments: [Self.keyIdBytes(keyId)]) ?? 0
        }
    }

    /// Replaces `old` with `new` in one row, unless the row changed meanwhile (a token refreshed since it was read):
    /// then the next round takes the new value. Returns whether it was replaced.
    func replaceSealed(in column: SealedColumn, rowKey: String, old: Data, new: Data) async throws -> Bool {
        try await database.write { db in
            try db.execute(
                sql: "UPDATE \(column.table) SET \(column.column) = ? WHERE \(column.rowKey) = ? AND \(column.column) = ?",
                arguments: [new, rowKey, old])
            return db.changesCount == 1
        }
    }

    private static func keyIdBytes(_ id: UInt32) -> Data { withUnsafeBytes(of: id.bigEndian) { Data($0) } }
}
