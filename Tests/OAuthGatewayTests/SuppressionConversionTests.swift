import Contracts
import Foundation
import GRDB
import Storage
import Testing
import TestSupport

@testable import oauth_gateway

@Suite("oauth-gateway's suppression list, over a real SQLite file")
struct SuppressionConversionTests {
    @Test("a file whose suppression list holds raw accountIds is converted to digests at open, and still suppresses")
    func rawSuppressionsConverted() async throws {
        let directory = try TemporaryDirectory("gw-suppression")
        let path = directory.file("oauth-gateway.sqlite")
        let account = "5b10ac8d82e05b22cc7d4eaa"
        do {
            // The file as the release before the digests left it: the first two migrations, a raw entry.
            let old = try SQLiteDatabase(path: path, migrations: Array(GatewayDatabase.migrations.prefix(2)))
            try await old.write { db in
                try db.execute(
                    sql: "INSERT INTO suppressed_accounts (account_id, erasure_id, suppressed_at) VALUES (?, ?, ?)",
                    arguments: [account, "e-old", 1.0])
            }
            try await old.checkpoint()
        }
        #expect(sqliteFilesContain(path, account), "the scan cannot see the raw entry")
        let converted = try GatewayDatabase(path: path, topics: LetheTopics(namespace: nil))
        #expect(try await converted.isSuppressed(accountId: account))
        #expect(try await !converted.isSuppressed(accountId: "5b10ac8d82e05b22cc7d4eab"))
        try await converted.database.checkpoint()
        #expect(!sqliteFilesContain(path, account), "the raw accountId stayed in the file after the conversion")
    }
}
