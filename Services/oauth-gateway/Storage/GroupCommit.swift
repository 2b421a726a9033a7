import GRDB
import Storage
import Synchronization

/// Group commit for the gateway's synced writes: concurrent callers' transactions run together in one SQLite
/// transaction, each inside its own savepoint, so a batch costs one WAL sync (`synchronous=FULL`) instead of one per
/// caller. Every caller still returns only after its work is durable, and one caller's error rolls back only its own
/// savepoint.
///
/// Why: a completed sign-in must be on disk before the tenant can learn the profile, and SQLite syncs under its write
/// lock, so one sync per sign-in caps sign-ins at one per disk sync (milliseconds on a busy virtual disk) whatever
/// the CPU could do.
///
/// No task of its own: each caller queues its work and schedules a drain on GRDB's serial writer queue; the first
/// drain to run takes everything queued by then (up to `maxBatch`) and commits it, later drains find their work done
/// or take what queued meanwhile. Batches follow each other on the writer queue itself, without waiting for a Swift
/// task to be scheduled in between.
final class GroupCommit: Sendable {
    private struct Job: Sendable {
        var body: @Sendable (GRDB.Database) throws -> any Sendable
        var continuation: CheckedContinuation<any Sendable, any Error>
    }

    private let database: SQLiteDatabase
    private let maxBatch: Int
    private let queue = Mutex([Job]())

    init(database: SQLiteDatabase, maxBatch: Int = 256) {
        self.database = database
        self.maxBatch = maxBatch
    }

    /// Runs `body` in a savepoint of the next batch's transaction; returns once that transaction is durable.
    func write<T: Sendable>(_ body: @escaping @Sendable (GRDB.Database) throws -> T) async throws -> T {
        let result = try await withCheckedThrowingContinuation {
            (continuation: CheckedContinuation<any Sendable, any Error>) in
            queue.withLock { $0.append(Job(body: { db in try body(db) }, continuation: continuation)) }
            database.pool.asyncWriteWithoutTransaction { [self] db in drain(db) }
        }
        return result as! T
    }

    /// On the writer queue: commits what is queued, then answers each caller.
    private func drain(_ db: GRDB.Database) {
        let jobs = queue.withLock { queue -> [Job] in
            let taken = Array(queue.prefix(maxBatch))
            queue.removeFirst(taken.count)
            return taken
        }
        guard !jobs.isEmpty else { return }
        var results: [Result<any Sendable, any Error>] = []
        results.reserveCapacity(jobs.count)
        do {
            try db.inTransaction {
                for job in jobs {
                    var outcome: Result<any Sendable, any Error> = .failure(CancellationError())
                    do {
                        try db.inSavepoint {
                            do {
                                outcome = .success(try job.body(db))
                                return .commit
                            } catch {
                                outcome = .failure(error)
                                return .rollback
                            }
                        }
                    } catch {
                        outcome = .failure(error)
                    }
                    results.append(outcome)
                }
                return .commit
            }
        } catch {
            // The commit itself failed: nothing of the batch is stored.
            results = jobs.map { _ in .failure(error) }
        }
        for (job, result) in zip(jobs, results) { job.continuation.resume(with: result) }
    }
}
