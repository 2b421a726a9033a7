import Foundation
import Logging
import Messaging
import ServiceLifecycle
import Testing
import TestSupport

@Suite("Dead letters and topic administration against the dev broker")
struct DeadLetterAndAdminTests {
    let kafka: KafkaFixture

    init() throws { kafka = try KafkaFixture("dlq-admin") }

    /// Waits for graceful shutdown, like every long-running service in a group.
    struct IdleService: Service {
        func run() async throws { try? await gracefulShutdown() }
    }

    @Test("a fatal producer error ends the producer's service with it: the whole group stops (the process exits non-zero), readiness reads it")
    func fatalProducerErrorStopsTheGroup() async throws {
        let topic = try await kafka.makeTopic(partitions: 1)
        let producer = try kafka.makeProducer()
        let group = ServiceGroup(configuration: .init(services: [producer, IdleService()], logger: kafka.logger))
        let running = Task { try await group.run() }
        try await producer.send(OutgoingMessage(topic: topic, key: "k", value: Array("before".utf8)))
        #expect(producer.fatalError == nil)
        producer.raiseFatalErrorForTesting()
        // The group's run ends by throwing the fatal error — what an Entrypoint's main rethrows, exiting non-zero.
        let ended = Task {
            do {
                try await running.value
                return "returned without an error"
            } catch let error as KafkaError {
                return error.isFatal ? "fatal" : "not fatal: \(error)"
            } catch {
                return "\(type(of: error))"
            }
        }
        let timeout = Task { try await Task.sleep(for: .seconds(20)); running.cancel() }
        #expect(await ended.value == "fatal")
        timeout.cancel()
        #expect(producer.fatalError?.isFatal == true)
        #expect(throws: KafkaError.self) { try producer.checkNotFatal() }
    }

    @Test("a poison message goes to the DLQ with its reason, and the consumer moves on")
    func poisonMessageIsDeadLettered() async throws {
        let topic = try await kafka.makeTopic(partitions: 1)
        let dlqTopic = DeadLetterQueue.topic(for: topic)
        #expect(dlqTopic == "\(topic).dlq")
        let producer = try kafka.makeProducer()
        let consumer = try kafka.makeConsumer(group: uniqueName("g"), topics: [topic])
        let dlqReader = try kafka.makeConsumer(group: uniqueName("dlq"), topics: [dlqTopic])
        let deadLetters = DeadLetterQueue(producer: producer)
        let poison = OutgoingMessage(topic: topic, key: "app:bad", value: Array("not json{".utf8),
                                     headers: [KafkaHeader(name: "ce_type", string: "lethe.Test")])
        try await withRunningServices([producer, consumer], logger: kafka.logger) {
            try await producer.send([
                OutgoingMessage(topic: topic, key: "app:1", value: Array("{\"ok\":1}".utf8)),
                poison,
                OutgoingMessage(topic: topic, key: "app:2", value: Array("{\"ok\":2}".utf8)),
            ])
            var processed: [String] = []
            for try await message in consumer.messages {
                if (try? JSONSerialization.jsonObject(with: Data(message.value ?? []))) != nil {
                    processed.append(message.keyString ?? "")
                } else {
                    try await deadLetters.route(message, reason: "malformed JSON")
                }
                try await consumer.commit(message)
                if message.keyString == "app:2" { break }
            }
            #expect(processed == ["app:1", "app:2"])
        }
        try await withRunningServices([dlqReader], logger: kafka.logger) {
            var parked: KafkaMessage?
            for try await message in dlqReader.messages {
                parked = message
                break
            }
            let dead = try #require(parked)
            #expect(dead.key == poison.key)
            #expect(dead.value == poison.value)
            #expect(dead.header("ce_type")?.stringValue == "lethe.Test")
            #expect(dead.header(DeadLetterQueue.errorHeader)?.stringValue == "malformed JSON")
            #expect(dead.header(DeadLetterQueue.sourceTopicHeader)?.stringValue == topic)
            #expect(dead.header(DeadLetterQueue.sourceOffsetHeader)?.stringValue == "1")
        }
    }

    @Test("ensureTopics is idempotent and sets partitions and cleanup policy")
    func ensureTopicsIsIdempotent() async throws {
        let admin = try KafkaAdmin(bootstrapServers: kafka.bootstrapServers, logger: kafka.logger)
        let compacted = TopicSpec(name: uniqueName("compacted"), partitions: 6, config: ["cleanup.policy": "compact"])
        let plain = TopicSpec(name: uniqueName("plain"), partitions: 3, config: ["retention.ms": "604800000"])
        try await admin.ensureTopics([compacted, plain])
        try await admin.ensureTopics([compacted, plain])
        #expect(try await admin.partitionCount(of: compacted.name) == 6)
        #expect(try await admin.partitionCount(of: plain.name) == 3)
        let config = try await admin.topicConfig(of: compacted.name)
        #expect(config["cleanup.policy"] == "compact")
    }

    @Test("ensureTopics leaves an existing topic's other settings alone, and reports each one")
    func ensureTopicsReportsSettingMismatches() async throws {
        let admin = try KafkaAdmin(bootstrapServers: kafka.bootstrapServers, logger: kafka.logger)
        let name = uniqueName("settings")
        let first = TopicSpec(name: name, partitions: 2, config: ["cleanup.policy": "delete", "retention.ms": "2592000000"])
        #expect(try await admin.ensureTopics([first]).isEmpty, "a topic created now has the settings asked for")
        #expect(try await admin.ensureTopics([first]).isEmpty)
        let later = TopicSpec(name: name, partitions: 2, config: ["cleanup.policy": "compact", "retention.ms": "604800000"])
        let mismatches = try await admin.ensureTopics([later])
        #expect(mismatches == [
            TopicSettingMismatch(topic: name, setting: "cleanup.policy", actual: "delete", expected: "compact"),
            TopicSettingMismatch(topic: name, setting: "retention.ms", actual: "2592000000", expected: "604800000"),
        ])
        #expect(try await admin.topicConfig(of: name)["cleanup.policy"] == "delete", "the topic was changed")
    }

    @Test("ensureTopics refuses an existing topic with another partition count")
    func ensureTopicsRefusesPartitionMismatch() async throws {
        let admin = try KafkaAdmin(bootstrapServers: kafka.bootstrapServers, logger: kafka.logger)
        let name = uniqueName("mismatch")
        try await admin.ensureTopics([TopicSpec(name: name, partitions: 2)])
        await #expect(throws: KafkaError.self) {
            try await admin.ensureTopics([TopicSpec(name: name, partitions: 4)])
        }
    }

    @Test("a broker that is not there is a retriable error, not a hang")
    func unreachableBrokerFailsRetriably() async throws {
        let admin = try KafkaAdmin(bootstrapServers: "127.0.0.1:1", logger: kafka.logger)
        do {
            try await admin.ping(timeout: .seconds(1))
            Issue.record("ping to a closed port succeeded")
        } catch {
            #expect(error.isRetriable, "\(error)")
        }
    }
}
