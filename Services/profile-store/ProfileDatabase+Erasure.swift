import Contracts
import ErasureKit
import Foundation
import GRDB
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
        let topic = accountsTopic
        return try await database.write { db in
            if let recorded = try Self.recorded(command.erasureId, in: db) { return recorded }
            if command.cause == .atlassianClosed {
                try db.execute(
                    sql: """
                        INSERT INTO suppressed_accounts (app_id, account_id, erasure_id, suppressed_at)
                        VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING
                        """,
                    arguments: [command.appId, command.accountId, command.erasureId, millis(Date())])
            }
            let arguments: StatementArguments = [command.tenantId, command.appId, command.accountId]
            let exists = try Int.fetchOne(
                db, sql: "SELECT 1 FROM profiles WHERE tenant_id = ? AND app_id = ? AND account_id = ?",
                arguments: arguments) != nil
            let outcome: ErasureOutcome
            if !exists {
                outcome = .nothingHeld
            } else {
                switch command.policy {
                case .delete:
                    try db.execute(
                        sql: "DELETE FROM profiles WHERE tenant_id = ? AND app_id = ? AND account_id = ?",
                        arguments: arguments)
                    outcome = .erased
                case .scrub:
                    try db.execute(
                        sql: """
                            UPDATE profiles SET name = NULL, email = NULL, nickname = NULL, picture = NULL,
                                holds_personal_data = 0
                            WHERE tenant_id = ? AND app_id = ? AND account_id = ?
                            """,
                        arguments: arguments)
                    outcome = .scrubbed
                case .disassociate:
                    try db.execute(
                        sql: """
                            UPDATE profiles SET account_id = NULL, holds_personal_data = 0
                            WHERE tenant_id = ? AND app_id = ? AND account_id = ?
                            """,
                        arguments: arguments)
                    outcome = .disassociated
                }
            }
            if let key = try? AccountKey(appId: command.appId, accountId: command.accountId) {
                _ = try Self.announce(key, topic: topic, in: db)
            }
            try ProcessedEvents.record(
                command.erasureId, consumer: Self.erasureConsumer, outcome: outcome.rawValue, in: db)
            return ErasureResult(outcome: outcome)
        }
    }
}

/// profile-store's erasure participant: its handler is the database's erase, recorded by erasureId.
struct ProfileErasureHandler: ErasureHandler {
    let database: ProfileDatabase
    /// Empties the WAL soon after erasures, so the erased profiles' old page images leave the `-wal` file too.
    let checkpointer: WALCheckpointer

    func recordedResult(of erasureId: String) async throws -> ErasureResult? {
        try await database.recordedResult(of: erasureId)
    }

    func apply(_ command: EraseSubject) async throws -> ErasureResult {
        let result = try await database.erase(command)
        checkpointer.request()
        return result
    }
}
