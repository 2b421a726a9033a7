import Contracts
import ErasureKit
import Foundation
import GRDB
import Messaging
import Storage
import Testing
import TestSupport

@testable import profile_store

/// profile-store's changelog on real SQLite files, without a broker: what one file writes to its outbox for the
/// changelog topic, read back into another file as a partition's new owner does, must hold the same profiles and keep
/// every erasure's promises (issue 18).
@Suite("profile-store's changelog: written with every change, read back by a partition's new owner")
struct ProfileChangelogTests {
    static let changelog = ProfileChangelog(topic: "state", partitions: 4)
    let directory: TemporaryDirectory

    init() throws { directory = try TemporaryDirectory() }

    func store(_ name: String, changelog: ProfileChangelog? = Self.changelog) throws -> ProfileDatabase {
        try ProfileDatabase(
            path: directory.url.appendingPathComponent(name).path, accountsTopic: "acc", changelog: changelog)
    }

    /// The changelog records in the outbox, as a reader of the topic would get them (offsets in outbox order).
    func changelogRecords(of store: ProfileDatabase) async throws -> [KafkaMessage] {
        try await store.database.read { db in try Outbox.all(in: db) }
            .map(\.entry.message).filter { $0.topic == Self.changelog.topic }
            .enumerated().map { offset, message in
                KafkaMessage(
                    topic: message.topic, partition: message.partition ?? -1, offset: Int64(offset), key: message.key,
                    value: message.value, headers: message.headers)
            }
    }

    /// Every profile row, comparable across files.
    func rows(of store: ProfileDatabase) async throws -> [String] {
        try await store.database.read { db in
            try Row.fetchAll(db, sql: """
                SELECT tenant_id, app_id, account_id, name, email, holds_personal_data, fetched_at, platform_user_id,
                    kafka_partition, account_id IS NULL AND unlinked_id IS NOT NULL AS unlinked
                FROM profiles ORDER BY tenant_id, app_id, coalesce(account_id, ''), platform_user_id
                """).map { "\($0)" }
        }
    }

