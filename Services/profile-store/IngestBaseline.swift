import Contracts
import Foundation

/// `profile-store ingest-baseline <directory> <count> <batch>` — what SQLite on this disk gives profile-store's ingest
/// with no Kafka: `count` distinct profiles (4 tenants, 2 apps, as `make bench-ingest` produces them) stored in
/// batches of `batch` through the service's own ``ProfileDatabase/ingest(_:)`` — the same schema, the same upsert,
/// the same transaction per batch, the same outbox rows (`AccountHeld` and the changelog's `ProfilesHeld`) — into a
/// new file in `directory`.
///
/// Timed like the bench times the service: from the end of the first batch to the end of the last, counting the
/// profiles after the first batch. Prints `baseline: <n> profiles/s (<count> in batches of <batch>)`. `make
/// bench-ingest` divides the service's rate by this one; an operator can run it to see what a volume allows.
enum IngestBaseline {
    static let command = "ingest-baseline"

    /// Runs it; the exit status (0, 1 on failure, 2 on bad arguments).
    static func run(_ arguments: [String]) async -> Int32 {
        guard arguments.count == 3, let count = Int(arguments[1]), let batch = Int(arguments[2]), count > batch,
              batch > 0
        else {
            FileHandle.standardError.write(Data(
                "usage: profile-store \(command) <directory> <count> <batch>   (count > batch > 0)\n".utf8))
            return 2
        }
        let file = URL(fileURLWithPath: arguments[0]).appendingPathComponent("profile-store.sqlite")
        guard !FileManager.default.fileExists(atPath: file.path) else {
            FileHandle.standardError.write(Data("profile-store \(command): \(file.path) exists; give an empty directory\n".utf8))
            return 1
        }
        do {
            try FileManager.default.createDirectory(
                at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
            let database = try ProfileDatabase(
                path: file.path,
                changelog: ProfileChangelog(topic: Topics.profileState.name, partitions: Topics.defaultPartitionCount))
            let base = Date()
            let events = (0..<count).map { index in
                ProfileFetched(
                    tenantId: "tenant-\(index % 4)", appId: "app-\(index % 2)", accountId: "557058:bench-\(index)",
                    name: "Bench User \(index)", email: "user\(index)@example.com", nickname: "user\(index)",
                    picture: "https://avatar.example/\(index).png",
                    fetchedAt: base.addingTimeInterval(Double(index) / 1000))
            }
            let clock = ContinuousClock()
            _ = try await database.ingest(Array(events[0..<batch]))
            let started = clock.now
            for start in stride(from: batch, to: count, by: batch) {
                _ = try await database.ingest(Array(events[start..<min(count, start + batch)]))
            }
            let elapsed = clock.now - started
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            print(String(format: "baseline: %.0f profiles/s (%d in batches of %d)",
                         Double(count - batch) / seconds, count, batch))
            return 0
        } catch {
            FileHandle.standardError.write(Data("profile-store \(command): \(error)\n".utf8))
            return 1
        }
    }
}
