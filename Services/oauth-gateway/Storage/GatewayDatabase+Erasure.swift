import Contracts
import ErasureKit
import Foundation
import GRDB
import Storage

extension GatewayDatabase {
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
            let rows = try Row.fetchAll(
                try db.cachedStatement(sql: """
                    SELECT connection_id, user_id FROM connections WHERE tenant_id = ? AND app_id = ? AND account_id = ?
                    """),
                arguments: [command.tenantId, command.appId, command.accountId])
            let ids: [String] = rows.map { $0["connection_id"] }
            // The tenant's Shared Signals stream hears of it in the same transaction (account-disabled now,
            // account-purged at completion), under the user id its ID tokens carry.
            try Self.noteErasure(command, userIds: Set(rows.map { $0["user_id"] as String }).sorted(), now: now, in: db)
            // Profiles of the account waiting in (or kept by) the outbox carry its name and email: they go too. The
            // outbox is keyed per app and account, not per tenant, so another tenant's pending profile of the same
            // account goes with it; its next sign-in or refresh publishes a fresh one.
            if let key = try? AccountKey(appId: command.appId, accountId: command.accountId) {
                try Outbox.discard(topic: topics.profiles, key: key.rawValue, in: db)
            }
            var outcome = ErasureOutcome.nothingHeld
            for id in ids {
                outcome = try Self.erase(connection: id, as: command, in: db)
            }
            try ProcessedEvents.record(
                command.erasureId, consumer: Self.erasureConsumer, outcome: outcome.rawValue, in: db)
            return outcome
        }
        return outcome
    }

    /// Applies `command`'s policy to one connection of the account; returns what that did.
    private static func erase(connection id: String, as command: EraseSubject, in db: GRDB.Database) throws
        -> ErasureOutcome
    {
        try db.cachedStatement(sql: "UPDATE apps SET owner_connection_id = NULL WHERE owner_connection_id = ?")
            .execute(arguments: [id])
        // The profile's digests are of personal fields: they go under every policy, with the tokens.
        let dropTokens = """
            state = 'erased', access_token = NULL, access_expires_at = NULL, refresh_token = NULL,
            profile_digests = NULL, lease_owner = NULL, lease_until = NULL
            """
        switch command.policy {
        case .delete:
            try db.cachedStatement(sql: "DELETE FROM connections WHERE connection_id = ?")
                .execute(arguments: [id])
            return .erased
        case .scrub where command.cause == .atlassianClosed:
            // A closed account's accountId goes under every policy (issue 15): the connection keeps its
            // platform user; the suppression list has the digest.
            try db.cachedStatement(sql: "UPDATE connections SET account_id = NULL, \(dropTokens) WHERE connection_id = ?")
                .execute(arguments: [id])
            return .scrubbed
        case .scrub:
            try db.cachedStatement(sql: "UPDATE connections SET \(dropTokens) WHERE connection_id = ?")
                .execute(arguments: [id])
            return .scrubbed
        case .disassociate:
            try db.cachedStatement(sql: "UPDATE connections SET account_id = NULL, \(dropTokens) WHERE connection_id = ?")
                .execute(arguments: [id])
            return .disassociated
        }
    }
}
