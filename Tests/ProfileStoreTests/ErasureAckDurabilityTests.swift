import Contracts
import ErasureKit
import Foundation
import GRDB
import Messaging
import Storage
import Testing
import TestSupport

@testable import profile_store

/// profile-store acks an erasure only once the erasure's changelog records are on the broker (docs/contracts.md,
/// "State another replica reads back"): a replica killed between its ack and their sending would leave the partition's
/// next owner reading the profile back while the executor counts it erased. Over the dev broker and a real SQLite file.
@Suite("profile-store's erasure handler: an outcome is handed back once its changelog records are on the broker")
struct ErasureAckDurabilityTests {
    let kafka: KafkaFixture

    init() throws { kafka = try KafkaFixture("profile-store-ack-durability") }

    @Test("""
        with a relay nobody wakes (it polls once an hour), applying a batch, one command, or answering a recorded one \
        returns only after the outbox is sent: nothing is pending when the outcome comes back
        """)
    func outcomesWaitForTheChangelog() async throws {
        let topics = LetheTopics(namespace: uniqueName("ps-ack"))
        let changelog = ProfileChangelog(topic: topics.profileState, partitions: 3)
        let admin = try KafkaAdmin(bootstrapServers: kafka.bootstrapServers, logger: kafka.logger)
        try await admin.ensureTopics([
            TopicSpec(Topics.profileState, in: topics, partitions: 3),
            TopicSpec(Topics.pdrAccounts, in: topics, partitions: 3),
        ])
        let directory = try TemporaryDirectory("profile-store-ack-durability")
        let database = try ProfileDatabase(
            path: directory.file("profiles.sqlite"), accountsTopic: topics.pdrAccounts, changelog: changelog)
        let producer = try kafka.makeProducer()
        let relay = OutboxRelay(
            database: database.database, producer: producer, logger: kafka.logger, pollInterval: .seconds(3600),
            linger: .zero, retention: .zero)
        let handler = ProfileErasureHandler(
            database: database, checkpointer: WALCheckpointer(database: database.database, logger: kafka.logger),
            relay: relay, logger: kafka.logger)
        func pending() async throws -> Int {
            try await database.database.read { db in try Outbox.pendingCount(in: db) }
        }

        try await withRunningServices([producer, relay], logger: kafka.logger) {
            _ = try await database.ingest([
                fetched("t1", "557058:ack-a", at: 1), fetched("t1", "557058:ack-b", at: 1),
                fetched("t1", "557058:ack-c", at: 1),
            ])
            // Nobody woke the relay: the profiles' records wait for its hourly poll, so "sent" below is the handler's.
            #expect(try await pending() > 0)

            let batch = try await handler.applyBatch([
                command("ack-1", "t1", "557058:ack-a", .delete), command("ack-2", "t1", "557058:ack-b", .scrub),
            ])
            #expect(batch.map(\.outcome) == [.erased, .scrubbed])
            #expect(try await pending() == 0, "a batch's outcomes came back before its changelog records were sent")

            _ = try await database.ingest([fetched("t1", "557058:ack-d", at: 1)])
            #expect(try await handler.apply(command("ack-3", "t1", "557058:ack-c", .delete)).outcome == .erased)
            #expect(try await pending() == 0, "one command's outcome came back before its changelog records were sent")

            // As after a crash that recorded the outcome and left its records unsent: a re-delivered command.
            _ = try await database.ingest([fetched("t1", "557058:ack-e", at: 1)])
            #expect(try await pending() > 0)
            #expect(try await handler.recordedResult(of: "ack-1")?.outcome == .erased)
            #expect(try await pending() == 0, "a recorded outcome came back before the outbox was sent")
            #expect(try await handler.recordedResult(of: "never-applied") == nil)
        }
    }
}
