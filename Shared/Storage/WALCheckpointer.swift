import Foundation
import Logging
import ServiceLifecycle

/// Empties a database's WAL soon after an erasure, so the page images from before it (names, emails, tokens) leave
/// the `-wal` file too, not only the database file (where `secure_delete` zeroes them).
///
/// A checkpoint costs a sync of the whole file, so requests are coalesced: ``request()`` never waits, and the service
/// checkpoints at most once per `interval`, always after the latest request — a burst of erasures costs one or two
/// checkpoints, and the last erasure of a burst is never left in the WAL for longer than about `interval`.
package final class WALCheckpointer: Service, Sendable {
    private let database: SQLiteDatabase
    private let interval: Duration
    private let logger: Logger
    private let requests: AsyncStream<Void>
    private let continuation: AsyncStream<Void>.Continuation

    package init(database: SQLiteDatabase, interval: Duration = .seconds(1), logger: Logger) {
        self.database = database
        self.interval = interval
        self.logger = logger
        (requests, continuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    /// Asks for a checkpoint soon. Never blocks.
    package func request() { continuation.yield() }

    package func run() async throws {
        for await _ in requests.cancelOnGracefulShutdown() {
            do {
                try await database.checkpoint()
            } catch {
                logger.warning("WAL checkpoint failed; the next request tries again", metadata: [
                    "error": "\(type(of: error))",
                ])
            }
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: self.interval) }
        }
        // A request made just before shutdown still gets its checkpoint.
        try? await database.checkpoint()
    }
}
