import Contracts
import ErasureKit
import Foundation
import GRDB
import Messaging
import Storage
import Synchronization

/// A tenant as the gateway keeps it (the secret only as a hash).
struct TenantRecord: Sendable, Equatable {
    var tenantId: String
    var returnURLs: [String]
    var erasurePolicy: ErasurePolicy
    var deadlineDays: Int
    var appId: String?
}

/// An Atlassian OAuth app a tenant signs its users in with: its own, or the platform's shared one.
struct AppRecord: Sendable, Equatable {
    var appId: String
    /// The tenant that registered it; nil for the shared app.
    var tenantId: String?
    var shared: Bool
    var callbackURL: String
    var scopes: [String]
    var ownerConnectionId: String?
}

/// One user's grant for one app at one tenant. Tokens stay sealed here; ``TokenVault`` opens them.
struct ConnectionRecord: Sendable, Equatable {
    enum State: String, Sendable {
        /// Tokens present and believed valid.
        case active
        /// Atlassian answered `invalid_grant`: the user must sign in again.
        case reconnectRequired = "reconnect-required"
        /// An erasure removed the tokens.
        case erased
    }

    var connectionId: String
    var tenantId: String
    var appId: String
    /// nil after `disassociate`.
    var accountId: String?
    var userId: String
    var state: State
    var test: Bool
    var accessTokenSealed: Data?
    var accessExpiresAt: Date?
    var refreshTokenSealed: Data?
    var lastActiveAt: Date
    var leaseOwner: String?
    var leaseUntil: Date?
}

/// The gateway's SQLite file: tenants, apps, connections, the single use of sign-in states and codes, signing keys,
/// data keys, the suppression list and the outbox. Every method is one transaction; every event a change announces
/// is enqueued in the same transaction.
///
/// Sign-in states and codes are never stored (they are sealed values carried by the flow), only a random nonce per
/// use; client secrets are stored as SHA-256 hashes. So the file never holds a usable one-time value.
/// `secure_delete` is on, so erased tokens and accountIds are overwritten rather than left in free pages.
final class GatewayDatabase: Sendable {
    let database: SQLiteDatabase
    let topics: LetheTopics

    /// Batches the synced writes of concurrent sign-ins into one transaction (one disk sync).
    let signIns: GroupCommit

    init(path: String, topics: LetheTopics) throws {
        database = try SQLiteDatabase(path: path, migrations: Self.migrations, secureDelete: true)
        self.topics = topics
        signIns = GroupCommit(database: database)
    }

    var writer: DatabaseWriter { database.pool }

