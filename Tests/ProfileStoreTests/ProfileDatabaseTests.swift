import Contracts
import ErasureKit
import Foundation
import GRDB
import Messaging
import Storage
import Testing
import TestSupport

@testable import profile_store

/// A temporary directory removed at the end of the test.
final class TemporaryDirectory: Sendable {
    let url: URL

    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent(uniqueName("profile-store-test"))
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(at: url) }
}

let t0 = Date(timeIntervalSince1970: 1_750_000_000)

func fetched(
    _ tenant: String, _ account: String, at seconds: Double, name: String = "Ada", app: String = "app-1"
) -> ProfileFetched {
    ProfileFetched(
        tenantId: tenant, appId: app, accountId: account, name: name, email: "\(name.lowercased())@example.com",
        nickname: name, picture: "https://avatar.example/\(account)", fetchedAt: t0.addingTimeInterval(seconds))
}

func command(
    _ id: String, _ tenant: String, _ account: String, _ policy: ErasurePolicy,
    cause: ErasureCause = .tenantRequest, app: String = "app-1"
) -> EraseSubject {
    EraseSubject(
        erasureId: id, tenantId: tenant, appId: app, accountId: account, policy: policy, cause: cause,
        issuedAt: Date(), deadline: Date().addingTimeInterval(86400))
}

/// What the outbox says about the key, in order: an `AccountHeld` or nil for a tombstone.
func announcements(_ store: ProfileDatabase, key: String) async throws -> [AccountHeld?] {
    try await store.database.read { db in try Outbox.all(in: db) }
        .map(\.entry.message)
        .filter { $0.key == Array(key.utf8) }
        .map { message in
            try message.value.map { try EventCodec.decode(AccountHeld.self, from: $0) }
        }
}

@Suite("profile-store's SQLite: ingest, AccountHeld, erasure policies (real SQLite files)")
struct ProfileDatabaseTests {
    let directory: TemporaryDirectory
    let store: ProfileDatabase

    init() throws {
        directory = try TemporaryDirectory()
        store = try ProfileDatabase(path: directory.url.appendingPathComponent("p.sqlite").path, accountsTopic: "acc")
    }

    @Test("an older fetchedAt never overwrites a newer one, and duplicates change nothing")
    func outOfOrderAndDuplicates() async throws {
        let first = try await store.ingest([fetched("t1", "a1", at: 10, name: "New")])
        let second = try await store.ingest([
            fetched("t1", "a1", at: 5, name: "Old"), fetched("t1", "a1", at: 10, name: "New"),
        ])
        #expect(first == IngestSummary(applied: 1, stale: 0, suppressed: 0, announced: 1))
        #expect(second == IngestSummary(applied: 0, stale: 2, suppressed: 0, announced: 0))
        let profile = try #require(try await store.profile(tenantId: "t1", appId: "app-1", accountId: "a1"))
        #expect(profile.name == "New")
        #expect(profile.fetchedAt == t0.addingTimeInterval(10))
        // Out of order inside one batch too: the newest wins whatever the order.
        _ = try await store.ingest([fetched("t1", "a2", at: 20, name: "B"), fetched("t1", "a2", at: 15, name: "A")])
        #expect(try await store.profile(tenantId: "t1", appId: "app-1", accountId: "a2")?.name == "B")
        #expect(try await announcements(store, key: "app-1:a1").count == 1)
    }

    @Test("AccountHeld carries every tenant holding the account through the app and the oldest retrieval time")
    func accountHeldAcrossTenants() async throws {
        _ = try await store.ingest([fetched("t1", "a1", at: 100)])
        _ = try await store.ingest([fetched("t2", "a1", at: 50), fetched("t1", "a1", at: 200)])
        _ = try await store.ingest([fetched("t3", "a1", at: 10, app: "app-2")])
        let held = try await announcements(store, key: "app-1:a1")
        #expect(held.count == 2)
        #expect(held.last??.tenantIds == ["t1", "t2"])
        #expect(held.last??.updatedAt == t0.addingTimeInterval(50))
        #expect(held.first??.tenantIds == ["t1"])
        #expect(try await announcements(store, key: "app-2:a1").last??.tenantIds == ["t3"])
    }

