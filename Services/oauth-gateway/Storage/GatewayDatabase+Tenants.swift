import Contracts
import Foundation
import GRDB
import Messaging
import Storage
import Synchronization

extension GatewayDatabase {
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

    /// Whether the tenant exists and is not disabled; read on the calling thread, asked on every tenant request.
    func isEnabled(_ tenantId: String) throws -> Bool {
        try database.readNow { db in try Self.isEnabled(tenantId, in: db) }
    }

    static func isEnabled(_ tenantId: String, in db: GRDB.Database) throws -> Bool {
        try Int.fetchOne(
            try db.cachedStatement(sql: "SELECT 1 FROM tenants WHERE tenant_id = ? AND disabled_at IS NULL"),
            arguments: [tenantId]) != nil
    }

    /// Disables or enables a tenant; returns it as it is now.
    func setDisabled(_ tenantId: String, _ disabled: Bool, now: Date = Date()) async throws -> TenantRecord {
        try await database.write { db in
            try db.cachedStatement(sql: "UPDATE tenants SET disabled_at = ?, updated_at = ? WHERE tenant_id = ?")
                .execute(arguments: [disabled ? now.timeIntervalSince1970 : nil, now.timeIntervalSince1970, tenantId])
            guard db.changesCount == 1, let tenant = try Self.tenant(tenantId, in: db) else { throw TenantError.notFound }
            return tenant
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

    /// Sets the Atlassian scopes the operator allows the tenant beyond the required ones.
    func setAllowedScopes(of tenantId: String, _ scopes: [String], now: Date = Date()) async throws -> TenantRecord {
        try await database.write { db in
            guard var tenant = try Self.tenant(tenantId, in: db) else { throw TenantError.notFound }
            try db.cachedStatement(sql: "UPDATE tenants SET allowed_scopes = ?, updated_at = ? WHERE tenant_id = ?")
                .execute(arguments: [scopes.joined(separator: " "), now.timeIntervalSince1970, tenantId])
            tenant.allowedScopes = scopes
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

    static func tenant(_ tenantId: String, in db: GRDB.Database) throws -> TenantRecord? {
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
            deadlineDays: row["deadline_days"], appId: row["app_id"],
            disabled: (row["disabled_at"] as Double?) != nil,
            allowedScopes: (row["allowed_scopes"] as String).split(separator: " ").map(String.init))
    }

    static func app(_ appId: String, in db: GRDB.Database) throws -> AppRecord? {
        try Row.fetchOne(try db.cachedStatement(sql: "SELECT * FROM apps WHERE app_id = ?"),
            arguments: [appId]).map(appRecord)
    }

    static func appRecord(_ row: Row) -> AppRecord {
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
}
