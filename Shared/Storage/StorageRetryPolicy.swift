import GRDB
import Messaging

extension RetryPolicy {
    /// For work that writes SQLite and Kafka: SQLite busy or locked (another writer, a checkpoint), I/O trouble, a
    /// full disk, and any Kafka error that is not fatal are transient. Everything else — a constraint violation, a
    /// decode failure, a bad value — fails the same way every time.
    ///
    /// A failure is described by SQLite's code and message (which name columns and constraints, never values), or by
    /// the error's own description for Lethe's errors (which never carry values either).
    package static let storage = RetryPolicy(
        isTransient: { error in
            if let database = error as? DatabaseError {
                switch database.resultCode {
                case .SQLITE_BUSY, .SQLITE_LOCKED, .SQLITE_IOERR, .SQLITE_FULL, .SQLITE_CANTOPEN, .SQLITE_PROTOCOL,
                    .SQLITE_INTERRUPT, .SQLITE_NOMEM:
                    return true
                default:
                    return false
                }
            }
            return RetryPolicy.kafka.isTransient(error)
        },
        describe: { error in
            if let database = error as? DatabaseError {
                return "SQLite error \(database.extendedResultCode.rawValue): \(database.message ?? "\(database.resultCode)")"
            }
            return "\(error)"
        })
}