    static let migrations: [Migration] = [
        Migration("oauth-gateway.v1.schema") { db in
            try db.execute(sql: """
                CREATE TABLE data_keys (
                    id INTEGER PRIMARY KEY,
                    wrapped BLOB NOT NULL,
                    created_at REAL NOT NULL
                );
                CREATE TABLE signing_keys (
                    kid TEXT PRIMARY KEY,
                    private_key BLOB NOT NULL,
                    created_at REAL NOT NULL,
                    retired_at REAL
                );
                CREATE TABLE tenants (
                    tenant_id TEXT PRIMARY KEY,
                    secret_hash BLOB NOT NULL,
                    return_urls TEXT NOT NULL DEFAULT '[]',
                    erasure_policy TEXT NOT NULL DEFAULT 'delete',
                    deadline_days INTEGER NOT NULL DEFAULT 30,
                    app_id TEXT,
                    created_at REAL NOT NULL,
                    updated_at REAL NOT NULL
                );
                CREATE TABLE apps (
                    app_id TEXT PRIMARY KEY,
                    tenant_id TEXT,
                    shared INTEGER NOT NULL,
                    client_secret BLOB,
                    callback_url TEXT NOT NULL,
                    scopes TEXT NOT NULL,
                    owner_connection_id TEXT
                );
                CREATE TABLE connections (
                    connection_id TEXT PRIMARY KEY,
                    tenant_id TEXT NOT NULL,
                    app_id TEXT NOT NULL,
                    account_id TEXT,
                    user_id TEXT NOT NULL,
                    state TEXT NOT NULL,
                    test INTEGER NOT NULL,
                    access_token BLOB,
                    access_expires_at REAL,
                    refresh_token BLOB,
                    created_at REAL NOT NULL,
                    last_active_at REAL NOT NULL,
                    lease_owner TEXT,
                    lease_until REAL,
                    UNIQUE (tenant_id, app_id, account_id)
                );
                CREATE INDEX connections_by_app ON connections(app_id, state, last_active_at);
                CREATE INDEX connections_by_account ON connections(app_id, account_id);
                CREATE TABLE signin_states (
                    state_hash BLOB PRIMARY KEY,
                    tenant_id TEXT NOT NULL,
                    app_id TEXT NOT NULL,
                    redirect_uri TEXT NOT NULL,
                    tenant_state TEXT,
                    expires_at REAL NOT NULL
                ) WITHOUT ROWID;
                CREATE TABLE signin_codes (
                    code_hash BLOB PRIMARY KEY,
                    tenant_id TEXT NOT NULL,
                    connection_id TEXT NOT NULL,
                    payload BLOB NOT NULL,
                    expires_at REAL NOT NULL
                ) WITHOUT ROWID;
                CREATE TABLE suppressed_accounts (
                    account_id TEXT PRIMARY KEY,
                    erasure_id TEXT NOT NULL,
                    suppressed_at REAL NOT NULL
                ) WITHOUT ROWID;
                """)
        },
        // Sign-in states and codes became sealed values carried by the flow itself (SealedSignInState,
        // SealedSignInCode): only their single use is recorded, under a random nonce, until they expire.
        Migration("oauth-gateway.v2.signin-nonces") { db in
            try db.execute(sql: """
                DROP TABLE signin_states;
                DROP TABLE signin_codes;
                CREATE TABLE signin_nonces (
                    nonce BLOB PRIMARY KEY,
                    expires_at REAL NOT NULL
                ) WITHOUT ROWID;
                CREATE INDEX signin_nonces_by_expiry ON signin_nonces(expires_at);
                """)
        },
        // The suppression list keeps digests, not accountIds (see `SuppressionDigest`): a closed account's accountId
        // leaves the file with its erasure. Entries of older files are converted here; secure_delete zeroes the dropped
        // table's pages, and the service checkpoints its WAL at start.
        Migration("oauth-gateway.v3.suppression-digests") { db in
            let entries = try Row.fetchAll(db, sql: "SELECT account_id, erasure_id, suppressed_at FROM suppressed_accounts")
            try db.execute(sql: """
                CREATE TABLE suppressed_accounts_v3 (
                    account_digest TEXT PRIMARY KEY,
                    erasure_id TEXT NOT NULL,
                    suppressed_at REAL NOT NULL
                ) WITHOUT ROWID;
                """)
            for entry in entries {
                try db.execute(
                    sql: "INSERT OR IGNORE INTO suppressed_accounts_v3 VALUES (?, ?, ?)",
                    arguments: [SuppressionDigest.of(accountId: entry["account_id"]), entry["erasure_id"],
                                entry["suppressed_at"]])
            }
            try db.execute(sql: """
                DROP TABLE suppressed_accounts;
                ALTER TABLE suppressed_accounts_v3 RENAME TO suppressed_accounts;
                """)
        },
        // When each connection's current refresh token was issued: Atlassian's rotating tokens die after 90 idle
        // days (ATLASSIAN.md §1.5), so ConnectionKeepAlive refreshes those that get old. Older rows take their
        // creation time: at worst refreshed sooner than needed.
        Migration("oauth-gateway.v4.refresh-issued-at") { db in
            try db.execute(sql: """
                ALTER TABLE connections ADD COLUMN refreshed_at REAL;
                UPDATE connections SET refreshed_at = created_at;
                CREATE INDEX connections_by_refresh ON connections(state, refreshed_at);
                """)
        },
    ]

    // MARK: Tenants

    enum TenantError: Error, Equatable {
        case exists
        case notFound
        case appTaken
        case noSharedApp
    }

    func createTenant(_ tenantId: String, secretHash: Data, now: Date = Date()) async throws {
        let topics = self.topics
        try await database.write { db in
            guard try Self.tenant(tenantId, in: db) == nil else { throw TenantError.exists }
            try db.cachedStatement(sql: "INSERT INTO tenants (tenant_id, secret_hash, created_at, updated_at) VALUES (?, ?, ?, ?)")
                .execute(arguments: [tenantId, secretHash, now.timeIntervalSince1970, now.timeIntervalSince1970])
            try Self.announce(tenantId, topics: topics, in: db)
        }
    }

    func replaceSecret(of tenantId: String, secretHash: Data) async throws {
        try await database.write { db in
            try db.cachedStatement(sql: "UPDATE tenants SET secret_hash = ? WHERE tenant_id = ?")
                .execute(arguments: [secretHash, tenantId])
            guard db.changesCount == 1 else { throw TenantError.notFound }
        }
    }

