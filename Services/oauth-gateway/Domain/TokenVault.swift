import AtlassianClient
import Contracts
import Foundation
import Logging
import Metrics

/// A usable Atlassian access token of one connection.
struct AccessGrant: Sendable {
    var connectionId: String
    var accessToken: String
    var expiresAt: Date
}

/// Why the vault has no token for a connection.
enum VaultError: Error, Equatable {
    /// The grant is gone (`invalid_grant`, or erased): the user must sign in again.
    case noGrant
    /// Atlassian or the database failed for now; try again later.
    case unavailable(String)
}

/// The token vault: hands out valid access tokens and refreshes them.
///
/// Atlassian rotates refresh tokens and revokes the whole grant when an old one is reused after a short leeway
/// (ATLASSIAN.md §1.5), so two refreshes of one connection must never race. Within this process, concurrent callers
/// for a connection share one refresh (single-flight); across processes and restarts, the refresh runs under a lease
/// stored on the connection row, and a caller that finds the lease taken waits for the holder's tokens instead of
/// refreshing itself. A lease outlives a crash only until it times out.
actor TokenVault {
    private let database: GatewayDatabase
    private let box: SecretBox
    private let atlassian: any AtlassianAPI
    private let credentials: @Sendable (String) async throws -> AtlassianAppCredentials
    private let logger: Logger
    /// Identifies this process's leases.
    private let leaseOwner = UUID().uuidString.lowercased()
    private let leaseDuration: TimeInterval
    private var inFlight: [String: Task<AccessGrant, any Error>] = [:]
    private let refreshes = Counter(label: "lethe_gateway_token_refreshes_total")
    private let lostGrants = Counter(label: "lethe_gateway_grants_lost_total")

    /// - Parameter credentials: the app's credentials by app id (opens the sealed secret, or the shared app's).
    init(
        database: GatewayDatabase, box: SecretBox, atlassian: any AtlassianAPI,
        credentials: @escaping @Sendable (String) async throws -> AtlassianAppCredentials, logger: Logger,
        leaseDuration: TimeInterval = 30
    ) {
        self.database = database
        self.box = box
        self.atlassian = atlassian
        self.credentials = credentials
        self.logger = logger
        self.leaseDuration = leaseDuration
    }

    /// A token of the connection valid for at least `minimumValidity`, refreshed first when needed.
    /// - Parameter rejected: a token Atlassian just refused (401) although it looked valid: it is refreshed unless
    ///   the stored token is already another one, so many callers that saw the same 401 cause one refresh.
    func accessToken(connectionId: String, minimumValidity: TimeInterval = 120, rejected: String? = nil)
        async throws(VaultError) -> AccessGrant
    {
        if let grant = try await storedGrant(connectionId, minimumValidity: minimumValidity),
           grant.accessToken != rejected {
            return grant
        }
        if let running = inFlight[connectionId] { return try await Self.value(of: running) }
        let task = Task {
            try await self.refreshUnderLease(connectionId, minimumValidity: minimumValidity, rejected: rejected)
        }
        inFlight[connectionId] = task
        defer { inFlight[connectionId] = nil }
        return try await Self.value(of: task)
    }

    /// Refreshes the connection's tokens whatever the stored access token's validity (`ConnectionKeepAlive`), under the
    /// same single-flight and lease as every other refresh.
    func refreshNow(connectionId: String) async throws(VaultError) -> AccessGrant {
        // Longer than any access token lives: the stored one never qualifies, so a refresh always happens.
        try await accessToken(connectionId: connectionId, minimumValidity: 100 * 365 * 86_400)
    }

    private static func value(of task: Task<AccessGrant, any Error>) async throws(VaultError) -> AccessGrant {
        do {
            return try await task.value
        } catch let error as VaultError {
            throw error
        } catch {
            throw .unavailable("\(type(of: error))")
        }
    }

    /// The stored access token, if the connection is active and it is valid long enough; nil when a refresh is due.
    private func storedGrant(_ connectionId: String, minimumValidity: TimeInterval) async throws(VaultError) -> AccessGrant? {
        let connection: ConnectionRecord?
        do {
            connection = try await database.connection(connectionId)
        } catch {
            throw .unavailable("database")
        }
        guard let connection, connection.state == .active else { throw .noGrant }
        guard let sealed = connection.accessTokenSealed, let expiresAt = connection.accessExpiresAt,
              expiresAt.timeIntervalSinceNow > minimumValidity
        else { return nil }
        do {
            let token = try box.openString(sealed, context: Self.context(connectionId, "access_token"))
            return AccessGrant(connectionId: connectionId, accessToken: token, expiresAt: expiresAt)
        } catch {
            throw .unavailable("sealed token unreadable")
        }
    }

    private func refreshUnderLease(_ connectionId: String, minimumValidity: TimeInterval, rejected: String?)
        async throws -> AccessGrant
    {
        func usable() async throws -> AccessGrant? {
            guard let grant = try await storedGrant(connectionId, minimumValidity: minimumValidity),
                  grant.accessToken != rejected
            else { return nil }
            return grant
        }
        let deadline = Date().addingTimeInterval(leaseDuration + 5)
        while true {
            if try await database.acquireLease(connectionId, owner: leaseOwner, duration: leaseDuration) {
                // Another process may have refreshed between our read and the lease.
                if let grant = try await usable() {
                    try await database.releaseLease(connectionId, owner: leaseOwner)
                    return grant
                }
                return try await refresh(connectionId)
            }
            // Someone else is refreshing: wait for their tokens.
            try await Task.sleep(for: .milliseconds(100))
            if let grant = try await usable() { return grant }
            guard Date() < deadline else { throw VaultError.unavailable("refresh lease held elsewhere") }
        }
    }

    /// Refreshes while holding the lease. `invalid_grant` loses the grant for good (``GatewayDatabase/markGrantLost``);
    /// any other failure releases the lease so a later call tries again.
    private func refresh(_ connectionId: String) async throws -> AccessGrant {
        do {
            guard let connection = try await database.connection(connectionId), connection.state == .active,
                  let sealedRefresh = connection.refreshTokenSealed
            else {
                try await database.releaseLease(connectionId, owner: leaseOwner)
                throw VaultError.noGrant
            }
            let refreshToken = try box.openString(sealedRefresh, context: Self.context(connectionId, "refresh_token"))
            let app = try await credentials(connection.appId)
            refreshes.increment()
            let response = try await atlassian.refresh(refreshToken: refreshToken, credentials: app)
            let expiresAt = Date().addingTimeInterval(TimeInterval(response.expiresIn))
            let stored = try await database.storeRefreshed(
                connectionId, owner: leaseOwner,
                access: box.seal(response.accessToken, context: Self.context(connectionId, "access_token")),
                accessExpiresAt: expiresAt,
                refresh: try response.refreshToken.map {
                    try box.seal($0, context: Self.context(connectionId, "refresh_token"))
                })
            if !stored {
                logger.warning("refresh lease expired before the tokens were stored", metadata: ["connection": "\(connectionId)"])
            }
            return AccessGrant(connectionId: connectionId, accessToken: response.accessToken, expiresAt: expiresAt)
        } catch AtlassianError.oauth(.invalidGrant, _, _) {
            lostGrants.increment()
            logger.notice("grant lost (invalid_grant); connection needs a new sign-in", metadata: ["connection": "\(connectionId)"])
            try await database.markGrantLost(connectionId)
            throw VaultError.noGrant
        } catch let error as VaultError {
            throw error
        } catch {
            try? await database.releaseLease(connectionId, owner: leaseOwner)
            let kind = (error as? AtlassianError).map { "\($0)" } ?? "\(type(of: error))"
            logger.warning("token refresh failed", metadata: ["connection": "\(connectionId)", "error": "\(kind)"])
            throw VaultError.unavailable(kind)
        }
    }

    /// The associated data a connection's sealed token is bound to.
    static func context(_ connectionId: String, _ column: String) -> String { "connection:\(connectionId):\(column)" }
}
