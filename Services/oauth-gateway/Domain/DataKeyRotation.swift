import Foundation
import Logging
import Metrics
import ServiceLifecycle

/// Finishes a data key rotation (``SecretBox/rotate(now:)``): every round re-seals a batch of what is stored under
/// older keys with the active one (``GatewayDatabase/sealedColumns``), and once nothing stored needs an older key and
/// `grace` has passed since a newer one took over — values sealed into URLs and tokens (states, codes, OpenID access
/// tokens) live minutes, not an hour — deletes it, so what it sealed is gone for good. Runs on every replica; a row
/// changed meanwhile (a refreshed token) is left to the next round, so two replicas never overwrite each other.
struct DataKeyRotation: Service {
    let database: GatewayDatabase
    let box: SecretBox
    let logger: Logger
    var interval: Duration = .seconds(30)
    var grace: TimeInterval = 3600
    var batch = 200

    /// The state after one round.
    struct Round: Equatable {
        var resealed: Int
        /// Values still sealed under an older key (unreadable ones included, which are logged).
        var pending: Int
        var deleted: [UInt32]
    }

    func run() async throws {
        while !Task.isShuttingDownGracefully, !Task.isCancelled {
            do {
                let round = try await round()
                if round.resealed > 0 || !round.deleted.isEmpty {
                    logger.info("data key rotation", metadata: [
                        "resealed": "\(round.resealed)", "pending": "\(round.pending)",
                        "deleted_key_ids": "\(round.deleted)",
                    ])
                }
            } catch {
                logger.warning("a data key rotation round failed", metadata: ["error": "\(type(of: error))"])
            }
            do {
                try await cancelWhenGracefulShutdown { try await Task.sleep(for: interval) }
            } catch {
                return
            }
        }
    }

    func round(now: Date = Date()) async throws -> Round {
        try box.reload()
        let active = box.activeKeyId
        var resealed = 0
        var pending = 0
        for column in GatewayDatabase.sealedColumns {
            for (rowKey, sealed) in try await database.valuesSealed(notUnder: active, in: column, limit: batch) {
                let context = column.context(rowKey)
                guard let plaintext = try? box.open(sealed, context: context) else {
                    // Left as it is, and counted as pending: its key is never deleted while it is there.
                    logger.error("a stored sealed value does not open", metadata: [
                        "table": "\(column.table)", "column": "\(column.column)",
                    ])
                    continue
                }
                let new = try box.seal(plaintext, context: context)
                if try await database.replaceSealed(in: column, rowKey: rowKey, old: sealed, new: new) { resealed += 1 }
            }
            pending += try await database.countSealed(notUnder: active, in: column)
        }
        Counter(label: "lethe_gateway_values_resealed_total").increment(by: resealed)
        Gauge(label: "lethe_gateway_values_under_old_data_keys").record(pending)

        var deleted: [UInt32] = []
        if pending == 0 {
            let keys = try await database.dataKeyAges()
            for (index, key) in keys.enumerated() where key.id != active && index + 1 < keys.count {
                if now.timeIntervalSince(keys[index + 1].createdAt) >= grace { deleted.append(key.id) }
            }
            if !deleted.isEmpty {
                try await database.deleteDataKeys(deleted)
                try box.reload()
            }
        }
        Gauge(label: "lethe_gateway_data_keys").record(box.keyIds.count)
        return Round(resealed: resealed, pending: pending, deleted: deleted)
    }
}