    func secretHash(of tenantId: String) async throws -> Data? {
        try await database.read { db in
            try Data.fetchOne(try db.cachedStatement(sql: "SELECT secret_hash FROM tenants WHERE tenant_id = ?"),
                arguments: [tenantId])
        }
    }

    func tenant(_ tenantId: String) async throws -> TenantRecord? {
        try await database.read { db in try Self.tenant(tenantId, in: db) }
    }

    /// A page of tenants in creation order, each with its app, after the row `afterRow` (0: from the start), and the
    /// last row's id when there may be more.
    func tenants(afterRow: Int64, limit: Int) async throws -> (tenants: [(TenantRecord, AppRecord?)], lastRow: Int64?) {
        try await database.read { db in
            let rows = try Row.fetchAll(
                try db.cachedStatement(
                    sql: "SELECT rowid AS row_id, * FROM tenants WHERE rowid > ? ORDER BY rowid LIMIT ?"),
                arguments: [afterRow, limit])
            let tenants = try rows.map { row -> (TenantRecord, AppRecord?) in
                let tenant = try Self.tenantRecord(row)
                return (tenant, try tenant.appId.flatMap { try Self.app($0, in: db) })
            }
            return (tenants, rows.count == limit ? rows.last?["row_id"] : nil)
        }
    }

    /// Applies the given settings (nil keeps a value) and announces the tenant.
    func updateSettings(
        of tenantId: String, returnURLs: [String]?, policy: ErasurePolicy?, deadlineDays: Int?, now: Date = Date()
    ) async throws -> TenantRecord {
        let topics = self.topics
        return try await database.write { db in
            guard var tenant = try Self.tenant(tenantId, in: db) else { throw TenantError.notFound }
            if let returnURLs { tenant.returnURLs = returnURLs }
            if let policy { tenant.erasurePolicy = policy }
            if let deadlineDays { tenant.deadlineDays = deadlineDays }
            let urls = String(decoding: try JSONEncoder().encode(tenant.returnURLs), as: UTF8.self)
            try db.cachedStatement(sql: """
                    UPDATE tenants SET return_urls = ?, erasure_policy = ?, deadline_days = ?, updated_at = ?
                    WHERE tenant_id = ?
                    """)
                        .execute(arguments: [urls, tenant.erasurePolicy.rawValue, tenant.deadlineDays, now.timeIntervalSince1970, tenantId])
            try Self.announce(tenantId, topics: topics, in: db)
            return tenant
        }
    }

    /// Makes `app` the tenant's app: its own (registered here, its secret sealed) or the shared one (which must have
    /// been registered at start by ``registerSharedApp(_:)``).
    func setApp(of tenantId: String, app: AppRecord, sealedSecret: Data?, now: Date = Date()) async throws -> TenantRecord {
        let topics = self.topics
        return try await database.write { db in
            guard var tenant = try Self.tenant(tenantId, in: db) else { throw TenantError.notFound }
            if app.shared {
                guard try Self.app(app.appId, in: db)?.shared == true else { throw TenantError.noSharedApp }
            } else {
                if let existing = try Self.app(app.appId, in: db), existing.shared || existing.tenantId != tenantId {
                    throw TenantError.appTaken
                }
                try db.cachedStatement(sql: """
                        INSERT INTO apps (app_id, tenant_id, shared, client_secret, callback_url, scopes)
                        VALUES (?, ?, 0, ?, ?, ?)
                        ON CONFLICT (app_id) DO UPDATE SET client_secret = excluded.client_secret,
                            callback_url = excluded.callback_url, scopes = excluded.scopes
                        """)
                            .execute(arguments: [app.appId, tenantId, sealedSecret, app.callbackURL, app.scopes.joined(separator: " ")])
            }
            try db.cachedStatement(sql: "UPDATE tenants SET app_id = ?, updated_at = ? WHERE tenant_id = ?")
                .execute(arguments: [app.appId, now.timeIntervalSince1970, tenantId])
            tenant.appId = app.appId
            try Self.announce(tenantId, topics: topics, in: db)
            return tenant
        }
    }

    /// Registers (or updates) the platform's shared app from configuration. Its secret stays in configuration.
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

    func registerSharedApp(appId: String, callbackURL: String, scopes: [String]) async throws {
        try await database.write { db in
            if let existing = try Self.app(appId, in: db), !existing.shared {
                throw TenantError.appTaken
            }
            try db.cachedStatement(sql: """
                    INSERT INTO apps (app_id, tenant_id, shared, client_secret, callback_url, scopes)
                    VALUES (?, NULL, 1, NULL, ?, ?)
                    ON CONFLICT (app_id) DO UPDATE SET callback_url = excluded.callback_url, scopes = excluded.scopes
                    """).execute(arguments: [appId, callbackURL, scopes.joined(separator: " ")])
        }
    }

