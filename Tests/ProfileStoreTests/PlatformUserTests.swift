import Contracts
import Foundation
import GRDB
import Storage
import Testing
import TestSupport

@testable import profile_store

@Suite("profile-store files profiles under the gateway's user id (real SQLite files)")
struct PlatformUserTests {
    @Test("ProfileFetched's userId is the platform user id; one user keeps it across two apps of a tenant")
    func gatewayUserIdAcrossApps() async throws {
        let directory = try TemporaryDirectory()
        let store = try ProfileDatabase(path: directory.url.appendingPathComponent("p.sqlite").path, accountsTopic: "acc")
        var viaOwnApp = fetched("t1", "a1", at: 10, app: "app-own")
        viaOwnApp.userId = "user-1"
        var viaSharedApp = fetched("t1", "a1", at: 20, app: "app-shared")
        viaSharedApp.userId = "user-1"
        let summary = try await store.ingest([viaOwnApp, viaSharedApp])

        #expect(summary.applied == 2)
        let rows = try await store.profiles(tenantId: "t1")
        #expect(rows.map(\.platformUserId) == ["user-1", "user-1"])
        #expect(Set(rows.map(\.appId)) == ["app-own", "app-shared"])
    }

    @Test("a 1.0 event without userId gets a random id; a later event with one adopts the gateway's")
    func withoutUserIdThenWithIt() async throws {
        let directory = try TemporaryDirectory()
        let store = try ProfileDatabase(path: directory.url.appendingPathComponent("p.sqlite").path, accountsTopic: "acc")
        _ = try await store.ingest([fetched("t1", "a1", at: 10)])
        let random = try #require(try await store.profile(tenantId: "t1", appId: "app-1", accountId: "a1"))
        #expect(UUID(uuidString: random.platformUserId) != nil)

        var later = fetched("t1", "a1", at: 20)
        later.userId = "user-9"
        _ = try await store.ingest([later])
        let adopted = try #require(try await store.profile(tenantId: "t1", appId: "app-1", accountId: "a1"))
        #expect(adopted.platformUserId == "user-9")
        #expect(adopted.fetchedAt == later.fetchedAt)
    }

    @Test("a file made by the v1 schema (platform_user_id UNIQUE) migrates with its rows intact")
    func migratesAVersionOneFile() async throws {
        let directory = try TemporaryDirectory()
        let path = directory.url.appendingPathComponent("p.sqlite").path
        do {
            let v1 = try SQLiteDatabase(path: path, migrations: Array(ProfileDatabase.migrations.prefix(1)))
            try await v1.write { db in
                try db.execute(sql: """
                    INSERT INTO profiles (platform_user_id, tenant_id, app_id, account_id, name, fetched_at, stored_at)
                    VALUES ('u-old', 't1', 'app-1', 'a1', 'Ada', 1000, 1000)
                    """)
            }
        }
        let store = try ProfileDatabase(path: path, accountsTopic: "acc")
        let row = try #require(try await store.profile(tenantId: "t1", appId: "app-1", accountId: "a1"))
        #expect(row.platformUserId == "u-old")
        #expect(row.name == "Ada")

        var second = fetched("t1", "a1", at: 10, app: "app-2")
        second.userId = "u-old"
        #expect(try await store.ingest([second]).applied == 1)
        let indexes = try await store.database.read { db in
            try String.fetchAll(db, sql: "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'profiles'")
        }
        #expect(Set(indexes).isSuperset(of: ["profiles_by_account", "profiles_by_app_account", "profiles_by_user"]))
    }
}
