import Foundation
import GRDB
import Logging
import Messaging
import ServiceLifecycle
import Storage
import Testing
import TestSupport

let itemsMigration = Migration("test.v1.items") { db in
    try db.execute(sql: "CREATE TABLE items (id TEXT PRIMARY KEY, value INTEGER NOT NULL)")
}

@Suite("SQLite file: pool, migrations, processed events")
struct SQLiteDatabaseTests {
    @Test("the file is WAL, migrations run once by name, and reopening keeps the data")
    func migratesOnceAndUsesWAL() async throws {
        let directory = try TemporaryDirectory()
        let path = directory.file("a.sqlite")
        do {
            let database = try SQLiteDatabase(path: path, migrations: [itemsMigration])
            let mode = try await database.read { db in try String.fetchOne(db, sql: "PRAGMA journal_mode") }
            #expect(mode == "wal")
            try await database.write { db in try db.execute(sql: "INSERT INTO items VALUES ('a', 1)") }
        }
        let counter = LockedValue(0)
        let counting = Migration("test.v2.counted") { _ in counter.withValue { $0 += 1 } }
        for _ in 0..<2 {
            let reopened = try SQLiteDatabase(path: path, migrations: [itemsMigration, counting])
            let names = try await reopened.read { db in
                try String.fetchAll(db, sql: "SELECT identifier FROM grdb_migrations ORDER BY rowid")
            }
            #expect(names == [
                "storage.v1.outbox", "storage.v1.processed-events", "storage.v2.outbox-by-key", "test.v1.items",
                "test.v2.counted",
            ])
            let value = try await reopened.read { db in try Int.fetchOne(db, sql: "SELECT value FROM items") }
            #expect(value == 1)
            try await reopened.check()
        }
        #expect(counter.withValue { $0 } == 1)
    }

    @Test("""
        replicas opening one new file at once (compose's replicas share a volume and start together): three processes \
        open it together, each migration runs once, none fails on a table another created
        """)
    func concurrentProcessesMigrateOnce() async throws {
        let directory = try TemporaryDirectory()
        // The exit tests' processes inherit the environment: it tells them where the file is.
        setenv("LETHE_TEST_SHARED_DATABASE", directory.file("shared.sqlite"), 1)
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<3 {
                group.addTask {
                    await #expect(processExitsWith: .success) {
                        let path = ProcessInfo.processInfo.environment["LETHE_TEST_SHARED_DATABASE"]!
                        // Slow enough that, unserialised, every process reads "not applied" before the first commits
                        // (GRDB reads the applied migrations before it takes the write lock).
                        let slow = Migration("test.v2.slow") { db in
                            Thread.sleep(forTimeInterval: 0.5)
                            try db.execute(sql: "CREATE TABLE slow (id INTEGER PRIMARY KEY)")
                        }
                        _ = try SQLiteDatabase(path: path, migrations: [itemsMigration, slow])
                    }
                }
            }
        }
        let database = try SQLiteDatabase(path: directory.file("shared.sqlite"), migrations: [itemsMigration])
        let applied = try await database.read { db in try String.fetchAll(db, sql: "SELECT identifier FROM grdb_migrations") }
        #expect(applied.filter { $0 == "test.v2.slow" }.count == 1)
    }

    @Test("readNow sees the latest commit and, mixed with many async reads at once, never waits for ever")
    func readNowBesideAsyncReads() async throws {
        let directory = try TemporaryDirectory()
        let database = try SQLiteDatabase(path: directory.file("d.sqlite"), migrations: [itemsMigration])
        try await database.write { db in try db.execute(sql: "INSERT INTO items VALUES ('a', 1)") }
        #expect(try database.readNow { try Int.fetchOne($0, sql: "SELECT value FROM items") } == 1)
        try await database.write { db in try db.execute(sql: "UPDATE items SET value = 2") }
        #expect(try database.readNow { try Int.fetchOne($0, sql: "SELECT value FROM items") } == 2)
        // A synchronous read of the pool's readers, made on the cooperative pool's few threads while async reads held
        // every reader and waited for one of those threads, hung the gateway for good: readNow has its own connection.
        // A hang stops every task, a timeout task included, so the watchdog is a thread: it fails the run loudly. It
        // waits 5 minutes, not 1: in a full run on two cores, with the dev broker ahead in priority, this process's two
        // cooperative threads share the CPU with hundreds of librdkafka threads, and the reads took 70 s in one CI run.
        let done = DispatchSemaphore(value: 0)
        Thread {
            if done.wait(timeout: .now() + 300) == .timedOut {
                FileHandle.standardError.write(Data("readNow beside async reads: 3,200 reads hung for 300 s\n".utf8))
                exit(1)
            }
        }.start()
        await withTaskGroup(of: Void.self) { readers in
            for _ in 0..<64 {
                readers.addTask {
                    for _ in 0..<50 {
                        _ = try? database.readNow { try Int.fetchOne($0, sql: "SELECT count(*) FROM items") }
                        _ = try? await database.read { try Int.fetchOne($0, sql: "SELECT count(*) FROM items") }
                    }
                }
            }
        }
        done.signal()
    }

    @Test("commits are synchronous=FULL on the writer; secure_delete when asked; discarding by key uses an index")
    func durabilityAndErasureSettings() async throws {
        let directory = try TemporaryDirectory()
        let database = try SQLiteDatabase(path: directory.file("d.sqlite"), migrations: [], secureDelete: true)
        let (synchronous, secureDelete, plan) = try await database.write { db in
            (try Int.fetchOne(db, sql: "PRAGMA synchronous"), try Int.fetchOne(db, sql: "PRAGMA secure_delete"),
             try Row.fetchAll(
                db, sql: "EXPLAIN QUERY PLAN DELETE FROM lethe_outbox WHERE topic = ? AND key = ?", arguments: ["t", Data()]
             ).map { $0["detail"] as String? ?? "" }.joined(separator: " "))
        }
        #expect(synchronous == 2, "synchronous is \(String(describing: synchronous)), not FULL (2)")
        #expect(secureDelete == 1)
        #expect(plan.contains("lethe_outbox_by_key"), "\(plan)")
        // An unsynced write commits (and is visible) like any other, and leaves the writer at FULL afterwards.
        try await database.writeUnsynced { db in
            try Outbox.enqueue(OutgoingMessage(topic: "t", key: nil, value: Array("v".utf8)), in: db)
        }
        #expect(try await database.read { try Outbox.pendingCount(in: $0) } == 1)
        #expect(try await database.write { try Int.fetchOne($0, sql: "PRAGMA synchronous") } == 2)
    }

    @Test("a writer cache and a WAL checkpoint size apply to the writer when asked, SQLite's defaults otherwise")
    func writerTuning() async throws {
        let directory = try TemporaryDirectory()
        func writerSettings(_ database: SQLiteDatabase) async throws -> (cache: Int?, autocheckpoint: Int?) {
            try await database.write { db in
                (try Int.fetchOne(db, sql: "PRAGMA cache_size"), try Int.fetchOne(db, sql: "PRAGMA wal_autocheckpoint"))
            }
        }
        let tuned = try SQLiteDatabase(
            path: directory.file("tuned.sqlite"), migrations: [], writerCacheKiB: 8192, walAutocheckpointPages: 4000)
        let tunedSettings = try await writerSettings(tuned)
        #expect(tunedSettings.cache == -8192 && tunedSettings.autocheckpoint == 4000, "\(tunedSettings)")
        let plain = try SQLiteDatabase(path: directory.file("plain.sqlite"), migrations: [])
        let plainSettings = try await writerSettings(plain)
        #expect(plainSettings.cache == -2000 && plainSettings.autocheckpoint == 1000, "\(plainSettings)")
    }

    @Test("outbox headers come back exactly as enqueued: none, empty values, binary and non-ASCII")
    func outboxHeadersRoundTrip() async throws {
        let directory = try TemporaryDirectory()
        let database = try SQLiteDatabase(path: directory.file("h.sqlite"), migrations: [])
        let messages = [
            OutgoingMessage(topic: "t", key: "a", value: [1]),
            OutgoingMessage(topic: "t", key: "b", value: nil, headers: [
                KafkaHeader(name: "empty", value: []), KafkaHeader(name: "binary", value: [0, 255, 10, 0]),
                KafkaHeader(name: "ünïcødé", string: "välue ✓"),
                KafkaHeader(name: "", value: Array(repeating: 7, count: 70_000)),
            ]),
        ]
        try await database.write { db in for message in messages { try Outbox.enqueue(message, in: db) } }
        let stored = try await database.read { db in try Outbox.all(in: db) }.map(\.entry.message)
        #expect(stored == messages)
    }

    @Test("the checkpointer empties the WAL after a request, coalescing a burst")
    func checkpointerEmptiesTheWAL() async throws {
        let directory = try TemporaryDirectory()
        let path = directory.file("w.sqlite")
        let database = try SQLiteDatabase(path: path, migrations: [itemsMigration], secureDelete: true)
        func walSize() -> Int {
            ((try? FileManager.default.attributesOfItem(atPath: path + "-wal"))?[.size] as? Int) ?? 0
        }
        try await database.write { db in
            for index in 0..<200 {
                try db.execute(sql: "INSERT INTO items (id, value) VALUES (?, ?)", arguments: ["secret-\(index)", index])
            }
        }
        #expect(walSize() > 0)
        let checkpointer = WALCheckpointer(database: database, interval: .milliseconds(50), logger: makeTestLogger())
        try await withRunningServices([checkpointer], logger: makeTestLogger()) {
            for _ in 0..<100 { checkpointer.request() }
            #expect(await eventually(timeout: .seconds(10)) { walSize() == 0 }, "WAL still \(walSize()) bytes")
        }
    }

    @Test("a processed event is recorded once; the first outcome stands")
    func processedEventsAreRecordedOnce() async throws {
        let directory = try TemporaryDirectory()
        let database = try SQLiteDatabase(path: directory.file("p.sqlite"), migrations: [])
        let results = try await database.write { db in
            [
                try ProcessedEvents.record("e1", consumer: "c", outcome: "erased", in: db),
                try ProcessedEvents.record("e1", consumer: "c", outcome: "scrubbed", in: db),
                try ProcessedEvents.record("e1", consumer: "other", outcome: "scrubbed", in: db),
            ]
        }
        #expect(results == [true, false, true])
        let outcomes = try await database.read { db in
            [
                try ProcessedEvents.outcome(of: "e1", consumer: "c", in: db),
                try ProcessedEvents.outcome(of: "e1", consumer: "other", in: db),
                try ProcessedEvents.outcome(of: "e2", consumer: "c", in: db),
            ]
        }
        #expect(outcomes == ["erased", "scrubbed", nil])
    }

    @Test("domain rows and outbox rows commit together or not at all")
    func outboxIsTransactional() async throws {
        let directory = try TemporaryDirectory()
        let database = try SQLiteDatabase(path: directory.file("o.sqlite"), migrations: [itemsMigration])
        struct Abort: Error {}
        await #expect(throws: Abort.self) {
            try await database.write { db in
                try db.execute(sql: "INSERT INTO items VALUES ('x', 1)")
                try Outbox.enqueue(OutgoingMessage(topic: "t", key: "x", value: [1]), in: db)
                throw Abort()
            }
        }
        try await database.write { db in
            try db.execute(sql: "INSERT INTO items VALUES ('y', 2)")
            try Outbox.enqueue(
                OutgoingMessage(topic: "t", key: "y", value: nil, headers: [KafkaHeader(name: "h", value: [0, 9])]),
                in: db)
        }
        let (items, entries) = try await database.read { db in
            (try String.fetchAll(db, sql: "SELECT id FROM items"), try Outbox.all(in: db))
        }
        #expect(items == ["y"])
        #expect(entries.count == 1)
        #expect(entries.first?.sent == false)
        #expect(entries.first?.entry.message == OutgoingMessage(
            topic: "t", key: "y", value: nil, headers: [KafkaHeader(name: "h", value: [0, 9])]))
    }
}

