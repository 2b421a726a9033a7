import Contracts
import ErasureKit
import Foundation
import Messaging
import Testing
import TestSupport

@testable import erasure_executor

/// What the process tests (``ErasureExecutorProcessTests``, ``ErasureExecutorRetireProcessTests``) set up alike: a
/// data directory, a namespace whose topics exist before anything subscribes, a producer for the test's records, and
/// the participants and the executor process the test starts, all stopped by ``stop()`` whatever the test's outcome.
final class ExecutorProcessWorld {
    let kafka: KafkaFixture
    let directory: TemporaryDirectory
    let namespace: String
    let topics: LetheTopics
    private let producer: KafkaProducer
    private let producing: RunningGroup
    private var participants: [RunningGroup] = []
    /// The executor running now, if any.
    private var executor: ExecutorProcess?

    init(kafka: KafkaFixture, namespace prefix: String) async throws {
        self.kafka = kafka
        directory = try TemporaryDirectory()
        namespace = uniqueName(prefix)
        topics = LetheTopics(namespace: namespace)
        try await Self.makeTopics(topics, kafka: kafka)
        producer = try kafka.makeProducer()
        producing = RunningGroup([producer], logger: kafka.logger)
    }

    /// Creates the topics the test and its participants use before anything subscribes, with the executor's
    /// partition count (it refuses existing topics with another).
    private static func makeTopics(_ topics: LetheTopics, kafka: KafkaFixture) async throws {
        try await KafkaAdmin(bootstrapServers: kafka.bootstrapServers, logger: kafka.logger).ensureTopics([
            Topics.tenants, Topics.pdrStatus, Topics.erasureCommands, Topics.erasureAcks, Topics.erasureParticipants,
        ].map { TopicSpec($0, in: topics, partitions: 3) })
    }

    func send(_ event: some LetheEvent, topic: String, key: String) async throws {
        try await producer.send(event, topic: topic, key: key)
    }

    /// A record as it is, headers and all.
    func send(_ message: OutgoingMessage) async throws {
        try await producer.send(message)
    }

    /// Starts an in-process ErasureKit participant (``testParticipant``), stopped with the world.
    func startParticipant(
        _ name: String, handler: any ErasureHandler, holds: [String] = ["name", "email"]
    ) throws {
        participants.append(try testParticipant(
            name, handler: handler, kafka: kafka, namespace: namespace, topics: topics, holds: holds))
    }

    /// Starts the executor process on the world's directory (see ``ExecutorProcess/start``).
    func startExecutor(settings: [String: String]) async throws -> ExecutorProcess {
        let started = try await ExecutorProcess.start(
            kafka: kafka, namespace: namespace, directory: directory, settings: settings)
        executor = started
        return started
    }

    func stopExecutor() async {
        await executor?.stop()
        executor = nil
    }

    /// The executor, then the participants, then the producer.
    func stop() async {
        await stopExecutor()
        for group in participants { await group.stop() }
        await producing.stop()
    }
}

extension KafkaProducer {
    /// One event with its CloudEvents headers, from the source "test".
    func send(_ event: some LetheEvent, topic: String, key: String) async throws {
        try await send(try OutgoingMessage(event: event, topic: topic, key: key, source: "test"))
    }
}

/// A user's personal data as a test hands it to its participants, to search for where it must never be.
struct PlantedPersonalData: Sendable {
    var accountId: String
    var name: String
    var email: String
}

/// The executor's SQLite file, its WAL and its shared memory hold neither the name nor the email, byte for byte.
func expectNoNameOrEmail(_ data: PlantedPersonalData, inFilesOf ledger: ErasureLedger) {
    for suffix in ["", "-wal", "-shm"] {
        let bytes = (try? Data(contentsOf: URL(fileURLWithPath: ledger.database.path + suffix))) ?? Data()
        #expect(bytes.range(of: Data(data.name.utf8)) == nil && bytes.range(of: Data(data.email.utf8)) == nil)
    }
}