    func app(_ appId: String) async throws -> AppRecord? {
        try await database.read { db in try Self.app(appId, in: db) }
    }

    /// The app's sealed client secret (nil for the shared app, whose secret is configuration).
    func sealedSecret(of appId: String) async throws -> Data? {
        try await database.read { db in
            try Data.fetchOne(try db.cachedStatement(sql: "SELECT client_secret FROM apps WHERE app_id = ?"),
                arguments: [appId])
        }
    }

    private static func tenant(_ tenantId: String, in db: GRDB.Database) throws -> TenantRecord? {
        try Row.fetchOne(try db.cachedStatement(sql: "SELECT * FROM tenants WHERE tenant_id = ?"),
            arguments: [tenantId]).map(tenantRecord)
    }

    /// Decoded return URL lists by their stored JSON text: every sign-in start and callback reads the tenant, and
    /// JSONDecoder costs more than the SQLite read. Keyed by the text itself, so a changed list is a new entry.
    private static let returnURLCache = Mutex<[String: [String]]>([:])

    private static func returnURLs(_ json: String) throws -> [String] {
        if let known = returnURLCache.withLock({ $0[json] }) { return known }
        let urls = try JSONDecoder().decode([String].self, from: Data(json.utf8))
        returnURLCache.withLock { cache in
            if cache.count >= 10_000 { cache.removeAll() }
            cache[json] = urls
        }
        return urls
    }

    private static func tenantRecord(_ row: Row) throws -> TenantRecord {
        TenantRecord(
            tenantId: row["tenant_id"],
            returnURLs: try returnURLs(row["return_urls"]),
            erasurePolicy: ErasurePolicy(rawValue: row["erasure_policy"]) ?? .delete,
            deadlineDays: row["deadline_days"], appId: row["app_id"])
    }

    private static func app(_ appId: String, in db: GRDB.Database) throws -> AppRecord? {
        try Row.fetchOne(try db.cachedStatement(sql: "SELECT * FROM apps WHERE app_id = ?"),
            arguments: [appId]).map(appRecord)
    }

    private static func appRecord(_ row: Row) -> AppRecord {
        AppRecord(
            appId: row["app_id"], tenantId: row["tenant_id"], shared: row["shared"], callbackURL: row["callback_url"],
            scopes: (row["scopes"] as String).split(separator: " ").map(String.init),
            ownerConnectionId: row["owner_connection_id"])
    }

    /// Enqueues `TenantConfigured` with the tenant's current settings (never a secret).
    private static func announce(_ tenantId: String, topics: LetheTopics, in db: GRDB.Database) throws {
        guard let tenant = try tenant(tenantId, in: db) else { return }
        var apps: [TenantConfigured.App] = []
        if let appId = tenant.appId, let app = try app(appId, in: db) {
            apps.append(.init(appId: app.appId, shared: app.shared))
        }
        let event = TenantConfigured(
            tenantId: tenantId, erasurePolicy: tenant.erasurePolicy, apps: apps, deadlineDays: tenant.deadlineDays)
        try Outbox.enqueue(
            OutgoingMessage(event: event, topic: topics.tenants, key: tenantId, source: LetheTopics.gatewaySource), in: db)
    }

    // MARK: Sign-in nonces
    //
    // Pending sign-ins and sign-in codes are sealed values (SealedSignInState, SealedSignInCode); what is stored is
    // their single use, as a random nonce kept until the value expires. A state's nonce is recorded by the synced
    // transaction that completes the sign-in; other records are not synced (`writeUnsynced`): they survive a gateway
    // crash, and a power loss at worst lets a code be exchanged once more by the tenant it was issued to, or a refused
    // callback be refused again (the code at Atlassian is single-use whatever happens here).

    /// What the callback needs before it exchanges Atlassian's code, read together without leaving the calling thread.
    struct CallbackContext: Sendable {
        var returnURLs: [String]
        var app: AppRecord
        var sealedSecret: Data?
        var nonceUsed: Bool
    }

    /// The tenant's return URLs, the app and its sealed secret, and whether `nonce` was used; nil when the tenant or
    /// the app is gone. A synchronous read: SQLite answers this in microseconds, less than two thread hops cost.
    func callbackContext(tenantId: String, appId: String, nonce: Data) throws -> CallbackContext? {
        try database.pool.read { db -> CallbackContext? in
            guard let tenant = try Self.tenant(tenantId, in: db),
                  let row = try Row.fetchOne(
                    try db.cachedStatement(sql: "SELECT * FROM apps WHERE app_id = ?"), arguments: [appId])
            else { return nil }
            let used = try Int.fetchOne(
                try db.cachedStatement(sql: "SELECT 1 FROM signin_nonces WHERE nonce = ?"), arguments: [nonce]) != nil
            return CallbackContext(
                returnURLs: tenant.returnURLs, app: Self.appRecord(row), sealedSecret: row["client_secret"],
                nonceUsed: used)
        }
    }

