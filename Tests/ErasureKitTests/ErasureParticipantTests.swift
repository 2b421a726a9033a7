import Contracts
import ErasureKit
import Foundation
import Messaging
import Testing
import TestSupport

/// A handler that keeps its records in memory and counts how often it really applied a command.
actor RecordingHandler: ErasureHandler {
    private var records: [String: ErasureResult] = [:]
    private(set) var applied: [String] = []
    var failNext = false
    let result: ErasureResult

    init(result: ErasureResult) { self.result = result }

    func setFailNext(_ value: Bool) { failNext = value }

    func recordedResult(of erasureId: String) async throws -> ErasureResult? { records[erasureId] }

    func apply(_ command: EraseSubject) async throws -> ErasureResult {
        struct Boom: Error {}
        if failNext {
            failNext = false
            throw Boom()
        }
        applied.append(command.erasureId)
        // The outcome depends on how often we applied, so a re-application would be visible in the acks.
        let outcome = applied.count == 1 ? result : ErasureResult(outcome: .nothingHeld)
        records[command.erasureId] = outcome
        return outcome
    }
}

/// A handler with its own batch method, standing for one SQLite transaction per batch: a batch holding the poison
/// command throws and records nothing (rolled back); one at a time, only the poison command throws.
actor TransactionalHandler: ErasureHandler {
    private var records: [String: ErasureResult] = [:]
    private(set) var applied: [String] = []
    private(set) var batches: [[String]] = []
    let poison: String

    init(poison: String) { self.poison = poison }

    struct Poisoned: Error {}

    func recordedResult(of erasureId: String) async throws -> ErasureResult? { records[erasureId] }

    func apply(_ command: EraseSubject) async throws -> ErasureResult {
        if command.erasureId == poison { throw Poisoned() }
        return record(command)
    }

    func applyBatch(_ commands: [EraseSubject]) async throws -> [ErasureResult] {
        batches.append(commands.map(\.erasureId))
        if commands.contains(where: { $0.erasureId == poison }) { throw Poisoned() }
        return commands.map { records[$0.erasureId] ?? record($0) }
    }

    private func record(_ command: EraseSubject) -> ErasureResult {
        applied.append(command.erasureId)
        let result = ErasureResult(outcome: .erased)
        records[command.erasureId] = result
        return result
    }
}

@Suite("ErasureKit participant against the dev broker")
struct ErasureParticipantTests {
    let kafka: KafkaFixture

    init() throws { kafka = try KafkaFixture("erasurekit") }

    struct Topics3 {
        var commands: String
        var acks: String
        var participants: String
    }

    func makeTopics() async throws -> Topics3 {
        let topics = Topics3(
            commands: try await kafka.makeTopic("commands", partitions: 2),
            acks: try await kafka.makeTopic("acks"), participants: try await kafka.makeTopic("participants"))
        try await KafkaAdmin(bootstrapServers: kafka.bootstrapServers, logger: kafka.logger)
            .ensureTopics([TopicSpec(name: DeadLetterQueue.topic(for: topics.commands), partitions: 1)])
        return topics
    }

    func command(_ erasureId: String, policy: ErasurePolicy = .delete) -> EraseSubject {
        EraseSubject(
            erasureId: erasureId, tenantId: "tenant-a", appId: "app", accountId: "acc-\(erasureId)", policy: policy,
            cause: .atlassianClosed, issuedAt: Date(), deadline: Date().addingTimeInterval(86400))
    }

    func participant(_ topics: Topics3, handler: any ErasureHandler, producer: KafkaProducer) throws
        -> ErasureParticipant
    {
        try ErasureParticipant(
            config: ErasureParticipantConfig(
                participant: "test-participant", holds: ["name", "email"], groupId: uniqueName("participant"),
                commandsTopic: topics.commands, acksTopic: topics.acks, participantsTopic: topics.participants,
                sessionTimeout: .seconds(6)),
            handler: handler, producer: producer, bootstrapServers: kafka.bootstrapServers, logger: kafka.logger)
    }

    /// Reads `count` records of `topic` from the start, in a group of their own.
    func read(_ count: Int, from topic: String) async throws -> [KafkaMessage] {
        let consumer = try kafka.makeConsumer(group: uniqueName("reader"), topics: [topic])
        return try await withRunningServices([consumer], logger: kafka.logger) {
            var messages: [KafkaMessage] = []
            for try await message in consumer.messages {
                messages.append(message)
                if messages.count == count { break }
            }
            return messages
        }
    }

