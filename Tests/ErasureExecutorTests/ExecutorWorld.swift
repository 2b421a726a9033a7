import Contracts
import ErasureKit
import Foundation
import Messaging
import Testing
import TestSupport

@testable import erasure_executor

/// What the executor's Kafka tests set up alike: a data directory, a namespace whose topics exist (with the
/// executor's partition count) before anything subscribes, a producer for the test's records; then the executor —
/// in-process (``build(extra:)`` and ``start(_:)``, so the test reaches its ledger and gate) or as a process
/// (``startExecutor(settings:)``) — and the participants the test starts, all stopped by ``stop()`` whatever the
/// test's outcome.
final class ExecutorWorld {
    let kafka: KafkaFixture
    let directory: TemporaryDirectory
    let namespace: String
    let topics: LetheTopics
    let producer: KafkaProducer
    private let producing: RunningGroup
    /// In-process executors and participants, in the order they started.
    private var running: [RunningGroup] = []
    /// The executor process running now, if any.
    private var executor: ExecutorProcess?

    init(kafka: KafkaFixture, namespace prefix: String) async throws {
        self.kafka = kafka
        directory = try TemporaryDirectory()
        namespace = uniqueName(prefix)
        let topics = LetheTopics(namespace: namespace)
        self.topics = topics
        try await KafkaAdmin(bootstrapServers: kafka.bootstrapServers, logger: kafka.logger).ensureTopics([
            Topics.tenants, Topics.pdrStatus, Topics.erasureRequests, Topics.erasureCommands, Topics.erasureAcks,
            Topics.erasureParticipants,
        ].map { TopicSpec($0, in: topics, partitions: 3) })
        producer = try kafka.makeProducer()
        producing = RunningGroup([producer], logger: kafka.logger)
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
        running.append(try testParticipant(
            name, handler: handler, kafka: kafka, namespace: namespace, topics: topics, holds: holds))
    }

    /// Builds the executor in-process on the world's directory (topics created, file migrated) without running it.
    func build(extra: [String: String] = [:]) async throws -> ErasureExecutorParts {
        try await TestExecutor.build(kafka: kafka, namespace: namespace, directory: directory, extra: extra).parts
    }

    /// Runs an executor built in-process, stopped with the world.
    func start(_ parts: ErasureExecutorParts) {
        running.append(RunningGroup(parts.group))
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

    /// The executor process, then what runs in-process (the last started first), then the producer.
    func stop() async {
        await stopExecutor()
        for group in running.reversed() { await group.stop() }
        await producing.stop()
    }
}

extension ErasureExecutorOrderingTests {
    /// Runs `body` in a world of its own; a thrown error is the test's issue, and the world is stopped either way.
    func inWorld(_ prefix: String, _ body: (ExecutorWorld) async throws -> Void) async throws {
        let world = try await ExecutorWorld(kafka: kafka, namespace: prefix)
        do {
            try await body(world)
        } catch {
            Issue.record(error)
        }
        await world.stop()
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
