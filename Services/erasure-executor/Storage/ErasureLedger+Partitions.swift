import GRDB
import Messaging
import Storage

/// Which erasures are this replica's: those of the partitions its intake group assigns it (ErasureIntake). An erasure
/// belongs to the partition Kafka's murmur2 gives its id — its subject's partition, where its statuses, commands,
/// acks and changelog records are (``makeErasureId(at:forSubject:partitions:)``) — and its audit entry to that
/// partition's chain.
extension ErasureLedger {
    /// The partition of erasure `id` among the erasure topics' partitions.
    func partition(of id: String) -> Int32 {
        KeyPartitioner.partition(of: id, count: settings.partitions)
    }

    /// Forgets every erasure of a partition not in `owned` — its row, participants and audit entry (secure_delete
    /// zeroes them in the file; an entry of the `lethe-audit-v1` chain, which no partition owns, stays) — and where
    /// this file's last read-back of those partitions' changelog ended, so a later assignment reads them back whole.
    /// Their changelog holds all of it: the replica that owns them now reads it back. Changes not yet published are
    /// published first. Returns how many erasures it forgot; owning every partition (the lease's active replica, at
    /// each start) forgets nothing and reads nothing.
    func dropPartitions(keeping owned: Set<Int32>) async throws -> Int {
        guard owned.count < settings.partitions else { return 0 }
        while try await database.read({ db in try Int.fetchOne(db, sql: "SELECT count(*) FROM erasure_changes") ?? 0 }) > 0 {
            try await write { _ in }  // each write publishes up to a batch of listed changes
        }
        return try await database.write { [self] db in
            let gone = try String.fetchAll(db, sql: "SELECT id FROM erasures").filter { !owned.contains(partition(of: $0)) }
            for id in gone {
                try db.execute(sql: "DELETE FROM erasure_participants WHERE erasure_id = ?", arguments: [id])
                // The single chain written before chains existed belongs to no partition: it stays whole.
                try db.execute(sql: "DELETE FROM audit_log WHERE erasure_id = ? AND chain IS NOT NULL", arguments: [id])
                try db.execute(sql: "DELETE FROM erasures WHERE id = ?", arguments: [id])
                // Deleting its participants listed it as changed (a trigger): nothing of it is to be published.
                try db.execute(sql: "DELETE FROM erasure_changes WHERE erasure_id = ?", arguments: [id])
            }
            let positions = try Int32.fetchAll(db, sql: "SELECT partition FROM changelog_positions")
            for partition in positions where !owned.contains(partition) {
                try db.execute(sql: "DELETE FROM changelog_positions WHERE partition = ?", arguments: [partition])
            }
            return gone.count
        }
    }
}
