import Foundation
import Logging
import Messaging
import ServiceKit
import Testing
import TestSupport

@Suite("Producer and consumer against the dev broker")
struct ProducerConsumerTests {
    let kafka: KafkaFixture

    init() throws { kafka = try KafkaFixture("producer-consumer") }

    @Test("keys, headers and a tombstone survive the round trip")
    func roundTripKeepsKeysHeadersAndTombstones() async throws {
        let topic = try await kafka.makeTopic(partitions: 3)
        let producer = try kafka.makeProducer()
        let consumer = try kafka.makeConsumer(group: uniqueName("g"), topics: [topic])
        let sent = [
            OutgoingMessage(topic: topic, key: "app:1", value: Array("{\"n\":1}".utf8),
                            headers: [KafkaHeader(name: "ce_type", string: "lethe.Test"),
                                      KafkaHeader(name: "binary", value: [0, 255, 7])]),
            OutgoingMessage(topic: topic, key: "app:2", value: Array("{\"n\":2}".utf8)),
            OutgoingMessage(topic: topic, key: "app:1", value: nil),  // tombstone
        ]
        try await withRunningServices([producer, consumer], logger: kafka.logger) {
            for message in sent { try await producer.send(message) }
            var received: [KafkaMessage] = []
            for try await message in consumer.messages {
                received.append(message)
                try await consumer.commit(message)
                if received.count == sent.count { break }
            }
            let byKeyAndValue = received.map { ReceivedShape($0) }.sorted()
            let expected = sent.map { ReceivedShape($0) }.sorted()
            #expect(byKeyAndValue == expected)
            let tombstone = try #require(received.first { $0.value == nil })
            #expect(tombstone.keyString == "app:1")
            let first = try #require(received.first { $0.value == Array("{\"n\":1}".utf8) })
            #expect(first.header("ce_type")?.stringValue == "lethe.Test")
            #expect(first.header("binary")?.value == [0, 255, 7])
        }
    }

    @Test("a key always lands on the same partition, and keys spread over partitions")
    func keyedMessagesStayOnOnePartition() async throws {
        let topic = try await kafka.makeTopic(partitions: 6)
        let producer = try kafka.makeProducer()
        try await withRunningServices([producer], logger: kafka.logger) {
            var partitionsByKey: [String: Set<Int32>] = [:]
            for round in 0..<5 {
                for keyIndex in 0..<12 {
                    let key = "app:account-\(keyIndex)"
                    let report = try await producer.send(
                        OutgoingMessage(topic: topic, key: key, value: Array("\(round)".utf8)))
                    partitionsByKey[key, default: []].insert(report.partition)
                }
            }
            #expect(partitionsByKey.values.allSatisfy { $0.count == 1 })
            #expect(Set(partitionsByKey.values.flatMap { $0 }).count > 1)
            // Where KeyPartitioner says: librdkafka's murmur2_random is Kafka's murmur2.
            for (key, partitions) in partitionsByKey {
                #expect(partitions == [KeyPartitioner.partition(of: key, count: 6)], "\(key)")
            }
        }
    }

    @Test("KeyPartitioner's murmur2 gives Kafka's own test vectors (the Java client's, then librdkafka's)")
    func murmur2MatchesKafka() {
        let signed: [String: Int32] = [
            "21": -973_932_308, "foobar": -790_332_482, "a-little-bit-long-string": -985_981_536,
            "a-little-bit-longer-string": -1_486_304_829,
            "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58_897_971, "abc": 479_470_107,
        ]
        for (key, expected) in signed {
            #expect(Int32(bitPattern: KeyPartitioner.murmur2(key.utf8)) == expected, "\(key)")
        }
        let positive: [String: UInt32] = ["kafka": 1_348_980_580, "amqp": 767_747_138, "giberish123456789": 257_239_820]
        for (key, expected) in positive {
            #expect(KeyPartitioner.murmur2(key.utf8) & 0x7fff_ffff == expected, "\(key)")
        }
    }

    @Test("a send to a producer that has stopped fails at once with shutDown, instead of waiting for ever")
    func sendAfterStopFails() async throws {
        let topic = try await kafka.makeTopic(partitions: 1)
        let producer = try kafka.makeProducer()
        try await withRunningServices([producer], logger: kafka.logger) {
            try await producer.send(OutgoingMessage(topic: topic, key: "k", value: Array("while running".utf8)))
        }
        let outcome = try await withTimeout(.seconds(10)) { () async -> (any Error)? in
            do {
                try await producer.send(OutgoingMessage(topic: topic, key: "k", value: Array("after".utf8)))
                return nil
            } catch {
                return error
            }
        }
        #expect(outcome as? KafkaError == KafkaError.shutDown, "\(String(describing: outcome))")
    }

