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
            try db.cachedStatement(sql: "INSERT INTO signing_keys (kid, private_key, created_at) VALUES (?, ?, ?)")
                .execute(arguments: [kid, sealedPrivateKey, now.timeIntervalSince1970])
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
}
