import Foundation
import GRDB

extension GatewayDatabase {
    // MARK: OpenID Connect codes and access tokens
    //
    // Codes and access tokens are sealed values (SealedAuthorizationCode, SealedAccessToken); what is stored is a
    // code's single use (in `signin_nonces`, like a sign-in code's) and the revocation of the access token a replayed
    // code had issued. Unsynced writes, for the reason given in GatewayDatabase+SignIn.

    enum CodeRedemption: Equatable {
        case redeemed
        /// Presented before: the access token issued then is revoked now.
        case replayed
        case expired
        /// An erasure removed the connection since the sign-in.
        case connectionGone
    }

    /// Redeems an authorization code: records its use until `revokeUntil` (the latest its access token can expire),
    /// so a replay within that time — even of an expired code — is known and revokes that token (RFC 9700 §4.5.3).
    func redeemAuthorizationCode(
        nonce: Data, connectionId: String, accountId: String, usableUntil: Date, revokeUntil: Date, now: Date = Date()
    ) async throws -> CodeRedemption {
        try await database.writeUnsynced { db in
            let used = try Int.fetchOne(
                try db.cachedStatement(sql: "SELECT 1 FROM signin_nonces WHERE nonce = ?"), arguments: [nonce]) != nil
            if used {
                try db.cachedStatement(sql: """
                    INSERT INTO revoked_access_tokens (token_id, expires_at) VALUES (?, ?) ON CONFLICT DO NOTHING
                    """).execute(arguments: [nonce, revokeUntil.timeIntervalSince1970])
                return .replayed
            }
            guard now < usableUntil else { return .expired }
            guard try Self.isActive(connectionId: connectionId, accountId: accountId, in: db) else {
                return .connectionGone
            }
            _ = try Self.insertNonce(nonce, expiresAt: revokeUntil, in: db)
            return .redeemed
        }
    }

    /// Whether an access token may still be honoured: not revoked, its tenant not disabled, and its connection still
    /// holds the account. A synchronous read (microseconds), made on every userinfo request.
    func accessTokenUsable(tokenId: Data, tenantId: String, connectionId: String, accountId: String) throws -> Bool {
        try database.readNow { db in
            let revoked = try Int.fetchOne(
                try db.cachedStatement(sql: "SELECT 1 FROM revoked_access_tokens WHERE token_id = ?"),
                arguments: [tokenId]) != nil
            return try !revoked && Self.isEnabled(tenantId, in: db)
                && Self.isActive(connectionId: connectionId, accountId: accountId, in: db)
        }
    }

    static func isActive(connectionId: String, accountId: String, in db: GRDB.Database) throws -> Bool {
        try Int.fetchOne(
            try db.cachedStatement(sql: """
                SELECT 1 FROM connections WHERE connection_id = ? AND account_id = ? AND state = 'active'
                """),
            arguments: [connectionId, accountId]) != nil
    }
}