    @Test("a batch send returns after every message is acknowledged")
    func batchSendIsAcknowledged() async throws {
        let topic = try await kafka.makeTopic(partitions: 2)
        let producer = try kafka.makeProducer()
        let consumer = try KafkaConsumer(
            config: KafkaConsumerConfig(
                bootstrapServers: kafka.bootstrapServers,
                subscription: .partitions([(TopicPartition(topic: topic, partition: 0), from: .beginning)])),
            logger: kafka.logger)
        try await withRunningServices([producer, consumer], logger: kafka.logger) {
            let batch = (0..<2000).map {
                OutgoingMessage(topic: topic, key: nil, value: Array("m\($0)".utf8), partition: Int32($0 % 2))
            }
            try await producer.send(batch)
            // Everything is acknowledged, so a reader of partition 0 finds all 1,000 records there, in order.
            // (Watermarks are not used as the oracle: Tansu 0.6 answers ListOffsets with a batch count.)
            var offsets: [Int64] = []
            for try await message in consumer.messages {
                offsets.append(message.offset)
                if offsets.count == 1000 { break }
            }
            #expect(offsets == Array(0..<1000))
        }
    }

    @Test("seeking to the beginning replays a partition")
    func seekToBeginningReplays() async throws {
        let topic = try await kafka.makeTopic(partitions: 1)
        let partition = TopicPartition(topic: topic, partition: 0)
        let producer = try kafka.makeProducer()
        let consumer = try kafka.makeConsumer(group: uniqueName("g"), topics: [topic])
        try await withRunningServices([producer, consumer], logger: kafka.logger) {
            try await producer.send((0..<5).map { OutgoingMessage(topic: topic, key: "k", value: Array("\($0)".utf8)) })
            var values: [String] = []
            for try await message in consumer.messages {
                values.append(String(decoding: message.value ?? [], as: UTF8.self))
                if values.count == 5 { try await consumer.seekToBeginning([partition]) }
                if values.count == 10 { break }
            }
            #expect(values == ["0", "1", "2", "3", "4", "0", "1", "2", "3", "4"])
        }
    }

    @Test("a paused partition delivers nothing until it is resumed")
    func pauseHoldsBackUntilResume() async throws {
        let topic = try await kafka.makeTopic(partitions: 1)
        let partition = TopicPartition(topic: topic, partition: 0)
        let producer = try kafka.makeProducer()
        let consumer = try kafka.makeConsumer(group: uniqueName("g"), topics: [topic])
        let received = LockedValue<[String]>([])
        try await withRunningServices([producer, consumer], logger: kafka.logger) {
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                tasks.addTask {
                    for try await message in consumer.messages {
                        received.withValue { $0.append(String(decoding: message.value ?? [], as: UTF8.self)) }
                    }
                }
                try await producer.send((0..<3).map { OutgoingMessage(topic: topic, key: "k", value: Array("\($0)".utf8)) })
                #expect(await eventually { received.withValue { $0.count } == 3 })
                try consumer.pause([partition])
                try await producer.send(OutgoingMessage(topic: topic, key: "k", value: Array("late".utf8)))
                try await Task.sleep(for: .seconds(2))
                #expect(received.withValue { $0 } == ["0", "1", "2"])
                try consumer.resume([partition])
                #expect(await eventually { received.withValue { $0.count } == 4 })
                #expect(received.withValue { $0.last } == "late")
                tasks.cancelAll()
            }
        }
    }
}

/// The parts of a record that must survive a round trip, comparable across sent and received records.
private struct ReceivedShape: Comparable {
    var key: [UInt8]
    var value: [UInt8]?

    init(_ message: KafkaMessage) { (key, value) = (message.key ?? [], message.value) }
    init(_ message: OutgoingMessage) { (key, value) = (message.key ?? [], message.value) }

    static func < (lhs: Self, rhs: Self) -> Bool {
        (lhs.key.lexicographicallyPrecedes(rhs.key))
            || (lhs.key == rhs.key && (lhs.value ?? []).lexicographicallyPrecedes(rhs.value ?? []))
    }
}
