import Foundation
import GRDB

/// The events a handler has already applied, so a redelivered event (at-least-once delivery, a re-sent command) is
/// recognised and not applied twice. Record inside the same transaction as the effect: then "applied" and "recorded"
/// can never disagree after a crash.
package enum ProcessedEvents {
    /// The outcome recorded for `eventId` by `consumer`, or nil when it was never processed.
    package static func outcome(of eventId: String, consumer: String, in db: GRDB.Database) throws -> String? {
        try String.fetchOne(
            db, sql: "SELECT outcome FROM lethe_processed_events WHERE consumer = ? AND event_id = ?",
            arguments: [consumer, eventId])
    }

    /// Records that `consumer` processed `eventId` with `outcome`. Returns false (and changes nothing) when it was
    /// already recorded: the first outcome stands.
    @discardableResult
    package static func record(
        _ eventId: String, consumer: String, outcome: String = "", at date: Date = Date(), in db: GRDB.Database
    ) throws -> Bool {
        try db.execute(
            sql: """
                INSERT INTO lethe_processed_events (consumer, event_id, outcome, processed_at) VALUES (?, ?, ?, ?)
                ON CONFLICT (consumer, event_id) DO NOTHING
                """,
            arguments: [consumer, eventId, outcome, date.timeIntervalSince1970])
        return db.changesCount == 1
    }
}
