import Contracts
import ErasureKit
import Foundation
import GRDB
import Logging
import Storage

// profile-store's side of erasure: the policy applied to its SQLite rows, and its ErasureKit handler.

extension ProfileDatabase {
    /// The outcome recorded when `erasureId` was applied.
    func recordedResult(of erasureId: String) async throws -> ErasureResult? {
        try await database.read { db in try Self.recorded(erasureId, in: db) }
    }

    fileprivate static func recorded(_ erasureId: String, in db: GRDB.Database) throws -> ErasureResult? {
        try ProcessedEvents.outcome(of: erasureId, consumer: erasureConsumer, in: db)
            .flatMap(ErasureOutcome.init(rawValue:)).map { ErasureResult(outcome: $0) }
    }

    /// Applies the tenant's policy to its profile of the account, suppresses a closed account, re-announces the
    /// account, and records the outcome under the erasureId — all in one transaction. A command already recorded
    /// returns the recorded outcome and changes nothing.
    func erase(_ command: EraseSubject) async throws -> ErasureResult {
        let (topic, changelog) = (accountsTopic, self.changelog)
        return try await database.write { db in
            try Self.erase(command, accountsTopic: topic, changelog: changelog, in: db)
        }
    }

    /// ``erase(_:)`` for a batch of commands, in order, in ONE transaction: one WAL sync for the batch instead of one
    /// per command, which is what bounds how fast profile-store acknowledges a burst of erasures. Each command keeps
    /// its own record, looked up inside the transaction, so a command repeated within the batch (a re-send next to
    /// the original) returns the first one's outcome. Any error rolls the whole batch back.
    func erase(_ commands: [EraseSubject]) async throws -> [ErasureResult] {
        let (topic, changelog) = (accountsTopic, self.changelog)
        return try await database.write { db in
            try commands.map { try Self.erase($0, accountsTopic: topic, changelog: changelog, in: db) }
        }
    }