    @Test("declares itself, acks a command after applying it, and re-acks a repeat with the recorded outcome")
    func declaresAppliesAndReAcks() async throws {
        let topics = try await makeTopics()
        let handler = RecordingHandler(result: ErasureResult(outcome: .erased))
        let producer = try kafka.makeProducer()
        let participant = try participant(topics, handler: handler, producer: producer)
        try await withRunningServices([producer, participant], logger: kafka.logger) {
            let first = command("e-1")
            for _ in 0..<3 {
                try await producer.send(try OutgoingMessage(
                    event: first, topic: topics.commands, key: "app:acc-e-1", source: "test"))
            }
            let acks = try await read(3, from: topics.acks).map { try $0.decodeEvent(ErasureAcknowledged.self) }
            #expect(acks.map(\.outcome) == [.erased, .erased, .erased])
            #expect(acks.allSatisfy { $0.erasureId == "e-1" && $0.participant == "test-participant" })
            #expect(await handler.applied == ["e-1"])
            let declared = try await read(1, from: topics.participants)
            let declaration = try declared[0].decodeEvent(ParticipantDeclared.self)
            #expect(declared[0].keyString == "test-participant")
            #expect(declaration.participant == "test-participant" && declaration.holds == ["name", "email"])
        }
    }

    @Test("a malformed command goes to the DLQ and the next command is still acknowledged")
    func malformedCommandsAreDeadLettered() async throws {
        let topics = try await makeTopics()
        let handler = RecordingHandler(result: ErasureResult(outcome: .scrubbed))
        let producer = try kafka.makeProducer()
        let participant = try participant(topics, handler: handler, producer: producer)
        try await withRunningServices([producer, participant], logger: kafka.logger) {
            // Same key, so same partition: the good command sits behind the poison ones.
            try await producer.send(OutgoingMessage(topic: topics.commands, key: "app:x", value: Array("{nope".utf8)))
            try await producer.send(OutgoingMessage(topic: topics.commands, key: "app:x", value: nil))
            try await producer.send(try OutgoingMessage(
                event: command("e-2", policy: .scrub), topic: topics.commands, key: "app:x", source: "test"))
            let acks = try await read(1, from: topics.acks).map { try $0.decodeEvent(ErasureAcknowledged.self) }
            #expect(acks.map(\.erasureId) == ["e-2"])
            #expect(acks.map(\.outcome) == [.scrubbed])
            let dead = try await read(2, from: DeadLetterQueue.topic(for: topics.commands))
            #expect(dead.allSatisfy { $0.header(DeadLetterQueue.errorHeader) != nil })
            #expect(dead.map(\.value) == [Array("{nope".utf8), nil])
        }
    }

    @Test("a handler error is acked as failed without a record, and the re-sent command is then applied")
    func failuresAreAckedAndRetried() async throws {
        let topics = try await makeTopics()
        let handler = RecordingHandler(result: ErasureResult(outcome: .disassociated))
        await handler.setFailNext(true)
        let producer = try kafka.makeProducer()
        let participant = try participant(topics, handler: handler, producer: producer)
        try await withRunningServices([producer, participant], logger: kafka.logger) {
            let message = try OutgoingMessage(
                event: command("e-3", policy: .disassociate), topic: topics.commands, key: "app:y", source: "test")
            try await producer.send(message)
            try await producer.send(message)
            let acks = try await read(2, from: topics.acks).map { try $0.decodeEvent(ErasureAcknowledged.self) }
            #expect(acks.map(\.outcome) == [.failed, .disassociated])
            #expect(acks.first?.detail?.contains("participant error") == true)
            #expect(await handler.applied == ["e-3"])
        }
    }

    @Test("""
        commands go through the handler's batch method; when a batch fails as a whole, its commands are resolved one \
        at a time, so only the bad one is acked failed and each good one is applied once
        """)
    func batchFailureFallsBackToOneAtATime() async throws {
        let topics = try await makeTopics()
        let handler = TransactionalHandler(poison: "e-bad")
        let producer = try kafka.makeProducer()
        // Published before the participant starts, on one partition (one key), so they usually share a batch; the
        // expectations hold however the consumer splits them.
        let ids = ["e-4", "e-bad", "e-5", "e-4"]
        try await withRunningServices([producer], logger: kafka.logger) {
            for id in ids {
                try await producer.send(try OutgoingMessage(
                    event: command(id), topic: topics.commands, key: "app:z", source: "test"))
            }
        }
        let producer2 = try kafka.makeProducer()
        let participant = try participant(topics, handler: handler, producer: producer2)
        try await withRunningServices([producer2, participant], logger: kafka.logger) {
            let acks = try await read(4, from: topics.acks).map { try $0.decodeEvent(ErasureAcknowledged.self) }
            #expect(acks.map(\.erasureId) == ids)
            #expect(acks.map(\.outcome) == [.erased, .failed, .erased, .erased])
            #expect(acks[1].detail?.contains("participant error") == true)
            #expect(await handler.applied.sorted() == ["e-4", "e-5"], "each good command applied exactly once")
            #expect(await !handler.batches.isEmpty, "the batch method was not used")
        }
    }
}