    /// The tenant and its app, read without leaving the calling thread (the sign-in start's one read).
    func tenantAndAppNow(_ tenantId: String) throws -> (TenantRecord, AppRecord?)? {
        try database.pool.read { db in
            guard let tenant = try Self.tenant(tenantId, in: db) else { return nil }
            return (tenant, try tenant.appId.flatMap { try Self.app($0, in: db) })
        }
    }

    /// Records a sealed value's single use; false when it was already used.
    func recordNonce(_ nonce: Data, expiresAt: Date) async throws -> Bool {
        try await database.writeUnsynced { db in try Self.insertNonce(nonce, expiresAt: expiresAt, in: db) }
    }

    /// The exchange of a sign-in code: records its single use, if the connection it names still holds the account
    /// (an erasure since the sign-in makes the code worthless). False when used before or the connection is gone.
    func redeemCode(nonce: Data, expiresAt: Date, connectionId: String, accountId: String) async throws -> Bool {
        try await database.writeUnsynced { db in
            guard try Int.fetchOne(
                try db.cachedStatement(sql: """
                    SELECT 1 FROM connections WHERE connection_id = ? AND account_id = ? AND state = 'active'
                    """),
                arguments: [connectionId, accountId]) != nil
            else { return false }
            return try Self.insertNonce(nonce, expiresAt: expiresAt, in: db)
        }
    }

    private static func insertNonce(_ nonce: Data, expiresAt: Date, in db: GRDB.Database) throws -> Bool {
        try db.cachedStatement(
            sql: "INSERT INTO signin_nonces (nonce, expires_at) VALUES (?, ?) ON CONFLICT DO NOTHING")
            .execute(arguments: [nonce, expiresAt.timeIntervalSince1970])
        return db.changesCount == 1
    }

    /// Deletes the single-use records of expired states and codes (they can no longer be presented anyway), a
    /// bounded number per transaction so the writer is never held long.
    @discardableResult
    func pruneExpired(now: Date = Date()) async throws -> Int {
        var total = 0
        while true {
            let count = try await database.write { db in
                try db.cachedStatement(sql: """
                    DELETE FROM signin_nonces WHERE nonce IN
                        (SELECT nonce FROM signin_nonces WHERE expires_at <= ? ORDER BY expires_at LIMIT 2000)
                    """).execute(arguments: [now.timeIntervalSince1970])
                return db.changesCount
            }
            total += count
            if count < 2000 { return total }
        }
    }

    // MARK: Connections

    /// What a completed sign-in stores.
    struct SignInResult: Sendable {
        var connectionId: String
        var userId: String
    }

    func isSuppressed(accountId: String) async throws -> Bool {
        try await database.read { db in try Self.isSuppressed(accountId: accountId, in: db) }
    }

    private static func isSuppressed(accountId: String, in db: GRDB.Database) throws -> Bool {
        try Int.fetchOne(try db.cachedStatement(sql: "SELECT 1 FROM suppressed_accounts WHERE account_digest = ?"),
            arguments: [SuppressionDigest.of(accountId: accountId)]) != nil
    }

