import Foundation
import Logging
import Metrics
import ServiceLifecycle

/// `GATEWAY_KEEPALIVE_*`: when a connection's refresh token is refreshed for its own sake, and how many at a time.
struct KeepAliveSettings: Sendable, Equatable {
    /// Age of a refresh token after which it is refreshed (default 30 days: 60 days of margin before Atlassian's
    /// 90-day idle expiry for an outage of Atlassian or of the gateway).
    var after: TimeInterval = 30 * 86_400
    /// Most connections refreshed per round (a minute): a burst of sign-ins comes due together, and is spread over
    /// the following minutes instead of hitting Atlassian's token endpoint at once.
    var batch = 20
    /// Pause between rounds.
    var interval: Duration = .seconds(60)
}

/// Keeps every live connection usable (issue 15): Atlassian's rotating refresh tokens expire after 90 days without
/// use (ATLASSIAN.md §1.5), and only the connections the reporter or an `updated` refresh happen to use get refreshed
/// otherwise — so every other user's connection would die, and with them the app's fallbacks for PDR reporting (§3.3).
/// Each round refreshes, oldest first, the active connections whose refresh token is older than `after`. A grant
/// found gone (`invalid_grant`: revoked, or past Atlassian's 365-day absolute limit) takes the vault's existing path:
/// the connection needs a new sign-in and its stale profile is erased (`ErasureRequested`, refresh-failed).
struct ConnectionKeepAlive: Service {
    let database: GatewayDatabase
    let vault: TokenVault
    let settings: KeepAliveSettings
    let logger: Logger
    private let refreshed = Counter(label: "lethe_gateway_keepalive_refreshes_total")
    private let failed = Counter(label: "lethe_gateway_keepalive_failures_total")

    init(database: GatewayDatabase, vault: TokenVault, settings: KeepAliveSettings, logger: Logger) {
        self.database = database
        self.vault = vault
        self.settings = settings
        self.logger = logger
    }

    func run() async throws {
        while !Task.isShuttingDownGracefully, !Task.isCancelled {
            await round()
            do {
                try await cancelWhenGracefulShutdown { try await Task.sleep(for: settings.interval) }
            } catch {
                return
            }
        }
    }

    /// One round at `now`: returns how many connections were refreshed (tests call it with a moved clock).
    @discardableResult
    func round(now: Date = Date()) async -> Int {
        let due: [String]
        do {
            due = try await database.connectionsToKeepAlive(
                issuedBefore: now.addingTimeInterval(-settings.after), limit: settings.batch)
        } catch {
            logger.warning("keep-alive: could not read the connections", metadata: ["error": "\(type(of: error))"])
            return 0
        }
        var count = 0
        for connectionId in due {
            do {
                _ = try await vault.refreshNow(connectionId: connectionId)
                refreshed.increment()
                count += 1
            } catch .noGrant {
                // The vault logged it and asked for the erasure; nothing is left to keep alive.
                continue
            } catch {
                failed.increment()
                logger.warning("keep-alive refresh failed; tried again next round", metadata: [
                    "connection": "\(connectionId)", "error": "\(error)",
                ])
            }
        }
        if !due.isEmpty {
            logger.info("keep-alive round", metadata: ["due": "\(due.count)", "refreshed": "\(count)"])
        }
        return count
    }
}
