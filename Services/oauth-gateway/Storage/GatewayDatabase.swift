import Contracts
import Foundation
import GRDB
import Storage

/// A tenant as the gateway keeps it (the secret only as a hash).
struct TenantRecord: Sendable, Equatable {
    var tenantId: String
    var returnURLs: [String]
    var erasurePolicy: ErasurePolicy
    var deadlineDays: Int
    var appId: String?
    /// Disabled by the operator: no sign-in, no token, no API call until enabled again.
    var disabled = false
    /// Atlassian scopes the operator lets this tenant request beyond the required ones (with `GATEWAY_ALLOWED_SCOPES`).
    var allowedScopes: [String] = []
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
    /// ``ProfileDigests`` of the profile last published, sealed; nil for a sign-in from before they were kept.
    var profileDigestsSealed: Data?
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
}
