import Contracts
import ErasureKit
import Foundation
import GRDB
import Messaging
import Storage

extension GatewayDatabase {
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
        seal: @escaping @Sendable (_ connectionId: String) throws -> (access: Data, refresh: Data?, profile: Data),
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
                        access_token, access_expires_at, refresh_token, created_at, last_active_at, refreshed_at,
                        profile_digests)
                    VALUES (?, ?, ?, ?, ?, 'active', ?, ?, ?, ?, ?, ?, ?, ?)
                    ON CONFLICT (connection_id) DO UPDATE SET state = 'active', access_token = excluded.access_token,
                        access_expires_at = excluded.access_expires_at, refresh_token = excluded.refresh_token,
                        last_active_at = excluded.last_active_at, refreshed_at = excluded.refreshed_at,
                        profile_digests = excluded.profile_digests, lease_owner = NULL, lease_until = NULL
                    """).execute(arguments: [connectionId, tenantId, appId, accountId, userId, test, sealed.access,
                            accessExpiresAt.timeIntervalSince1970, sealed.refresh, t, t, t, sealed.profile])
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
    func profileRefreshed(
        _ profile: ProfileFetched, connectionId: String, digests: Data, changed: ProfileChange?, now: Date = Date()
    ) async throws -> Bool {
        let topics = self.topics
        return try await database.write { db in
            try db.cachedStatement(sql: """
                UPDATE connections SET last_active_at = ?, profile_digests = ?
                WHERE connection_id = ? AND state = 'active' AND account_id = ?
                """).execute(arguments: [now.timeIntervalSince1970, digests, connectionId, profile.accountId])
            guard db.changesCount == 1 else { return false }
            try Self.enqueueProfile(profile, topics: topics, in: db)
            if let changed, let userId = profile.userId {
                try Self.noteProfileChange(changed, tenantId: profile.tenantId, userId: userId, now: now, in: db)
            }
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
            refreshTokenSealed: row["refresh_token"], profileDigestsSealed: row["profile_digests"],
            lastActiveAt: date("last_active_at") ?? .distantPast,
            leaseOwner: row["lease_owner"], leaseUntil: date("lease_until"))
    }
}
