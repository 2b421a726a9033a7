import Foundation
import Messaging
import ServiceLifecycle

// MARK: probe

/// The per-record costs an ErasureKit participant and the executor's intake pay on this broker: an awaited single
/// send (with the default 5 ms linger, and with none) and a synchronous offset commit per record.
func probe(bootstrap: String, namespace: String, count: Int) async throws {
    let logger = makeLogger()
    let clock = ContinuousClock()
    let topic = "\(namespace).probe"
    try await KafkaAdmin(bootstrapServers: bootstrap, logger: logger).ensureTopics([
        TopicSpec(name: topic, partitions: 1),
    ])
    for linger in [5, 0] {
        let producer = try KafkaProducer(
            config: KafkaProducerConfig(bootstrapServers: bootstrap, linger: .milliseconds(linger)), logger: logger)
        let group = ServiceGroup(configuration: .init(services: [.init(service: producer)], logger: logger))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            _ = try await producer.send(OutgoingMessage(topic: topic, key: "k", value: Array("warm".utf8)))
            let start = clock.now
            for index in 0..<count {
                _ = try await producer.send(OutgoingMessage(topic: topic, key: "k", value: Array("\(index)".utf8)))
            }
            let each = milliseconds(clock.now - start) / Double(count)
            let batchStart = clock.now
            try await producer.send((0..<count).map {
                OutgoingMessage(topic: topic, key: "k", value: Array("b\($0)".utf8))
            })
            print(String(format: "probe: awaited single send, linger %d ms: %.2f ms each (%.0f/s); %d in one send: %.1f ms",
                         linger, each, 1000 / each, count, milliseconds(clock.now - batchStart)))
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
    }
    let consumer = try KafkaConsumer(
        config: KafkaConsumerConfig(
            bootstrapServers: bootstrap, subscription: .group(id: "\(namespace).probe", topics: [topic]),
            sessionTimeout: .seconds(6)),
        logger: logger)
    let group = ServiceGroup(configuration: .init(services: [.init(service: consumer)], logger: logger))
    try await withThrowingTaskGroup(of: Void.self) { tasks in
        tasks.addTask { try await group.run() }
        var committed = 0
        var total = Duration.zero
        for try await message in consumer.messages {
            let start = clock.now
            try await consumer.commit(message)
            total += clock.now - start
            committed += 1
            if committed == count { break }
        }
        print(String(format: "probe: synchronous commit per record: %.2f ms each", milliseconds(total) / Double(count)))
        await group.triggerGracefulShutdown()
        try await tasks.waitForAll()
    }
}
