import AtlassianClient
import Contracts
import Crypto
import Foundation
import GRDB
import Testing
import TestSupport

@testable import oauth_gateway

/// Data keys and the master key rotate over a real SQLite file, with two `SecretBox`es on it standing for two replicas.
@Suite("Data key and master key rotation")
struct DataKeyRotationTests {
    static func randomKey() -> Data { SymmetricKey(size: .bits256).withUnsafeBytes { Data($0) } }

    /// A gateway file holding one value in every sealed column: an app's client secret, a connection's access and
    /// refresh tokens, a signing key, a Shared Signals stream's push authorization.
    static func populatedDatabase(_ directory: TemporaryDirectory, master: Data) async throws -> GatewayDatabase {
        let database = try GatewayDatabase(
            path: directory.file("oauth-gateway.sqlite"), topics: LetheTopics(namespace: uniqueName("keys")))
        let box = try SecretBox(masterKey: master, database: database)
        try await TokenSigner(database: database, box: box, retention: 3600).load()
        try await database.writer.write { db in
            try db.execute(
                sql: """
                    INSERT INTO apps (app_id, tenant_id, shared, client_secret, callback_url, scopes)
                    VALUES ('acme-app', 'acme', 0, ?, 'https://gw.example/cb', '')
                    """,
                arguments: [try box.seal("app-secret", context: "app:acme-app:client_secret")])
            try db.execute(
                sql: """
                    INSERT INTO connections (connection_id, tenant_id, app_id, account_id, user_id, state, test,
                        access_token, refresh_token, profile_digests, created_at, last_active_at)
                    VALUES ('c1', 'acme', 'acme-app', 'a1', 'u1', 'active', 0, ?, ?, ?, 0, 0)
                    """,
                arguments: [
                    try box.seal("access-1", context: TokenVault.context("c1", "access_token")),
                    try box.seal("refresh-1", context: TokenVault.context("c1", "refresh_token")),
                    try ProfileDigests(AtlassianProfile(accountId: "a1", name: "A")).sealed(with: box, connectionId: "c1"),
                ])
            try db.execute(
                sql: """
                    INSERT INTO ssf_streams (stream_id, tenant_id, delivery_method, endpoint_url, authorization_header,
                        events_requested, status, created_at, updated_at)
                    VALUES ('s1', 'acme', 'urn:ietf:rfc:8935', 'https://r.example/', ?, '', 'enabled', 0, 0)
                    """,
                arguments: [try box.seal("Bearer r", context: SecurityEvents.authorizationContext(streamId: "s1"))])
        }
        return database
    }

    /// Every stored sealed value, opened: (column, row, plaintext or nil when it does not open), and its key id.
    static func storedValues(_ database: GatewayDatabase, box: SecretBox) async throws -> [(String, String?, UInt32?)] {
        var values: [(String, String?, UInt32?)] = []
        for column in GatewayDatabase.sealedColumns {
            let rows = try await database.valuesSealed(notUnder: 0, in: column, limit: 100)
            #expect(!rows.isEmpty, "the test stores nothing in \(column.table).\(column.column)")
            for (rowKey, sealed) in rows {
                let plaintext = try? box.openString(sealed, context: column.context(rowKey))
                values.append(("\(column.table).\(column.column)", plaintext, SecretBox.keyId(of: sealed)))
            }
        }
        return values
    }

    @Test("""
        a rotation seals new values under the new key at once, also on the other replica after it meets one; a round \
        re-seals every stored value; the old key is deleted only an hour after, and what it alone sealed is gone
        """)
    func dataKeyRotation() async throws {
        let directory = try TemporaryDirectory("data-keys")
        let master = Self.randomKey()
        let database = try await Self.populatedDatabase(directory, master: master)
        let replicaA = try SecretBox(masterKey: master, database: database)
        let replicaB = try SecretBox(masterKey: master, database: database)
        let before = try await Self.storedValues(database, box: replicaA)
        #expect(before.allSatisfy { $0.1 != nil && $0.2 == 1 })
        let transient = try replicaA.seal("a sign-in state", context: "state")  // lives minutes, in a URL

        #expect(try replicaA.rotate(now: Date()) == 2)
        let sealedByA = try replicaA.seal("new", context: "x")
        #expect(SecretBox.keyId(of: sealedByA) == 2)
        #expect(try replicaB.openString(sealedByA, context: "x") == "new", "B reads the new key when it meets it")
        #expect(replicaB.activeKeyId == 2)

        let rotation = DataKeyRotation(database: database, box: replicaB, logger: makeTestLogger("data-keys"))
        let first = try await rotation.round(now: Date())
        #expect(first == .init(resealed: before.count, pending: 0, deleted: []))
        let after = try await Self.storedValues(database, box: replicaA)
        #expect(after.map(\.0) == before.map(\.0) && after.map(\.1) == before.map(\.1), "same plaintexts")
        #expect(after.allSatisfy { $0.2 == 2 })
        #expect(try replicaA.openString(transient, context: "state") == "a sign-in state", "within the grace")
        #expect(try await database.dataKeyAges().map(\.id) == [1, 2])

        let later = try await rotation.round(now: Date().addingTimeInterval(3601))
        #expect(later == .init(resealed: 0, pending: 0, deleted: [1]))
        try replicaA.reload()
        #expect(replicaA.keyIds == [2] && replicaB.keyIds == [2])
        #expect(throws: SecretBox.Unreadable.self) { try replicaA.open(transient, context: "state") }
        #expect(try await Self.storedValues(database, box: replicaA).allSatisfy { $0.1 != nil })
    }