    /// Stores the connection of a completed sign-in (new, or the same user signing in again), its sealed tokens
    /// (sealed by the caller, which knows the connection id), the state's single use and the `ProfileFetched` for
    /// profile-store, in one durable transaction shared with concurrent sign-ins (``GroupCommit``). Throws
    /// ``SuppressedAccount`` for a suppressed account, ``StateUsed`` when the state's nonce was recorded meanwhile.
    func completeSignIn(
        tenantId: String, appId: String, accountId: String, test: Bool, profile: ProfileFetched, stateNonce: Data,
        stateExpiresAt: Date,
        seal: @escaping @Sendable (_ connectionId: String) throws -> (access: Data, refresh: Data?),
        accessExpiresAt: Date, now: Date = Date()
    ) async throws -> SignInResult {
        let topics = self.topics
        return try await signIns.write { db in
            guard try Self.insertNonce(stateNonce, expiresAt: stateExpiresAt, in: db) else { throw StateUsed() }
            if try Self.isSuppressed(accountId: accountId, in: db) { throw SuppressedAccount() }
            let existing = try Row.fetchOne(try db.cachedStatement(sql: "SELECT connection_id, user_id FROM connections WHERE tenant_id = ? AND app_id = ? AND account_id = ?"),
                arguments: [tenantId, appId, accountId])
            let connectionId: String = existing?["connection_id"] ?? UUID().uuidString.lowercased()
            // The same person through another app of the same tenant is the same platform user.
            let userId: String = try existing?["user_id"] ?? String.fetchOne(try db.cachedStatement(sql: "SELECT user_id FROM connections WHERE tenant_id = ? AND account_id = ? LIMIT 1"),
                arguments: [tenantId, accountId]) ?? UUID().uuidString.lowercased()
            let sealed = try seal(connectionId)
            let t = now.timeIntervalSince1970
            try db.cachedStatement(sql: """
                    INSERT INTO connections (connection_id, tenant_id, app_id, account_id, user_id, state, test,
                        access_token, access_expires_at, refresh_token, created_at, last_active_at, refreshed_at)
                    VALUES (?, ?, ?, ?, ?, 'active', ?, ?, ?, ?, ?, ?, ?)
                    ON CONFLICT (connection_id) DO UPDATE SET state = 'active', access_token = excluded.access_token,
                        access_expires_at = excluded.access_expires_at, refresh_token = excluded.refresh_token,
                        last_active_at = excluded.last_active_at, refreshed_at = excluded.refreshed_at,
                        lease_owner = NULL, lease_until = NULL
                    """).execute(arguments: [connectionId, tenantId, appId, accountId, userId, test, sealed.access,
                            accessExpiresAt.timeIntervalSince1970, sealed.refresh, t, t, t])
            // The app's first connection owns PDR reporting for it until an erasure removes it.
            try db.cachedStatement(sql: "UPDATE apps SET owner_connection_id = ? WHERE app_id = ? AND owner_connection_id IS NULL")
                .execute(arguments: [connectionId, appId])
            // Filed under the user the ID token names (`sub`), so every service keeps the profile under that user.
            var profile = profile
            profile.userId = userId
            try Self.enqueueProfile(profile, topics: topics, in: db)
            return SignInResult(connectionId: connectionId, userId: userId)
        }
    }

    /// The sign-in's state was used by another callback meanwhile (a replay that raced the first use).
    struct StateUsed: Error {}

    struct SuppressedAccount: Error {}

    func connection(_ connectionId: String) async throws -> ConnectionRecord? {
        try await database.read { db in try Self.connection(connectionId, in: db) }
    }

    /// The connections through which `tenantIds` (all tenants when empty) hold the account via the app.
    func connections(appId: String, accountId: String, tenantIds: [String]) async throws -> [ConnectionRecord] {
        try await database.read { db in
            try Row.fetchAll(try db.cachedStatement(sql: "SELECT * FROM connections WHERE app_id = ? AND account_id = ? ORDER BY tenant_id"),
                arguments: [appId, accountId]
            ).map(Self.connectionRecord).filter { tenantIds.isEmpty || tenantIds.contains($0.tenantId) }
        }
    }

    /// The app's usable connections for PDR reporting, best first: the owner, then the most recently active.
    func reportingCandidates(appId: String, excluding: Set<String>) async throws -> [ConnectionRecord] {
        try await database.read { db in
            let owner = try String.fetchOne(try db.cachedStatement(sql: "SELECT owner_connection_id FROM apps WHERE app_id = ?"),
                arguments: [appId])
            let rows = try Row.fetchAll(try db.cachedStatement(sql: "SELECT * FROM connections WHERE app_id = ? AND state = 'active' ORDER BY last_active_at DESC"),
                arguments: [appId]
            ).map(Self.connectionRecord).filter { !excluding.contains($0.connectionId) }
            return rows.filter { $0.connectionId == owner } + rows.filter { $0.connectionId != owner }
        }
    }

    /// Active connections whose refresh token was issued before `issuedBefore`, oldest first: what
    /// `ConnectionKeepAlive` refreshes before Atlassian's 90-day idle expiry.
    func connectionsToKeepAlive(issuedBefore: Date, limit: Int) async throws -> [String] {
        try await database.read { db in
            try String.fetchAll(db.cachedStatement(sql: """
                SELECT connection_id FROM connections
                WHERE state = 'active' AND refresh_token IS NOT NULL AND refreshed_at < ?
                ORDER BY refreshed_at LIMIT ?
                """), arguments: [issuedBefore.timeIntervalSince1970, limit])
        }
    }

