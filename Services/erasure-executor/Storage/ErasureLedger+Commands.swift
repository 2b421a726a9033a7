import Contracts
import Foundation
import GRDB
import Messaging
import Storage

extension ErasureLedger {
    /// A new erasure id: a version 7 UUID (RFC 9562), lower case — 48 bits of Unix milliseconds, then random bits.
    /// Time-ordered ids put each new erasure, its participants and its audit row at the end of their indexes
    /// instead of on a random page of each, so a burst writes a few pages rather than one per erasure per index.
    static func makeErasureId(at now: Date) -> String {
        uuidText(uuidBytes(at: now))
    }

    /// The 16 bytes of a version 7 UUID opened at `now`, the rest random.
    private static func uuidBytes(at now: Date) -> [UInt8] {
        // Two 64-bit draws rather than sixteen byte draws: each draw is a getrandom call.
        var generator = SystemRandomNumberGenerator()
        let random = [generator.next() as UInt64, generator.next() as UInt64]
        var bytes = random.flatMap { word in (0..<8).map { UInt8(truncatingIfNeeded: word >> (8 * $0)) } }
        let millis = UInt64(max(0, now.timeIntervalSince1970 * 1000))
        for index in 0..<6 { bytes[index] = UInt8(truncatingIfNeeded: millis >> (8 * (5 - index))) }
        bytes[6] = 0x70 | (bytes[6] & 0x0f)  // version 7
        bytes[8] = 0x80 | (bytes[8] & 0x3f)  // variant 10
        return bytes
    }

    /// A UUID's canonical text, lower case: 8-4-4-4-12 hex digits.
    private static func uuidText(_ bytes: [UInt8]) -> String {
        let hex = bytes.hex
        var id = ""
        id.reserveCapacity(36)
        for (index, character) in hex.enumerated() {
            if index == 8 || index == 12 || index == 16 || index == 20 { id.append("-") }
            id.append(character)
        }
        return id
    }

    /// A new erasure id (``makeErasureId(at:)``) that Kafka's partitioner puts on the partition of `subject`
    /// (`appId:accountId`) among `partitions`: the acks of its command (keyed by the id, murmur2 as the participant
    /// contract says) and its changelog records land on the partition its statuses, requests and commands are on, so
    /// whoever owns that partition of the erasure topics has all of the erasure's records. About `partitions` tries,
    /// each one random draw with its last two bytes changed by a counter (a fresh draw for each try was 4 % of the
    /// executor's CPU in the erasure bench: each is two getrandom calls).
    static func makeErasureId(at now: Date, forSubject subject: String, partitions: Int) -> String {
        guard partitions > 1 else { return makeErasureId(at: now) }
        let target = KeyPartitioner.partition(of: subject, count: partitions)
        while true {
            let drawn = uuidBytes(at: now)
            var bytes = drawn
            for attempt in 0...UInt16.max {
                bytes[14] = drawn[14] ^ UInt8(truncatingIfNeeded: attempt >> 8)
                bytes[15] = drawn[15] ^ UInt8(truncatingIfNeeded: attempt)
                let id = uuidText(bytes)
                if KeyPartitioner.partition(of: id, count: partitions) == target { return id }
            }
        }
    }

    /// The participant set of an erasure, fixed at dispatch: the ones declared then. Each counts as sent once now.
    func insertParticipants(_ names: [String], of id: String, at t: Double, in db: GRDB.Database) throws {
        let statement = try db.cachedStatement(sql: """
            INSERT INTO erasure_participants (erasure_id, participant, sends, last_sent_at) VALUES (?, ?, 1, ?)
            """)
        for name in names { try statement.execute(arguments: [id, name, t]) }
    }

    /// Moves a pending erasure to dispatched when participants are declared: its participant set is fixed now (the
    /// ones declared at dispatch), and the first command is enqueued. Returns whether it did.
    @discardableResult
    func dispatchIfPossible(_ id: String, at now: Date, cache: TransactionCache, in db: GRDB.Database) throws
        -> Bool
    {
        let names = try cache.participants(in: db)
        guard !names.isEmpty else { return false }
        let t = now.timeIntervalSince1970
        try insertParticipants(names, of: id, at: t, in: db)
        try db.cachedStatement(sql: """
            UPDATE erasures SET status = 'dispatched', issued_at = ?, updated_at = ? WHERE id = ?
            """).execute(arguments: [t, t, id])
        try enqueueCommand(id, in: db)
        return true
    }

    /// One `EraseSubject` for erasure `id` (all participants read the same topic; the ones done re-ack idempotently),
    /// under its command id (its own id unless it was upgraded).
    func enqueueCommand(_ id: String, in db: GRDB.Database) throws {
        guard let row = try Row.fetchOne(
            db.cachedStatement(sql: """
                SELECT tenant_id, app_id, account_id, policy, cause, issued_at, deadline, command_id
                FROM erasures WHERE id = ?
                """), arguments: [id]),
            let accountId: String = row["account_id"]
        else { return }
        try enqueue(
            EraseSubject(
                erasureId: row["command_id"] ?? id, tenantId: row["tenant_id"], appId: row["app_id"], accountId: accountId,
                policy: ErasurePolicy(rawValue: row["policy"]) ?? .delete,
                cause: ErasureCause(rawValue: row["cause"]) ?? .atlassianClosed,
                issuedAt: Date(timeIntervalSince1970: row["issued_at"]),
                deadline: Date(timeIntervalSince1970: row["deadline"])),
            in: db)
    }

    /// Puts `command` in the outbox, keyed `appId:accountId` like every record about the account.
    func enqueue(_ command: EraseSubject, in db: GRDB.Database) throws {
        try Outbox.enqueue(
            try OutgoingMessage(
                event: command, topic: settings.commandsTopic, key: "\(command.appId):\(command.accountId)",
                source: settings.source),
            in: db)
    }
}
