import Foundation
import GRDB

extension GatewayDatabase {
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
        var tenantDisabled: Bool
    }

    /// The tenant's return URLs (or, for a sign-in of one of its public OpenID clients, that client's redirect URIs),
    /// the app and its sealed secret, and whether `nonce` was used; nil when the tenant, the app or the client is
    /// gone. A synchronous read: SQLite answers this in microseconds, less than two thread hops cost.
    func callbackContext(tenantId: String, appId: String, nonce: Data, clientId: String? = nil) throws
        -> CallbackContext?
    {
        try database.readNow { db -> CallbackContext? in
            guard var tenant = try Self.tenant(tenantId, in: db),
                  let row = try Row.fetchOne(
                    try db.cachedStatement(sql: "SELECT * FROM apps WHERE app_id = ?"), arguments: [appId])
            else { return nil }
            if let clientId, clientId != tenantId {
                guard let client = try Self.openIDClient(clientId, in: db), client.tenant.tenantId == tenantId else {
                    return nil
                }
                tenant.returnURLs = client.redirectURIs
            }
            let used = try Int.fetchOne(
                try db.cachedStatement(sql: "SELECT 1 FROM signin_nonces WHERE nonce = ?"), arguments: [nonce]) != nil
            return CallbackContext(
                returnURLs: tenant.returnURLs, app: Self.appRecord(row), sealedSecret: row["client_secret"],
                nonceUsed: used, tenantDisabled: tenant.disabled)
        }
    }

    /// The tenant and its app, read without leaving the calling thread (the sign-in start's one read).
    func tenantAndAppNow(_ tenantId: String) throws -> (TenantRecord, AppRecord?)? {
        try database.readNow { db in
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
            guard try Self.isActive(connectionId: connectionId, accountId: accountId, in: db) else { return false }
            return try Self.insertNonce(nonce, expiresAt: expiresAt, in: db)
        }
    }

    static func insertNonce(_ nonce: Data, expiresAt: Date, in db: GRDB.Database) throws -> Bool {
        try db.cachedStatement(
            sql: "INSERT INTO signin_nonces (nonce, expires_at) VALUES (?, ?) ON CONFLICT DO NOTHING")
            .execute(arguments: [nonce, expiresAt.timeIntervalSince1970])
        return db.changesCount == 1
    }

    /// Deletes the single-use records of expired states and codes and the revocations of expired access tokens (none
    /// can be presented any more), a bounded number per transaction so the writer is never held long.
    @discardableResult
    func pruneExpired(now: Date = Date()) async throws -> Int {
        var total = 0
        for (table, key) in [("signin_nonces", "nonce"), ("revoked_access_tokens", "token_id")] {
            while true {
                let count = try await database.write { db in
                    try db.cachedStatement(sql: """
                        DELETE FROM \(table) WHERE \(key) IN
                            (SELECT \(key) FROM \(table) WHERE expires_at <= ? ORDER BY expires_at LIMIT 2000)
                        """).execute(arguments: [now.timeIntervalSince1970])
                    return db.changesCount
                }
                total += count
                if count < 2000 { break }
            }
        }
        return total
    }
}