@Suite("Outbox relay against the dev broker")
struct OutboxRelayTests {
    let kafka: KafkaFixture

    init() throws { kafka = try KafkaFixture("outbox") }

    /// Enqueues `count` records over `keys` keys, value = "<key>#<sequence per key>", in transactions of 50.
    func enqueue(_ count: Int, keys: Int, topic: String, into database: SQLiteDatabase) async throws {
        for start in stride(from: 0, to: count, by: 50) {
            try await database.write { db in
                for index in start..<min(count, start + 50) {
                    let key = "k\(index % keys)"
                    try Outbox.enqueue(
                        OutgoingMessage(topic: topic, key: key, value: Array("\(key)#\(index / keys)".utf8)), in: db)
                }
            }
        }
    }

    /// Consumes until `count` records arrived; returns the values per key in arrival order.
    func consume(_ count: Int, topic: String) async throws -> [String: [Int]] {
        let consumer = try kafka.makeConsumer(group: uniqueName("g"), topics: [topic])
        return try await withRunningServices([consumer], logger: kafka.logger) {
            var byKey: [String: [Int]] = [:]
            var received = 0
            for try await message in consumer.messages {
                let text = String(decoding: message.value ?? [], as: UTF8.self).split(separator: "#")
                byKey[String(text[0]), default: []].append(Int(text[1])!)
                received += 1
                if received == count { break }
            }
            return byKey
        }
    }

