import Contracts
import Metrics

/// Sends records that cannot be processed to `<topic>.dlq`, so one bad record never blocks a partition.
///
/// The dead letter keeps the original key, value and headers byte for byte and adds `lethe_error` (why it failed —
/// a reason, never the payload), plus where it came from. The caller commits the original after `route` returns:
/// the record is then safely parked and the consumer moves on.
package struct DeadLetterQueue: Sendable {
    /// The header that carries the reason.
    package static let errorHeader = "lethe_error"
    /// Headers that say where the record came from.
    package static let sourceTopicHeader = "lethe_source_topic"
    package static let sourcePartitionHeader = "lethe_source_partition"
    package static let sourceOffsetHeader = "lethe_source_offset"

    private let producer: KafkaProducer

    package init(producer: KafkaProducer) { self.producer = producer }

    /// The dead-letter topic of `topic`.
    package static func topic(for topic: String) -> String { "\(topic).dlq" }

    /// How to create the DLQ of `topic` (a Lethe topic, namespaced or not): its own retention comes from
    /// ``Topics/dlqDefinition(for:)`` — the source topic's when that is shorter — so every service creates each DLQ
    /// alike.
    package static func topicSpec(for topic: String, partitions: Int) -> TopicSpec {
        TopicSpec(name: Self.topic(for: topic), partitions: partitions, config: Topics.dlqDefinition(for: topic).kafkaConfig)
    }

    /// Parks `message` with `reason`. Waits for the broker's acknowledgement, then counts it in
    /// `lethe_dead_letters_total{topic}` (the source topic): one metric for every dead letter of every service.
    package func route(_ message: KafkaMessage, reason: String) async throws(KafkaError) {
        var headers = message.headers
        headers.append(KafkaHeader(name: Self.errorHeader, string: reason))
        headers.append(KafkaHeader(name: Self.sourceTopicHeader, string: message.topic))
        headers.append(KafkaHeader(name: Self.sourcePartitionHeader, string: String(message.partition)))
        headers.append(KafkaHeader(name: Self.sourceOffsetHeader, string: String(message.offset)))
        try await producer.send(OutgoingMessage(
            topic: Self.topic(for: message.topic), key: message.key, value: message.value, headers: headers))
        Counter(label: "lethe_dead_letters_total", dimensions: [("topic", message.topic)]).increment()
    }
}