    @Test("delete removes the profile; AccountHeld drops the tenant, then becomes a tombstone")
    func deletePolicy() async throws {
        _ = try await store.ingest([fetched("t1", "a1", at: 1), fetched("t2", "a1", at: 2)])
        #expect(try await store.erase(command("e1", "t1", "a1", .delete)) == ErasureResult(outcome: .erased))
        #expect(try await store.profile(tenantId: "t1", appId: "app-1", accountId: "a1") == nil)
        #expect(try await store.profile(tenantId: "t2", appId: "app-1", accountId: "a1") != nil)
        #expect(try await announcements(store, key: "app-1:a1").last??.tenantIds == ["t2"])
        #expect(try await store.erase(command("e2", "t2", "a1", .delete)).outcome == .erased)
        let last = try await announcements(store, key: "app-1:a1").last
        #expect(last != nil && last! == nil, "expected a tombstone once no tenant holds the account")
        #expect(try await store.erase(command("e3", "t1", "nobody", .delete)).outcome == .nothingHeld)
    }

    @Test("scrub clears name, email, nickname, picture and keeps the row and the platform user link")
    func scrubPolicy() async throws {
        _ = try await store.ingest([fetched("t1", "a1", at: 1)])
        let before = try #require(try await store.profile(tenantId: "t1", appId: "app-1", accountId: "a1"))
        #expect(try await store.erase(command("e1", "t1", "a1", .scrub)).outcome == .scrubbed)
        let after = try #require(try await store.profile(tenantId: "t1", appId: "app-1", accountId: "a1"))
        #expect(after.name == nil && after.email == nil && after.nickname == nil && after.picture == nil)
        #expect(after.platformUserId == before.platformUserId)
        let last = try await announcements(store, key: "app-1:a1").last
        #expect(last != nil && last! == nil, "the only tenant no longer holds personal data: tombstone")
    }

    @Test("disassociate removes the accountId link and keeps the rest under the platform user")
    func disassociatePolicy() async throws {
        _ = try await store.ingest([fetched("t1", "a1", at: 1), fetched("t2", "a1", at: 2)])
        let before = try #require(try await store.profile(tenantId: "t1", appId: "app-1", accountId: "a1"))
        #expect(try await store.erase(command("e1", "t1", "a1", .disassociate)).outcome == .disassociated)
        #expect(try await store.profile(tenantId: "t1", appId: "app-1", accountId: "a1") == nil)
        let rows = try await store.profiles(tenantId: "t1")
        #expect(rows.count == 1)
        #expect(rows.first?.platformUserId == before.platformUserId)
        #expect(rows.first?.accountId == nil)
        #expect(rows.first?.name == "Ada")
        #expect(try await announcements(store, key: "app-1:a1").last??.tenantIds == ["t2"])
    }

    @Test("after a closed erasure the account is suppressed: a late event is dropped and counted")
    func closedSuppresses() async throws {
        _ = try await store.ingest([fetched("t1", "a1", at: 1)])
        #expect(try await store.erase(command("e1", "t1", "a1", .scrub, cause: .atlassianClosed)).outcome == .scrubbed)
        #expect(try await store.isSuppressed(appId: "app-1", accountId: "a1"))
        let late = try await store.ingest([fetched("t1", "a1", at: 500, name: "Late"), fetched("t9", "a1", at: 5)])
        #expect(late == IngestSummary(applied: 0, stale: 0, suppressed: 2, announced: 0))
        #expect(try await store.profile(tenantId: "t1", appId: "app-1", accountId: "a1")?.name == nil)
        #expect(try await store.profile(tenantId: "t9", appId: "app-1", accountId: "a1") == nil)
        // A tenant-request erasure does not suppress.
        _ = try await store.ingest([fetched("t1", "a2", at: 1)])
        _ = try await store.erase(command("e2", "t1", "a2", .delete))
        #expect(try await store.ingest([fetched("t1", "a2", at: 2)]).applied == 1)
    }

    @Test("a repeated command returns the recorded outcome and is not applied again")
    func repeatedCommandIsIdempotent() async throws {
        _ = try await store.ingest([fetched("t1", "a1", at: 1)])
        #expect(try await store.erase(command("e1", "t1", "a1", .scrub)).outcome == .scrubbed)
        // The user signs in again: a newer profile arrives after the scrub.
        _ = try await store.ingest([fetched("t1", "a1", at: 2, name: "Back")])
        #expect(try await store.recordedResult(of: "e1") == ErasureResult(outcome: .scrubbed))
        #expect(try await store.erase(command("e1", "t1", "a1", .delete)) == ErasureResult(outcome: .scrubbed))
        #expect(try await store.profile(tenantId: "t1", appId: "app-1", accountId: "a1")?.name == "Back")
    }
}