    /// Takes the refresh lease of a connection for `duration` unless another holder's lease is still running.
    func acquireLease(_ connectionId: String, owner: String, duration: TimeInterval, now: Date = Date()) async throws -> Bool {
        try await database.write { db in
            try db.cachedStatement(sql: """
                    UPDATE connections SET lease_owner = ?, lease_until = ?
                    WHERE connection_id = ? AND (lease_until IS NULL OR lease_until <= ? OR lease_owner = ?)
                    """)
                        .execute(arguments: [owner, now.timeIntervalSince1970 + duration, connectionId, now.timeIntervalSince1970, owner])
            return db.changesCount == 1
        }
    }

    func releaseLease(_ connectionId: String, owner: String) async throws {
        try await database.write { db in
            try db.cachedStatement(sql: "UPDATE connections SET lease_owner = NULL, lease_until = NULL WHERE connection_id = ? AND lease_owner = ?")
                .execute(arguments: [connectionId, owner])
        }
    }

    /// Stores rotated tokens, if the caller still holds the lease (a lease that ran out may have passed to another
    /// process, whose tokens must not be overwritten).
    func storeRefreshed(
        _ connectionId: String, owner: String, access: Data, accessExpiresAt: Date, refresh: Data?, now: Date = Date()
    ) async throws -> Bool {
        try await database.write { db in
            try db.cachedStatement(sql: """
                    UPDATE connections SET access_token = ?, access_expires_at = ?,
                        refresh_token = COALESCE(?, refresh_token), last_active_at = ?,
                        refreshed_at = CASE WHEN ? IS NULL THEN refreshed_at ELSE ? END, lease_owner = NULL,
                        lease_until = NULL
                    WHERE connection_id = ? AND lease_owner = ? AND state = 'active'
                    """)
                        .execute(arguments: [access, accessExpiresAt.timeIntervalSince1970, refresh, now.timeIntervalSince1970,
                            refresh, now.timeIntervalSince1970, connectionId, owner])
            return db.changesCount == 1
        }
    }

    /// `invalid_grant`: the tokens are dead. Drops them, marks the connection `reconnect-required`, and asks for the
    /// stale profile to be erased (`ErasureRequested`, refresh-failed, scrub) — in one transaction, once.
    func markGrantLost(_ connectionId: String) async throws {
        let topics = self.topics
        try await database.write { db in
            guard let connection = try Self.connection(connectionId, in: db), connection.state == .active else { return }
            try db.cachedStatement(sql: """
                    UPDATE connections SET state = 'reconnect-required', access_token = NULL, access_expires_at = NULL,
                        refresh_token = NULL, lease_owner = NULL, lease_until = NULL
                    WHERE connection_id = ?
                    """).execute(arguments: [connectionId])
            guard let accountId = connection.accountId else { return }
            let key = try AccountKey(appId: connection.appId, accountId: accountId)
            let request = ErasureRequested(
                requestId: UUID().uuidString.lowercased(), appId: connection.appId, accountId: accountId,
                tenantId: connection.tenantId, cause: .refreshFailed, policy: .scrub)
            try Outbox.enqueue(
                OutgoingMessage(event: request, topic: topics.erasureRequests, key: key.rawValue, source: LetheTopics.gatewaySource),
                in: db)
        }
    }

    /// Publishes a re-fetched profile (through the outbox) and marks the connection active now — only while the
    /// connection is still active for that account. An erasure applied while `/me` was being fetched (any policy,
    /// any cause) wins: the profile is dropped, never published, so it cannot bring erased data back (issue 15).
    /// Returns whether it was published.
    @discardableResult
    func profileRefreshed(_ profile: ProfileFetched, connectionId: String, now: Date = Date()) async throws -> Bool {
        let topics = self.topics
        return try await database.write { db in
            try db.cachedStatement(sql: """
                UPDATE connections SET last_active_at = ? WHERE connection_id = ? AND state = 'active' AND account_id = ?
                """).execute(arguments: [now.timeIntervalSince1970, connectionId, profile.accountId])
            guard db.changesCount == 1 else { return false }
            try Self.enqueueProfile(profile, topics: topics, in: db)
            return true
        }
    }

    private static func enqueueProfile(_ profile: ProfileFetched, topics: LetheTopics, in db: GRDB.Database) throws {
        let key = try AccountKey(appId: profile.appId, accountId: profile.accountId)
        try Outbox.enqueue(
            OutgoingMessage(event: profile, topic: topics.profiles, key: key.rawValue, source: LetheTopics.gatewaySource), in: db)
    }