    @Test("the relay publishes every record in order per key, then marks them sent")
    func publishesInOrderAndMarksSent() async throws {
        let directory = try TemporaryDirectory()
        let topic = try await kafka.makeTopic(partitions: 4)
        let database = try SQLiteDatabase(path: directory.file("r.sqlite"), migrations: [])
        try await enqueue(600, keys: 12, topic: topic, into: database)
        let producer = try kafka.makeProducer()
        let relay = OutboxRelay(database: database, producer: producer, logger: kafka.logger, batchSize: 100)
        try await withRunningServices([producer, relay], logger: kafka.logger) {
            relay.notify()
            let drained = await eventually(timeout: .seconds(30)) {
                (try? await database.read { db in try Outbox.pendingCount(in: db) }) == 0
            }
            #expect(drained)
        }
        let byKey = try await consume(600, topic: topic)
        #expect(byKey.count == 12)
        for (key, sequence) in byKey { #expect(sequence == Array(0..<50), "key \(key) out of order or incomplete") }
        let entries = try await database.read { db in try Outbox.all(in: db) }
        #expect(entries.count == 600 && entries.allSatisfy(\.sent))
    }

    @Test("with zero retention the relay deletes what it published; after a tombstone the checkpoint takes its key out of the files")
    func zeroRetentionDeletesSentRecords() async throws {
        let directory = try TemporaryDirectory()
        let topic = try await kafka.makeTopic(partitions: 2)
        let tombstones = try await kafka.makeTopic(partitions: 1)
        let path = directory.file("z.sqlite")
        let database = try SQLiteDatabase(path: path, migrations: [], secureDelete: true)
        try await enqueue(200, keys: 4, topic: topic, into: database)
        try await database.write { db in
            try Outbox.enqueue(.tombstone(topic: tombstones, key: "erased-account-key"), in: db)
        }
        #expect(sqliteFilesContain(path, "erased-account-key"), "the scan cannot see the records")
        let producer = try kafka.makeProducer()
        let checkpointer = WALCheckpointer(database: database, interval: .milliseconds(100), logger: kafka.logger)
        let relay = OutboxRelay(
            database: database, producer: producer, logger: kafka.logger, batchSize: 50, retention: .zero,
            checkpointer: checkpointer)
        try await withRunningServices([producer, checkpointer, relay], logger: kafka.logger) {
            relay.notify()
            let emptied = await eventually(timeout: .seconds(30)) {
                (try? await database.read { db in try Outbox.all(in: db) })?.isEmpty == true
            }
            #expect(emptied, "sent records stayed in the outbox")
            let gone = await eventually(timeout: .seconds(10)) { !sqliteFilesContain(path, "erased-account-key") }
            #expect(gone, "the tombstone's key stayed in the database or WAL file's bytes")
        }
        let byKey = try await consume(200, topic: topic)
        #expect(byKey.count == 4 && byKey.values.allSatisfy { $0 == Array(0..<50) })
    }

    @Test("records left unsent by a previous process are published by the next one, in order, none lost")
    func resendsWhatAPreviousProcessLeft() async throws {
        let directory = try TemporaryDirectory()
        let path = directory.file("crash.sqlite")
        let topic = try await kafka.makeTopic(partitions: 3)
        // The "previous process": it committed its rows, published the first 100 and died before marking them sent.
        do {
            let database = try SQLiteDatabase(path: path, migrations: [])
            try await enqueue(300, keys: 6, topic: topic, into: database)
            let producer = try kafka.makeProducer()
            try await withRunningServices([producer], logger: kafka.logger) {
                let first = try await database.read { db in try Outbox.pending(limit: 100, in: db) }
                try await producer.send(first.map(\.message))
            }
        }
        let database = try SQLiteDatabase(path: path, migrations: [])
        #expect(try await database.read { db in try Outbox.pendingCount(in: db) } == 300)
        let producer = try kafka.makeProducer()
        let relay = OutboxRelay(
            database: database, producer: producer, logger: kafka.logger, pollInterval: .milliseconds(50))
        try await withRunningServices([producer, relay], logger: kafka.logger) {
            let drained = await eventually(timeout: .seconds(30)) {
                (try? await database.read { db in try Outbox.pendingCount(in: db) }) == 0
            }
            #expect(drained, "the relay did not pick up the rows without a notify")
        }
        // 100 duplicates (the unmarked batch) and then all 300: per key, the last 50 values arrive in order.
        let byKey = try await consume(400, topic: topic)
        #expect(byKey.count == 6)
        for (key, sequence) in byKey {
            #expect(Array(sequence.suffix(50)) == Array(0..<50), "key \(key): the newest value must come last")
            #expect(Set(sequence) == Set(0..<50), "key \(key) lost a record")
        }
    }

    @Test("""
        waitUntilSent waits for the records unsent when it is called, not for those written while it waits (under a \
        steady load the outbox is seldom empty); at its deadline it says how many of them are left
        """)
    func waitUntilSentWaitsForWhatWasThere() async throws {
        let kafka = try KafkaFixture("outbox-wait")
        let directory = try TemporaryDirectory()
        let database = try SQLiteDatabase(path: directory.file("wait.sqlite"), migrations: [])
        // Not running: this test publishes by hand, so it decides what is sent when.
        let relay = OutboxRelay(database: database, producer: try kafka.makeProducer(), logger: kafka.logger)
        #expect(try await relay.waitUntilSent(deadline: .now) == 0)
        try await enqueue(2, keys: 2, topic: "t", into: database)
        #expect(try await relay.waitUntilSent(deadline: .now + .milliseconds(100)) == 2)

        // What a call sees as unsent, then a record written while it waits, then the first two sent.
        let newest = try #require(try await database.read { db in try Outbox.newestPendingId(in: db) })
        try await enqueue(1, keys: 1, topic: "t", into: database)
        try await database.write { db in try Outbox.markSent(through: newest, in: db) }
        #expect(try await relay.waitUntilSent(through: newest, deadline: .now + .seconds(20)) == 0)
        #expect(try await database.read { db in try Outbox.pendingCount(in: db) } == 1)
    }
}

@Suite("One replica per SQLite file (OwnedDataFile)")
struct OwnedDataFileTests {
    @Test("a second claim on a claimed file is refused, naming it; once let go, the file can be claimed again")
    func oneClaimAtATime() throws {
        let directory = try TemporaryDirectory()
        let path = directory.file("service.sqlite")
        let first = try OwnedDataFile(path, hint: "give each replica its own")
        #expect {
            _ = try OwnedDataFile(path, hint: "give each replica its own")
        } throws: { error in
            "\(error)" == "\(path) is in use by another replica; each replica needs a data directory of its own (give each replica its own)"
        }
        // Another file in the same directory is another claim.
        let other = try OwnedDataFile(directory.file("other.sqlite"), hint: "")
        first.release()
        first.release()  // twice is harmless
        let again = try OwnedDataFile(path, hint: "")
        _ = (other, again)
    }
}
