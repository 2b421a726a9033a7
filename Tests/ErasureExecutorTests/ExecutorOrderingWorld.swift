import Contracts
import Foundation
import Messaging
import Testing
import TestSupport

@testable import erasure_executor

/// What each ordering test (``ErasureExecutorOrderingTests``) sets up alike: a data directory, a namespace whose
/// executor input topics exist (with its partition count) before anything is produced, and a running producer; then
/// the executor, built in-process so the test reaches its ledger and gate, and the participants the test starts — all
/// stopped by ``stop()``, the last started first.
final class ExecutorOrderingWorld {
    let kafka: KafkaFixture
    let directory: TemporaryDirectory
    let namespace: String
    let topics: LetheTopics
    let producer: KafkaProducer
    private let producing: RunningGroup
    private var running: [RunningGroup] = []

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

    /// Builds the executor (topics created, file migrated) without running it.
    func build(extra: [String: String] = [:]) async throws -> ErasureExecutorParts {
        try await TestExecutor.build(kafka: kafka, namespace: namespace, directory: directory, extra: extra).parts
    }

    /// Runs a built executor until ``stop()``.
    func start(_ parts: ErasureExecutorParts) {
        running.append(RunningGroup(parts.group))
    }

    /// Starts an ErasureKit participant called `name` (it declares itself as it starts), until ``stop()``.
    func startParticipant(_ name: String, handler: TestParticipantHandler) throws {
        running.append(try testParticipant(name, handler: handler, kafka: kafka, namespace: namespace, topics: topics))
    }

    /// Stops what the test started, the last started first, then the producer.
    func stop() async {
        for group in running.reversed() { await group.stop() }
        await producing.stop()
    }
}

extension ErasureExecutorOrderingTests {
    /// Runs `body` in a world of its own; a thrown error is the test's issue, and the world is stopped either way.
    func inWorld(_ prefix: String, _ body: (ExecutorOrderingWorld) async throws -> Void) async throws {
        let world = try await ExecutorOrderingWorld(kafka: kafka, namespace: prefix)
        do {
            try await body(world)
        } catch {
            Issue.record(error)
        }
        await world.stop()
    }
}