    @Test("every change goes to its subject's partition; read back into an empty file it is the same, erasures included")
    func readBackIsTheSame() async throws {
        let first = try store("first.sqlite")
        _ = try await first.ingest((0..<12).map { fetched("t1", "557058:a-\($0)", at: Double($0)) }
            + [fetched("t2", "557058:a-0", at: 20), fetched("t2", "557058:a-1", at: 21)])
        _ = try await first.erase([
            command("e-del", "t1", "557058:a-2", .delete, issuedAt: t0.addingTimeInterval(100)),
            command("e-dis", "t1", "557058:a-3", .disassociate, issuedAt: t0.addingTimeInterval(100)),
            command("e-closed", "t1", "557058:a-4", .scrub, cause: .atlassianClosed, issuedAt: t0.addingTimeInterval(100)),
            command("e-none", "t1", "557058:nobody", .delete, issuedAt: t0.addingTimeInterval(100)),
        ])
        let records = try await changelogRecords(of: first)
        for record in records {
            let key = try #require(record.keyString)
            guard !key.hasPrefix(":"), let account = try? AccountKey(parsing: key) else { continue }
            #expect(record.partition == Self.changelog.partition(of: account), "\(key) on partition \(record.partition)")
        }
        // Nothing of the deleted account's profile in its last record: a tombstone.
        let deleted = records.last { $0.keyString == "app-1:557058:a-2" }
        #expect(deleted != nil && deleted?.value == nil)

        let second = try store("second.sqlite")
        let restored = try await second.restore(records)
        #expect(restored.unreadable == 0 && restored.erasures == 4)
        #expect(try await rows(of: second) == rows(of: first))
        // The erasures' promises hold on the new owner: recorded outcomes, watermarks, suppression.
        #expect(try await second.recordedResult(of: "e-del")?.outcome == .erased)
        #expect(try await second.recordedResult(of: "e-none")?.outcome == .nothingHeld)
        #expect(try await second.isSuppressed(appId: "app-1", accountId: "557058:a-4"))
        let late = try await second.ingest([
            fetched("t1", "557058:a-2", at: 50), fetched("t1", "557058:a-4", at: 200), fetched("t1", "557058:a-2", at: 200),
        ])
        #expect(late.erased == 1 && late.suppressed == 1 && late.applied == 1, "\(late)")
        // Announcing after the read-back: every held account once, as the first file last announced it.
        let partitions = Set(0..<Int32(Self.changelog.partitions))
        #expect(try await second.announceAll(partitions: partitions) > 0)
        for account in ["557058:a-0", "557058:a-5"] {
            #expect(try await announcements(second, key: "app-1:\(account)").last??.tenantIds
                == announcements(first, key: "app-1:\(account)").last??.tenantIds)
        }
    }

    @Test("a replica forgets the profiles of the partitions it no longer owns, and only those")
    func dropKeepsOwnedPartitions() async throws {
        let store = try store("drop.sqlite")
        let accounts = (0..<40).map { "557058:d-\($0)" }
        _ = try await store.ingest(accounts.map { fetched("t1", $0, at: 1) })
        let keep: Set<Int32> = [1, 3]
        let kept = accounts.filter { keep.contains(Self.changelog.partition(of: try! AccountKey(appId: "app-1", accountId: $0))) }
        #expect(!kept.isEmpty && kept.count < accounts.count)
        #expect(try await store.dropPartitions(keeping: keep) == accounts.count - kept.count)
        #expect(try await store.profileCount() == kept.count)
        let announced = try await store.database.read { db in
            try String.fetchAll(db, sql: "SELECT account_id FROM announced_accounts ORDER BY account_id")
        }
        #expect(announced == kept.sorted())
    }

    @Test("a file made before the changelog is carried over once: its profiles, unlinked rows, watermarks and suppressions")
    func carryOver() async throws {
        let path = "old.sqlite"
        do {  // the file as the release before wrote it: no changelog, rows without a partition
            let old = try store(path, changelog: nil)
            _ = try await old.ingest([fetched("t1", "557058:o-1", at: 1), fetched("t1", "557058:o-2", at: 2),
                                      fetched("t1", "557058:o-3", at: 3)])
            _ = try await old.erase([
                command("e-dis", "t1", "557058:o-2", .disassociate, issuedAt: t0.addingTimeInterval(10)),
                command("e-closed", "t1", "557058:o-3", .delete, cause: .atlassianClosed, issuedAt: t0.addingTimeInterval(10)),
            ])
            try await old.database.write { db in try db.execute(sql: "DELETE FROM lethe_outbox") }
        }
        let upgraded = try store(path)
        let written = try await upgraded.carryOverToChangelog()
        #expect(try await upgraded.carryOverToChangelog() == 0, "carried over twice")
        let records = try await changelogRecords(of: upgraded)
        #expect(written == records.count && written > 0)
        // One record per held key (o-1, the unlinked o-2), and each mark on every partition.
        let keys = Dictionary(records.compactMap(\.keyString).map { ($0, 1) }, uniquingKeysWith: +)
        #expect(keys["app-1:557058:o-1"] == 1)
        #expect(keys.keys.filter { $0.hasPrefix(":unlinked:") }.count == 1)
        #expect(keys.filter { $0.key.hasPrefix(":erasure:") }.allSatisfy { $0.value == Self.changelog.partitions })
        #expect(!records.contains { $0.value.map { String(decoding: $0, as: UTF8.self).contains("557058:o-3") } ?? false })

        let owner = try store("owner.sqlite")
        _ = try await owner.restore(records)
        #expect(try await rows(of: owner) == rows(of: upgraded))
        #expect(try await owner.isSuppressed(appId: "app-1", accountId: "557058:o-3"))
        #expect(try await owner.ingest([fetched("t1", "557058:o-2", at: 5)]).erased == 1, "the watermark was lost")
    }
}