    @Test("""
        a stored value that does not open keeps its key from being deleted; a value changed while it was re-sealed \
        is taken on the next round
        """)
    func unreadableAndConcurrentValues() async throws {
        let directory = try TemporaryDirectory("data-keys")
        let master = Self.randomKey()
        let database = try await Self.populatedDatabase(directory, master: master)
        let box = try SecretBox(masterKey: master, database: database)
        let old = try #require(try await database.valuesSealed(notUnder: 0, in: GatewayDatabase.sealedColumns[1], limit: 1).first)
        try box.rotate()
        // Another replica refreshed the token meanwhile: the compare-and-swap leaves the row alone.
        let refreshed = try box.seal("access-2", context: TokenVault.context("c1", "access_token"))
        try await database.writer.write { db in
            try db.execute(sql: "UPDATE connections SET access_token = ? WHERE connection_id = 'c1'", arguments: [refreshed])
        }
        #expect(try await !database.replaceSealed(
            in: GatewayDatabase.sealedColumns[1], rowKey: old.0, old: old.1, new: refreshed))

        // A value copied into another row (its context no longer matches) does not open: it stays pending.
        let secret = try #require(try await database.valuesSealed(notUnder: 0, in: GatewayDatabase.sealedColumns[0], limit: 1).first)
        try await database.writer.write { db in
            try db.execute(
                sql: """
                    INSERT INTO apps (app_id, tenant_id, shared, client_secret, callback_url, scopes)
                    VALUES ('copied-app', 'acme', 0, ?, 'https://gw.example/cb', '')
                    """,
                arguments: [secret.1])
        }
        let rotation = DataKeyRotation(database: database, box: box, logger: makeTestLogger("data-keys"))
        let round = try await rotation.round(now: Date().addingTimeInterval(7200))
        #expect(round.pending == 1 && round.deleted.isEmpty)
        #expect(box.keyIds == [1, 2])
    }

    @Test("""
        the master key changes with LETHE_MASTER_KEY_PREVIOUS for one start: the data keys are wrapped again, the old \
        master key no longer opens them, and without the previous key a wrong master key is refused at start
        """)
    func masterKeyChange() async throws {
        let directory = try TemporaryDirectory("data-keys")
        let (oldMaster, newMaster) = (Self.randomKey(), Self.randomKey())
        let database = try await Self.populatedDatabase(directory, master: oldMaster)
        #expect(throws: SecretBox.WrongMasterKey.self) { _ = try SecretBox(masterKey: newMaster, database: database) }
        let box = try SecretBox(masterKey: newMaster, previousMasterKey: oldMaster, database: database)
        #expect(try await Self.storedValues(database, box: box).allSatisfy { $0.1 != nil })
        let restarted = try SecretBox(masterKey: newMaster, database: database)
        #expect(try await Self.storedValues(database, box: restarted).allSatisfy { $0.1 != nil })
        #expect(throws: SecretBox.WrongMasterKey.self) { _ = try SecretBox(masterKey: oldMaster, database: database) }
    }

    @Test("every BLOB column of the schema is a sealed column DataKeyRotation re-seals, or known not to be sealed")
    func everySealedColumnIsListed() async throws {
        let directory = try TemporaryDirectory("data-keys")
        let database = try await Self.populatedDatabase(directory, master: Self.randomKey())
        // Hashes, nonces and ids; the data keys themselves (wrapped under the master key, not a data key); the outbox
        // (events on their way to Kafka, deleted once sent).
        let notSealed: Set = [
            "data_keys.wrapped", "tenants.secret_hash", "revoked_access_tokens.token_id", "signin_nonces.nonce",
            "lethe_outbox.key", "lethe_outbox.value", "lethe_outbox.headers",
            // Security events' claims (signed at delivery; an opaque user id, no personal data) and a digest.
            "ssf_events.claims", "ssf_erasure_subjects.subject_digest",
        ]
        let sealed = Set(GatewayDatabase.sealedColumns.map { "\($0.table).\($0.column)" })
        let blobs = try await database.writer.read { db in
            try String.fetchAll(db, sql: "SELECT name FROM sqlite_master WHERE type = 'table'").flatMap { table in
                try Row.fetchAll(db, sql: "PRAGMA table_info(\(table))")
                    .filter { ($0["type"] as String).uppercased() == "BLOB" }
                    .map { "\(table).\($0["name"] as String)" }
            }
        }
        #expect(Set(blobs).subtracting(notSealed) == sealed, "\(blobs)")
    }
}
