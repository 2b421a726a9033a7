import Foundation
import GRDB
import Storage
import Testing
import TestSupport

@testable import oauth_gateway

@Suite("oauth-gateway group commit, over a real SQLite file")
struct GroupCommitTests {
    @Test("60 concurrent writes: each returns its own result, a failing one rolls back only itself, all others stored")
    func concurrentWritesShareTransactionsAndKeepTheirOwnOutcome() async throws {
        let directory = try TemporaryDirectory("group-commit")
        let database = try SQLiteDatabase(
            path: directory.file("test.sqlite"),
            migrations: [Migration("test.v1") { db in try db.execute(sql: "CREATE TABLE items (id INTEGER PRIMARY KEY)") }])
        let commit = GroupCommit(database: database, maxBatch: 16)
        struct Refused: Error, Equatable { var id: Int }

        let outcomes = await withTaskGroup(of: (Int, Result<Int, Refused>).self) { group in
            for id in 0..<60 {
                group.addTask {
                    do {
                        let echoed = try await commit.write { db -> Int in
                            try db.execute(sql: "INSERT INTO items (id) VALUES (?)", arguments: [id])
                            // Every seventh write fails after its insert: the insert must not survive.
                            if id % 7 == 3 { throw Refused(id: id) }
                            return id * 10
                        }
                        return (id, .success(echoed))
                    } catch {
                        return (id, .failure(error as! Refused))
                    }
                }
            }
            return await group.reduce(into: [Int: Result<Int, Refused>]()) { $0[$1.0] = $1.1 }
        }
        let failing = Set((0..<60).filter { $0 % 7 == 3 })
        for id in 0..<60 {
            #expect(outcomes[id] == (failing.contains(id) ? .failure(Refused(id: id)) : .success(id * 10)), "\(id)")
        }
        let stored = try await database.read { db in try Int.fetchAll(db, sql: "SELECT id FROM items ORDER BY id") }
        #expect(stored == (0..<60).filter { !failing.contains($0) })
    }
}