    private static func connection(_ connectionId: String, in db: GRDB.Database) throws -> ConnectionRecord? {
        try Row.fetchOne(try db.cachedStatement(sql: "SELECT * FROM connections WHERE connection_id = ?"),
            arguments: [connectionId])
            .map(connectionRecord)
    }

    private static func connectionRecord(_ row: Row) -> ConnectionRecord {
        func date(_ column: String) -> Date? { (row[column] as Double?).map(Date.init(timeIntervalSince1970:)) }
        return ConnectionRecord(
            connectionId: row["connection_id"], tenantId: row["tenant_id"], appId: row["app_id"],
            accountId: row["account_id"], userId: row["user_id"],
            state: ConnectionRecord.State(rawValue: row["state"]) ?? .erased, test: row["test"],
            accessTokenSealed: row["access_token"], accessExpiresAt: date("access_expires_at"),
            refreshTokenSealed: row["refresh_token"], lastActiveAt: date("last_active_at") ?? .distantPast,
            leaseOwner: row["lease_owner"], leaseUntil: date("lease_until"))
    }

    // MARK: Erasure

    static let erasureConsumer = "erasure"

    func recordedErasure(_ erasureId: String) async throws -> ErasureOutcome? {
        try await database.read { db in
            try ProcessedEvents.outcome(of: erasureId, consumer: Self.erasureConsumer, in: db).flatMap(ErasureOutcome.init)
        }
    }

    /// Applies the tenant's policy to its connection of the account, suppresses a closed account, and records the
    /// outcome under the erasureId — one transaction; a recorded erasure returns its outcome and changes nothing.
    func erase(_ command: EraseSubject, now: Date = Date()) async throws -> ErasureOutcome {
        let topics = self.topics
        let outcome: ErasureOutcome = try await database.write { db in
            if let recorded = try ProcessedEvents.outcome(of: command.erasureId, consumer: Self.erasureConsumer, in: db)
                .flatMap(ErasureOutcome.init) {
                return recorded
            }
            if command.cause == .atlassianClosed {
                try db.cachedStatement(sql: """
                        INSERT INTO suppressed_accounts (account_digest, erasure_id, suppressed_at) VALUES (?, ?, ?)
                        ON CONFLICT DO NOTHING
                        """).execute(arguments: [
                            SuppressionDigest.of(accountId: command.accountId), command.erasureId,
                            now.timeIntervalSince1970,
                        ])
            }
            let ids = try String.fetchAll(try db.cachedStatement(sql: "SELECT connection_id FROM connections WHERE tenant_id = ? AND app_id = ? AND account_id = ?"),
                arguments: [command.tenantId, command.appId, command.accountId])
            // Profiles of the account waiting in (or kept by) the outbox carry its name and email: they go too. The
            // outbox is keyed per app and account, not per tenant, so another tenant's pending profile of the same
            // account goes with it; its next sign-in or refresh publishes a fresh one.
            if let key = try? AccountKey(appId: command.appId, accountId: command.accountId) {
                try Outbox.discard(topic: topics.profiles, key: key.rawValue, in: db)
            }
            var outcome = ErasureOutcome.nothingHeld
            for id in ids {
                try db.cachedStatement(sql: "UPDATE apps SET owner_connection_id = NULL WHERE owner_connection_id = ?")
                    .execute(arguments: [id])
                let dropTokens = """
                    state = 'erased', access_token = NULL, access_expires_at = NULL, refresh_token = NULL,
                    lease_owner = NULL, lease_until = NULL
                    """
                switch command.policy {
                case .delete:
                    try db.cachedStatement(sql: "DELETE FROM connections WHERE connection_id = ?")
                        .execute(arguments: [id])
                    outcome = .erased
                case .scrub where command.cause == .atlassianClosed:
                    // A closed account's accountId goes under every policy (issue 15): the connection keeps its
                    // platform user; the suppression list has the digest.
                    try db.cachedStatement(sql: "UPDATE connections SET account_id = NULL, \(dropTokens) WHERE connection_id = ?")
                        .execute(arguments: [id])
                    outcome = .scrubbed
                case .scrub:
                    try db.cachedStatement(sql: "UPDATE connections SET \(dropTokens) WHERE connection_id = ?")
                        .execute(arguments: [id])
                    outcome = .scrubbed
                case .disassociate:
                    try db.cachedStatement(sql: "UPDATE connections SET account_id = NULL, \(dropTokens) WHERE connection_id = ?")
                        .execute(arguments: [id])
                    outcome = .disassociated
                }
            }
            try ProcessedEvents.record(
                command.erasureId, consumer: Self.erasureConsumer, outcome: outcome.rawValue, in: db)
            return outcome
        }
        return outcome
    }

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
}
