import Contracts
import ErasureKit
import Foundation
import GRDB
import Messaging
import Storage
import Testing
import TestSupport

@testable import profile_store

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
    cause: ErasureCause = .tenantRequest, app: String = "app-1", issuedAt: Date = Date()
) -> EraseSubject {
    EraseSubject(
        erasureId: id, tenantId: tenant, appId: app, accountId: account, policy: policy, cause: cause,
        issuedAt: issuedAt, deadline: Date().addingTimeInterval(86400))
}

/// What the outbox says about the key, in order: an `AccountHeld` or nil for a tombstone.
func announcements(_ store: ProfileDatabase, key: String) async throws -> [AccountHeld?] {
    try await store.database.read { db in try Outbox.all(in: db) }
        .map(\.entry.message)
        .filter { $0.topic == "acc" && $0.key == Array(key.utf8) }
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

    @Test("a file whose suppression list holds raw accountIds is converted to digests at open, and still suppresses")
    func rawSuppressionsConverted() async throws {
        let path = directory.url.appendingPathComponent("old.sqlite").path
        let account = "557058:raw-suppressed-0001"
        do {
            // The file as the release before the digests left it: the first two migrations, a raw entry.
            let old = try SQLiteDatabase(path: path, migrations: Array(ProfileDatabase.migrations.prefix(2)))
            try await old.write { db in
                try db.execute(
                    sql: "INSERT INTO suppressed_accounts (app_id, account_id, erasure_id, suppressed_at) VALUES (?, ?, ?, ?)",
                    arguments: ["app-1", account, "e-old", 1])
            }
            try await old.checkpoint()
        }
        #expect(sqliteFilesContain(path, account), "the scan cannot see the raw entry")
        let converted = try ProfileDatabase(path: path)
        #expect(try await converted.isSuppressed(appId: "app-1", accountId: account))
        #expect(try await converted.ingest([fetched("t1", account, at: 1)]).suppressed == 1)
        try await converted.database.checkpoint()
        #expect(!sqliteFilesContain(path, account), "the raw accountId stayed in the file after the conversion")
    }

    @Test("a closed account under scrub: the row stays with its platform user, without name, email or the accountId")
    func closedScrubDropsTheAccountId() async throws {
        let account = "557058:closed-scrubbed-0001"
        _ = try await store.ingest([fetched("t1", account, at: 1), fetched("t1", "557058:open-0002", at: 1)])
        #expect(try await store.erase(command("e1", "t1", account, .scrub, cause: .atlassianClosed)).outcome == .scrubbed)
        #expect(try await store.profileCount() == 2, "the scrubbed row is kept")
        #expect(try await store.profile(tenantId: "t1", appId: "app-1", accountId: account) == nil)
        let kept = try await store.database.read { db in
            try Row.fetchOne(db, sql: "SELECT name, email, platform_user_id FROM profiles WHERE account_id IS NULL")
                .map { ($0["name"] as String?, $0["email"] as String?, $0["platform_user_id"] as String) }
        }
        #expect(kept?.0 == nil && kept?.1 == nil && kept?.2.isEmpty == false, "\(String(describing: kept))")
        // No table holds it any more but the outbox's AccountHeld records, which the relay deletes once sent (the
        // file's bytes are checked where the relay runs: ProfileStoreServiceTests).
        let holding = try await store.database.read { db in
            try String.fetchAll(db, sql: "SELECT name FROM sqlite_master WHERE type = 'table'").filter { table in
                guard table != "lethe_outbox" else { return false }
                return try Row.fetchAll(db, sql: "SELECT * FROM \"\(table)\"").contains { row in
                    row.databaseValues.contains { "\($0)".contains(account) }
                }
            }
        }
        #expect(holding.isEmpty, "tables still holding the closed account's accountId: \(holding)")
        // A tenant-requested scrub keeps the link (the account is not closed).
        _ = try await store.erase(command("e2", "t1", "557058:open-0002", .scrub))
        #expect(try await store.profile(tenantId: "t1", appId: "app-1", accountId: "557058:open-0002") != nil)
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
        // A tenant-request erasure does not suppress: a sign-in after it stores the profile again.
        _ = try await store.ingest([fetched("t1", "a2", at: 1)])
        _ = try await store.erase(command("e2", "t1", "a2", .delete, issuedAt: t0.addingTimeInterval(1.5)))
        #expect(try await store.ingest([fetched("t1", "a2", at: 2)]).applied == 1)
    }

    @Test("a profile fetched before an erasure was issued never comes back, whatever the policy and cause; a later sign-in does unless closed",
          arguments: ErasurePolicy.allCases, ErasureCause.allCases)
    func noResurrection(policy: ErasurePolicy, cause: ErasureCause) async throws {
        let erasedAt = t0.addingTimeInterval(100)
        // Held, then erased: the profile fetched at 10 goes; one fetched at 50 (still in flight when the erasure was
        // issued, so it overtook it) arrives afterwards and must not bring anything back.
        _ = try await store.ingest([fetched("t1", "held", at: 10)])
        _ = try await store.erase(command("e-held", "t1", "held", policy, cause: cause, issuedAt: erasedAt))
        let before = try await store.profile(tenantId: "t1", appId: "app-1", accountId: "held")
        let overtaken = try await store.ingest([fetched("t1", "held", at: 50, name: "Overtaken")])
        #expect(overtaken.applied == 0 && overtaken.announced == 0, "\(overtaken)")
        #expect(try await store.profile(tenantId: "t1", appId: "app-1", accountId: "held") == before)
        #expect(try await store.profileCount() == (policy == .delete ? 0 : 1))
        // Not held yet when the erasure came (nothing-held): the profile fetched before it arrives later, dropped.
        #expect(try await store.erase(command("e-none", "t1", "late", policy, cause: cause, issuedAt: erasedAt)).outcome
            == .nothingHeld)
        let late = try await store.ingest([fetched("t1", "late", at: 99, name: "Late")])
        #expect(late.applied == 0 && late.announced == 0)
        #expect(try await store.profile(tenantId: "t1", appId: "app-1", accountId: "late") == nil)
        // The watermark is per tenant: another tenant's profile of the same account is not affected.
        #expect(try await store.ingest([fetched("t2", "late", at: 99)]).applied == (cause == .atlassianClosed ? 0 : 1))
        // A genuine sign-in after the erasure: stored again, unless Atlassian closed the account.
        let again = try await store.ingest([fetched("t1", "held", at: 200, name: "Again"), fetched("t1", "late", at: 200)])
        if cause == .atlassianClosed {
            #expect(again.applied == 0 && again.suppressed == 2)
        } else {
            #expect(again.applied == 2 && again.erased == 0)
            #expect(try await store.profile(tenantId: "t1", appId: "app-1", accountId: "held")?.name == "Again")
        }
    }

    @Test("one batch over many accounts: each changed account announced once, with what it holds after the batch")
    func oneBatchManyAccounts() async throws {
        // Before the batch: a2 is held by t1 (announced), a3 is suppressed, a4 announced and about to be unchanged.
        _ = try await store.ingest([fetched("t1", "a2", at: 30), fetched("t1", "a4", at: 40)])
        _ = try await store.erase(command("e1", "t1", "a3", .delete, cause: .atlassianClosed))
        // Ids that JSON must escape travel through the batch's key array like any other.
        let odd = #"557058:"quoted"\back\slash"#
        let summary = try await store.ingest([
            fetched("t1", "a1", at: 10), fetched("t2", "a1", at: 5), fetched("t1", "a1", at: 20),
            fetched("t2", "a2", at: 25),
            fetched("t1", "a3", at: 99),
            fetched("t1", "a4", at: 40),
            fetched("t1", odd, at: 1), fetched("t1", "a5", at: 2, app: "app-2"),
        ])
        #expect(summary == IngestSummary(applied: 6, stale: 1, suppressed: 1, announced: 4))
        func last(_ key: String) async throws -> [AccountHeld?] { try await announcements(store, key: key) }
        let a1 = try await last("app-1:a1")
        #expect(a1.count == 1, "one record per account per batch, not one per event")
        #expect(a1.last??.tenantIds == ["t1", "t2"] && a1.last??.updatedAt == t0.addingTimeInterval(5))
        let a2 = try await last("app-1:a2")
        #expect(a2.count == 2 && a2.last??.tenantIds == ["t1", "t2"])
        #expect(a2.last??.updatedAt == t0.addingTimeInterval(25))
        #expect(try await last("app-1:a3").isEmpty)
        #expect(try await last("app-1:a4").count == 1, "an unchanged account is not announced again")
        #expect(try await last("app-1:\(odd)").last??.accountId == odd)
        #expect(try await last("app-2:a5").last??.tenantIds == ["t1"])
    }

    @Test("AccountHeld bodies are byte for byte what EventCodec writes; ids that need escaping take EventCodec")
    func accountHeldBodiesMatchTheCodec() throws {
        let cases = [
            AccountHeld(appId: "app-1", accountId: "557058:f0e1", updatedAt: t0, tenantIds: ["t1"]),
            AccountHeld(
                appId: "client-Zx9", accountId: "a", updatedAt: t0.addingTimeInterval(0.0125),
                tenantIds: ["tenant-b", "tenant-a/with/slashes", "ténant ✓"]),
            AccountHeld(appId: "app", accountId: "x", updatedAt: Date(timeIntervalSince1970: 0), tenantIds: []),
        ]
        for event in cases {
            let body = try #require(OutboxRecords.body(of: event))
            #expect(body == Array(try EventCodec.encode(event)), "\(String(decoding: body, as: UTF8.self))")
        }
        let escaped = AccountHeld(appId: "app", accountId: "a\"b\\c\u{1}", updatedAt: t0, tenantIds: ["t\n1"])
        #expect(OutboxRecords.body(of: escaped) == nil)
        let record = try OutboxRecords.accountHeld(escaped, topic: "acc", source: ProfileDatabase.source, time: t0)
        #expect(record.value == Array(try EventCodec.encode(escaped)))
        for event in cases + [escaped] {
            let record = try OutboxRecords.accountHeld(event, topic: "acc", source: ProfileDatabase.source, time: t0)
            let headers = Dictionary(record.headers.map { ($0.name, $0.stringValue ?? "") }) { _, last in last }
            let attributes = try CloudEventAttributes(headers: headers)
            #expect(attributes.type == AccountHeld.eventType && attributes.source == ProfileDatabase.source)
            #expect(attributes.time == t0)
            #expect(record.key == Array("\(event.appId):\(event.accountId)".utf8))
            let decoded = try EventCodec.decode(AccountHeld.self, value: record.value ?? [], headers: headers)
            // The wire carries milliseconds: 0.0125 s comes back as 0.013 s.
            #expect(decoded.appId == event.appId && decoded.accountId == event.accountId)
            #expect(decoded.tenantIds == event.tenantIds && millis(decoded.updatedAt) == millis(event.updatedAt))
        }
    }

    @Test("ProfilesHeld bodies are byte for byte what EventCodec writes, optionals absent or not; escaping takes EventCodec")
    func profilesHeldBodiesMatchTheCodec() throws {
        let full = ProfilesHeld.Profile(
            platformUserId: "u-1", tenantId: "tenant-a/1", name: "Ada Lovelace ✓", email: "ada@example.com",
            nickname: "ada", picture: "https://avatar.example/a.png", holdsPersonalData: true,
            fetchedAt: t0.addingTimeInterval(0.0125))
        let scrubbed = ProfilesHeld.Profile(
            platformUserId: "u-2", tenantId: "t2", name: nil, email: nil, nickname: nil, picture: nil,
            holdsPersonalData: false, fetchedAt: t0)
        for event in [
            ProfilesHeld(appId: "app-1", accountId: "557058:f0e1", profiles: [full, scrubbed]),
            ProfilesHeld(appId: "app-1", accountId: nil, profiles: [scrubbed]),
        ] {
            let body = try #require(OutboxRecords.body(of: event))
            #expect(body == Array(try EventCodec.encode(event)), "\(String(decoding: body, as: UTF8.self))")
        }
        var quoted = full
        quoted.name = "Ada \"the first\""
        let escaped = ProfilesHeld(appId: "app-1", accountId: "a", profiles: [quoted])
        #expect(OutboxRecords.body(of: escaped) == nil)
        let record = try OutboxRecords.profilesHeld(escaped, key: "app-1:a", topic: "s", source: "x", time: t0)
        #expect(record.value == Array(try EventCodec.encode(escaped)))
    }

    @Test("a batch of commands is applied in order in one call: each is recorded, a repeat within it is not re-applied")
    func batchOfCommands() async throws {
        _ = try await store.ingest([fetched("t1", "a1", at: 1), fetched("t1", "a2", at: 1), fetched("t2", "a1", at: 1)])
        let results = try await store.erase([
            command("e1", "t1", "a1", .scrub), command("e2", "t1", "a2", .delete),
            command("e1", "t1", "a1", .delete),  // a re-send next to the original: the first outcome stands
            command("e3", "t1", "nobody", .delete), command("e4", "t2", "a1", .disassociate, cause: .atlassianClosed),
        ])
        #expect(results.map(\.outcome) == [.scrubbed, .erased, .scrubbed, .nothingHeld, .disassociated])
        let scrubbed = try await store.profile(tenantId: "t1", appId: "app-1", accountId: "a1")
        #expect(scrubbed != nil && scrubbed?.name == nil && scrubbed?.email == nil, "scrubbed, not deleted")
        #expect(try await store.profile(tenantId: "t1", appId: "app-1", accountId: "a2") == nil)
        for (id, outcome) in [("e1", ErasureOutcome.scrubbed), ("e2", .erased), ("e3", .nothingHeld), ("e4", .disassociated)] {
            #expect(try await store.recordedResult(of: id) == ErasureResult(outcome: outcome))
        }
        // The batch and the one-at-a-time path share their records.
        #expect(try await store.erase(command("e2", "t1", "a2", .scrub)) == ErasureResult(outcome: .erased))
        #expect(try await store.erase([command("e4", "t2", "a1", .delete)]) == [ErasureResult(outcome: .disassociated)])
    }

    @Test("a repeated command returns the recorded outcome and is not applied again")
    func repeatedCommandIsIdempotent() async throws {
        _ = try await store.ingest([fetched("t1", "a1", at: 1)])
        #expect(try await store.erase(command("e1", "t1", "a1", .scrub, issuedAt: t0.addingTimeInterval(1.5))).outcome
            == .scrubbed)
        // The user signs in again: a newer profile arrives after the scrub.
        _ = try await store.ingest([fetched("t1", "a1", at: 2, name: "Back")])
        #expect(try await store.recordedResult(of: "e1") == ErasureResult(outcome: .scrubbed))
        #expect(try await store.erase(command("e1", "t1", "a1", .delete)) == ErasureResult(outcome: .scrubbed))
        #expect(try await store.profile(tenantId: "t1", appId: "app-1", accountId: "a1")?.name == "Back")
    }
}
