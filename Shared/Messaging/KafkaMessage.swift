/// A Kafka record header. Values are bytes; CloudEvents attributes are UTF-8 strings.
package struct KafkaHeader: Sendable, Hashable {
    package var name: String
    package var value: [UInt8]

    package init(name: String, value: [UInt8]) {
        self.name = name
        self.value = value
    }

    package init(name: String, string: String) {
        self.init(name: name, value: Array(string.utf8))
    }

    /// The value as UTF-8, when it is valid UTF-8.
    package var stringValue: String? { String(validating: value, as: UTF8.self) }
}

/// One partition of one topic.
package struct TopicPartition: Sendable, Hashable, CustomStringConvertible {
    package var topic: String
    package var partition: Int32

    package init(topic: String, partition: Int32) {
        self.topic = topic
        self.partition = partition
    }

    package var description: String { "\(topic)[\(partition)]" }
}

/// A record to produce. A `nil` value is a tombstone: on a compacted topic it deletes the key.
package struct OutgoingMessage: Sendable, Hashable {
    package var topic: String
    package var key: [UInt8]?
    package var value: [UInt8]?
    package var headers: [KafkaHeader]
    /// Leave nil to let the partitioner choose from the key (murmur2, like the Java client), which keeps one key on
    /// one partition and co-partitions topics that share keys and partition counts.
    package var partition: Int32?

    package init(
        topic: String, key: [UInt8]?, value: [UInt8]?, headers: [KafkaHeader] = [], partition: Int32? = nil
    ) {
        self.topic = topic
        self.key = key
        self.value = value
        self.headers = headers
        self.partition = partition
    }

    package init(topic: String, key: String?, value: [UInt8]?, headers: [KafkaHeader] = []) {
        self.init(topic: topic, key: key.map { Array($0.utf8) }, value: value, headers: headers)
    }
}

/// A consumed record, copied out of librdkafka's buffers (the C message is destroyed as soon as it is read).
package struct KafkaMessage: Sendable, Hashable {
    package var topic: String
    package var partition: Int32
    package var offset: Int64
    package var key: [UInt8]?
    /// nil for a tombstone.
    package var value: [UInt8]?
    package var headers: [KafkaHeader]
    /// Milliseconds since the epoch, as the producer or broker stamped it; nil when absent.
    package var timestampMilliseconds: Int64?

    package init(
        topic: String, partition: Int32, offset: Int64, key: [UInt8]?, value: [UInt8]?,
        headers: [KafkaHeader] = [], timestampMilliseconds: Int64? = nil
    ) {
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.key = key
        self.value = value
        self.headers = headers
        self.timestampMilliseconds = timestampMilliseconds
    }

    package var topicPartition: TopicPartition { TopicPartition(topic: topic, partition: partition) }

    /// The key as UTF-8, when present and valid.
    package var keyString: String? { key.flatMap { String(validating: $0, as: UTF8.self) } }

    /// The first header with this name.
    package func header(_ name: String) -> KafkaHeader? { headers.first { $0.name == name } }
}

/// Where the broker stored a produced record.
package struct DeliveryReport: Sendable, Hashable {
    package var topic: String
    package var partition: Int32
    package var offset: Int64
}

/// Where a consumer starts reading a partition (a `.partitions` subscription, a seek).
package enum StartOffset: Sendable, Equatable {
    /// The first record the broker still has.
    case beginning
    /// After the last record: only what is written from now on.
    case end
    /// The record at this offset (past the end: the consumer's `auto.offset.reset` applies).
    case at(Int64)

    /// librdkafka's form: an offset, or its logical `RD_KAFKA_OFFSET_BEGINNING` (-2) or `RD_KAFKA_OFFSET_END` (-1).
    var rawOffset: Int64 {
        switch self {
        case .beginning: -2
        case .end: -1
        case .at(let offset): offset
        }
    }
}