    private static func erase(
        _ command: EraseSubject, accountsTopic topic: String, changelog: ProfileChangelog?, in db: GRDB.Database
    ) throws -> ErasureResult {
        if let recorded = try recorded(command.erasureId, in: db) { return recorded }
        // The watermark goes in whether or not a profile is held: the profile may still be on its way (issue 15).
        try db.cachedStatement(sql: """
            INSERT INTO erased_accounts (tenant_id, app_id, account_digest, erased_through) VALUES (?, ?, ?, ?)
            ON CONFLICT DO UPDATE SET erased_through = max(erased_through, excluded.erased_through)
            """).execute(arguments: [
                command.tenantId, command.appId, SuppressionDigest.of(accountId: command.accountId),
                millis(command.issuedAt),
            ])
        if command.cause == .atlassianClosed {
            try db.cachedStatement(sql: """
                INSERT INTO suppressed_accounts (app_id, account_digest, erasure_id, suppressed_at)
                VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING
                """).execute(arguments: [
                    command.appId, SuppressionDigest.of(accountId: command.accountId), command.erasureId,
                    millis(Date()),
                ])
        }
        let arguments: StatementArguments = [command.tenantId, command.appId, command.accountId]
        let exists = try Int.fetchOne(
            db.cachedStatement(sql: "SELECT 1 FROM profiles WHERE tenant_id = ? AND app_id = ? AND account_id = ?"),
            arguments: arguments) != nil
        let outcome: ErasureOutcome
        // Profiles no longer linked to the account keep a changelog key of their own.
        var unlinked: [String] = []
        if !exists {
            outcome = .nothingHeld
        } else {
            switch command.policy {
            case .delete:
                try db.cachedStatement(sql: """
                    DELETE FROM profiles WHERE tenant_id = ? AND app_id = ? AND account_id = ?
                    """).execute(arguments: arguments)
                outcome = .erased
            case .scrub:
                // A closed account's accountId goes too, under every policy (issue 15): the scrubbed row keeps its
                // platform user, not its link to the closed Atlassian account (the suppression list has the digest).
                let closed = command.cause == .atlassianClosed
                unlinked = try Optional<String>.fetchAll(
                    db.cachedStatement(sql: """
                        UPDATE profiles SET name = NULL, email = NULL, nickname = NULL, picture = NULL,
                            holds_personal_data = 0, account_id = CASE WHEN ?1 THEN NULL ELSE account_id END,
                            unlinked_id = CASE WHEN ?1 THEN lower(hex(randomblob(16))) ELSE unlinked_id END
                        WHERE tenant_id = ?2 AND app_id = ?3 AND account_id = ?4
                        RETURNING unlinked_id
                        """),
                    arguments: [closed] + arguments
                ).compactMap { $0 }
                outcome = .scrubbed
            case .disassociate:
                unlinked = try String.fetchAll(
                    db.cachedStatement(sql: """
                        UPDATE profiles SET account_id = NULL, holds_personal_data = 0,
                            unlinked_id = lower(hex(randomblob(16)))
                        WHERE tenant_id = ? AND app_id = ? AND account_id = ?
                        RETURNING unlinked_id
                        """),
                    arguments: arguments)
                outcome = .disassociated
            }
        }
        if let key = try? AccountKey(appId: command.appId, accountId: command.accountId) {
            _ = try announce(key, topic: topic, in: db)
            if let changelog {
                try writeChangelog(accounts: [key], to: changelog, in: db)
                try writeChangelog(unlinked: unlinked, to: changelog, in: db)
                try writeChangelog(
                    erasure: ProfileErasureRecorded(
                        erasureId: command.erasureId, tenantId: command.tenantId, appId: command.appId,
                        accountDigest: SuppressionDigest.of(accountId: command.accountId),
                        erasedThrough: command.issuedAt, suppressed: command.cause == .atlassianClosed,
                        outcome: outcome),
                    key: erasurePrefix + command.erasureId, partition: changelog.partition(of: key), to: changelog,
                    in: db)
            }
        }
        try ProcessedEvents.record(command.erasureId, consumer: erasureConsumer, outcome: outcome.rawValue, in: db)
        return ErasureResult(outcome: outcome)
    }
}

/// profile-store's erasure participant: its handler is the database's erase, recorded by erasureId. An outcome is
/// handed back (and so acknowledged) only once the erasure's changelog records are on the broker: a replica killed
/// between its ack and their sending would leave the next owner of the partition reading the profile back from the
/// changelog while the executor counts it erased (docs/contracts.md, "State another replica reads back").
struct ProfileErasureHandler: ErasureHandler {
    let database: ProfileDatabase
    /// Empties the WAL soon after erasures, so the erased profiles' old page images leave the `-wal` file too.
    let checkpointer: WALCheckpointer
    /// Sends the changelog records (and the re-announcements) the erasure wrote.
    let relay: OutboxRelay
    let logger: Logger

    /// A recorded outcome waits too: it may be a re-delivery after a crash that left its records unsent.
    func recordedResult(of erasureId: String) async throws -> ErasureResult? {
        guard let recorded = try await database.recordedResult(of: erasureId) else { return nil }
        try await waitUntilOnTheBroker()
        return recorded
    }

    func apply(_ command: EraseSubject) async throws -> ErasureResult {
        try await applyBatch([command])[0]
    }

    /// The whole batch in one transaction (`ProfileDatabase.erase(_ commands:)`), then one checkpoint
    /// request and one wait for it.
    func applyBatch(_ commands: [EraseSubject]) async throws -> [ErasureResult] {
        let results = try await database.erase(commands)
        checkpointer.request()
        try await waitUntilOnTheBroker()
        return results
    }

    private func waitUntilOnTheBroker() async throws {
        try await relay.waitUntilSent(before: "acknowledging an erasure", logger: logger)
    }
}
