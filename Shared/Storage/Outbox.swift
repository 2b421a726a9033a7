import Foundation
import GRDB
import Messaging

/// A record waiting in the outbox (or already sent).
package struct OutboxEntry: Sendable, Hashable {
    /// Position in the outbox: the relay publishes in this order.
    package var id: Int64
    package var message: OutgoingMessage
    package var createdAt: Date
}

/// The transactional outbox: a service writes its domain rows and the records announcing them in one SQLite
/// transaction, and ``OutboxRelay`` publishes the records afterwards. Either both happen or neither, so a crash can
/// delay an announcement but never lose it, and never announce a change that was rolled back.
package enum Outbox {
    /// Adds `message` to the outbox. Call inside the write transaction that makes the change it announces.
    package static func enqueue(_ message: OutgoingMessage, at date: Date = Date(), in db: GRDB.Database) throws {
        let statement = try db.cachedStatement(sql: """
            INSERT INTO lethe_outbox (topic, key, value, headers, partition, created_at) VALUES (?, ?, ?, ?, ?, ?)
            """)
        try statement.execute(arguments: [
            message.topic, message.key.map { Data($0) as Data }, message.value.map { Data($0) as Data },
            HeaderCoding.encode(message.headers), message.partition.map { Int64($0) }, date.timeIntervalSince1970,
        ])
    }

    /// The oldest unsent records, in outbox order.
    package static func pending(limit: Int, in db: GRDB.Database) throws -> [OutboxEntry] {
        try Row.fetchAll(
            db, sql: "SELECT \(columns) FROM lethe_outbox WHERE sent_at IS NULL ORDER BY id LIMIT ?",
            arguments: [limit]
        ).map(entry)
    }

    /// Marks every unsent record up to `lastId` as published: after a relay published the oldest unsent records
    /// through `lastId`, this is one statement instead of one per record. Records enqueued meanwhile have larger ids.
    package static func markSent(through lastId: Int64, at date: Date = Date(), in db: GRDB.Database) throws {
        try db.cachedStatement(sql: "UPDATE lethe_outbox SET sent_at = ? WHERE id <= ? AND sent_at IS NULL")
            .execute(arguments: [date.timeIntervalSince1970, lastId])
    }

    /// Deletes every unsent record up to `lastId`, once the relay has published them: for outboxes whose records
    /// carry personal data, which then stays in the file no longer than it takes to publish it.
    package static func deleteSent(through lastId: Int64, in db: GRDB.Database) throws {
        try db.cachedStatement(sql: "DELETE FROM lethe_outbox WHERE id <= ? AND sent_at IS NULL")
            .execute(arguments: [lastId])
    }

    /// How many records wait to be published; with `lastId`, only those up to it.
    package static func pendingCount(through lastId: Int64 = .max, in db: GRDB.Database) throws -> Int {
        try Int.fetchOne(
            db, sql: "SELECT count(*) FROM lethe_outbox WHERE sent_at IS NULL AND id <= ?", arguments: [lastId]) ?? 0
    }

    /// The newest record waiting to be published, nil when none is (ids only grow: AUTOINCREMENT).
    package static func newestPendingId(in db: GRDB.Database) throws -> Int64? {
        try Int64.fetchOne(db, sql: "SELECT max(id) FROM lethe_outbox WHERE sent_at IS NULL")
    }

    /// Every record still in the outbox, sent or not, in outbox order (for tests and diagnostics).
    package static func all(in db: GRDB.Database) throws -> [(entry: OutboxEntry, sent: Bool)] {
        try Row.fetchAll(db, sql: "SELECT \(columns), sent_at FROM lethe_outbox ORDER BY id").map { row in
            let sentAt: Double? = row["sent_at"]
            return (try entry(row), sentAt != nil)
        }
    }

    private static let columns = "id, topic, key, value, headers, partition, created_at"

    private static func entry(_ row: Row) throws -> OutboxEntry {
        let key: Data? = row["key"]
        let value: Data? = row["value"]
        let headers: Data = row["headers"]
        let partition: Int64? = row["partition"]
        let message = OutgoingMessage(
            topic: row["topic"], key: key.map { Array($0) }, value: value.map { Array($0) },
            headers: try HeaderCoding.decode(headers), partition: partition.map { Int32(truncatingIfNeeded: $0) })
        return OutboxEntry(id: row["id"], message: message, createdAt: Date(timeIntervalSince1970: row["created_at"]))
    }

    /// Deletes every record of `topic` with `key`, sent or not: for an erasure, so that personal data waiting to be
    /// published, or kept after it was, leaves the file with the rest. Returns how many went.
    @discardableResult
    package static func discard(topic: String, key: String, in db: GRDB.Database) throws -> Int {
        try db.execute(
            sql: "DELETE FROM lethe_outbox WHERE topic = ? AND key = ?", arguments: [topic, Data(key.utf8)])
        return db.changesCount
    }

    /// Deletes records sent before `date`; the outbox is a queue, not an archive. Returns how many went.
    @discardableResult
    package static func pruneSent(before date: Date, in db: GRDB.Database) throws -> Int {
        try db.execute(
            sql: "DELETE FROM lethe_outbox WHERE sent_at IS NOT NULL AND sent_at < ?",
            arguments: [date.timeIntervalSince1970])
        return db.changesCount
    }
}

/// Headers as one blob: for each header, name length, name, value length, value (lengths as 4 bytes, big-endian).
enum HeaderCoding {
    struct Corrupt: Error, CustomStringConvertible {
        var description: String { "corrupt outbox headers" }
    }

    static func encode(_ headers: [KafkaHeader]) -> Data {
        // Sized once and filled in place: this runs for every outbox record, inside the writer's transaction.
        var data = Data(count: headers.reduce(0) { $0 + 8 + $1.name.utf8.count + $1.value.count })
        data.withUnsafeMutableBytes { (bytes: UnsafeMutableRawBufferPointer) in
            var index = 0
            func append(count: Int) {
                bytes[index] = UInt8(truncatingIfNeeded: count >> 24)
                bytes[index + 1] = UInt8(truncatingIfNeeded: count >> 16)
                bytes[index + 2] = UInt8(truncatingIfNeeded: count >> 8)
                bytes[index + 3] = UInt8(truncatingIfNeeded: count)
                index += 4
            }
            for header in headers {
                append(count: header.name.utf8.count)
                for byte in header.name.utf8 {
                    bytes[index] = byte
                    index += 1
                }
                append(count: header.value.count)
                for byte in header.value {
                    bytes[index] = byte
                    index += 1
                }
            }
        }
        return data
    }

    static func decode(_ data: Data) throws -> [KafkaHeader] {
        let bytes = [UInt8](data)
        var index = 0
        func take() throws -> [UInt8] {
            guard index + 4 <= bytes.count else { throw Corrupt() }
            let count = Int(bytes[index]) << 24 | Int(bytes[index + 1]) << 16 | Int(bytes[index + 2]) << 8
                | Int(bytes[index + 3])
            index += 4
            guard index + count <= bytes.count else { throw Corrupt() }
            defer { index += count }
            return Array(bytes[index..<index + count])
        }
        var headers: [KafkaHeader] = []
        while index < bytes.count {
            let name = try take()
            headers.append(KafkaHeader(name: String(decoding: name, as: UTF8.self), value: try take()))
        }
        return headers
    }
}
