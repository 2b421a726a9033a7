import Logging
import ServiceKit
import Messaging
import ServiceLifecycle
import Synchronization

/// Kafka plumbing for integration tests: a producer, topics, consumers running in the background.
package struct KafkaFixture: Sendable {
    package let bootstrapServers: String
    package let logger: Logger

    package init(_ label: String = "kafka-test") throws {
        self.bootstrapServers = try DevBroker.bootstrapServers()
        self.logger = makeTestLogger(label)
    }

    /// Creates a topic with a unique name and returns it.
    package func makeTopic(_ prefix: String = "t", partitions: Int = 1, config: [String: String] = [:]) async throws
        -> String
    {
        let name = uniqueName(prefix)
        try await KafkaAdmin(bootstrapServers: bootstrapServers, logger: logger)
            .ensureTopics([TopicSpec(name: name, partitions: partitions, config: config)])
        return name
    }

    package func makeProducer() throws -> KafkaProducer {
        try KafkaProducer(config: KafkaProducerConfig(bootstrapServers: bootstrapServers), logger: logger)
    }

    package func makeConsumer(
        group: String, topics: [String], maxBuffered: Int = 10_000, sessionTimeout: Duration = .seconds(6)
    ) throws -> KafkaConsumer {
        try KafkaConsumer(
            config: KafkaConsumerConfig(
                bootstrapServers: bootstrapServers, subscription: .group(id: group, topics: topics),
                sessionTimeout: sessionTimeout, maxBufferedMessages: maxBuffered),
            logger: logger)
    }
}

/// Runs services in a `ServiceGroup` for the duration of `body`, then shuts them down gracefully.
package func withRunningServices<R: Sendable>(
    _ services: [any Service], logger: Logger, _ body: () async throws -> R
) async throws -> R {
    let group = ServiceGroup(
        configuration: .init(services: services.map { .init(service: $0) }, logger: logger))
    return try await withThrowingTaskGroup(of: Void.self) { tasks in
        tasks.addTask { try await group.run() }
        do {
            let result = try await body()
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
            return result
        } catch {
            await group.triggerGracefulShutdown()
            try? await tasks.waitForAll()
            throw error
        }
    }
}

/// Reads `topic` from the start in a consumer group of its own until `done` says so, failing after `timeout`.
package func readUntil(
    _ kafka: KafkaFixture, topic: String, timeout: Duration = .seconds(60),
    _ done: @escaping @Sendable ([KafkaMessage]) -> Bool
) async throws -> [KafkaMessage] {
    let consumer = try kafka.makeConsumer(group: uniqueName("reader"), topics: [topic], maxBuffered: 50_000)
    return try await withRunningServices([consumer], logger: kafka.logger) {
        try await withTimeout(timeout) {
            var messages: [KafkaMessage] = []
            for try await message in consumer.messages {
                messages.append(message)
                if done(messages) { break }
            }
            return messages
        }
    }
}

/// Reads `topic` like `readUntil` until `done` says so, given the distinct values `value` draws from the records read
/// so far and how many records that is. Each record is looked at once: a `readUntil` condition that decodes every
/// record read so far at each new one is quadratic, and on a loaded machine 3000 records took over 120 s that way.
package func readUntilDistinct(
    _ kafka: KafkaFixture, topic: String, timeout: Duration = .seconds(60),
    value: @escaping @Sendable (KafkaMessage) -> String?,
    _ done: @escaping @Sendable (_ distinct: Set<String>, _ records: Int) -> Bool
) async throws -> [KafkaMessage] {
    let seen = Mutex(Set<String>())
    return try await readUntil(kafka, topic: topic, timeout: timeout) { messages in
        // readUntil asks after each record it appends, so the last one is the only one not looked at yet.
        let distinct = seen.withLock { seen in
            if let last = messages.last, let value = value(last) { seen.insert(value) }
            return seen
        }
        return done(distinct, messages.count)
    }
}
