import CRdKafka
import Contracts
import Logging

/// A topic as Lethe wants it to exist.
package struct TopicSpec: Sendable, Hashable {
    package var name: String
    package var partitions: Int
    package var replicationFactor: Int
    /// Topic-level settings, e.g. `cleanup.policy=compact`, `retention.ms`.
    package var config: [String: String]

    package init(name: String, partitions: Int, replicationFactor: Int = 1, config: [String: String] = [:]) {
        self.name = name
        self.partitions = partitions
        self.replicationFactor = replicationFactor
        self.config = config
    }

    /// `topic` as ``Topics`` declares it (cleanup policy, retention), named in `topics`' namespace, with `partitions`
    /// partitions unless the declaration fixes its own.
    package init(_ topic: TopicDefinition, in topics: LetheTopics, partitions: Int) {
        self.init(name: topics.name(of: topic), partitions: topic.partitions ?? partitions, config: topic.kafkaConfig)
    }
}

/// A setting of an existing topic that differs from its ``TopicSpec`` (``KafkaAdmin/ensureTopics(_:timeout:)`` never
/// changes an existing topic, so an operator sees this at start instead of finding out from lost or kept data).
package struct TopicSettingMismatch: Sendable, Hashable {
    package var topic: String
    package var setting: String
    package var actual: String
    package var expected: String

    package init(topic: String, setting: String, actual: String, expected: String) {
        self.topic = topic
        self.setting = setting
        self.actual = actual
        self.expected = expected
    }
}

/// Creates and inspects topics. Uses a client handle of its own; cheap to create, meant for start-up work.
package final class KafkaAdmin: Sendable {
    private let handle: RdKafkaHandle
    private let logger: Logger

    package init(bootstrapServers: String, logger: Logger) throws(KafkaError) {
        self.handle = try RdKafkaHandle(
            // A producer-type handle asks the broker to auto-create a topic it requests metadata for (librdkafka's
            // producer default): describing a topic must never create it, with the broker's defaults.
            type: RD_KAFKA_PRODUCER,
            settings: [
                "bootstrap.servers": bootstrapServers, "client.id": "lethe-admin", "allow.auto.create.topics": "false",
            ],
            context: RdKafkaCallbackContext(logger: logger))
        self.logger = logger
    }

    /// Makes sure every topic exists with its partition count and config. Idempotent: an existing topic with the same
    /// partition count is left alone. An existing topic with a different partition count is an error — partitions are
    /// never added silently, because keyed state (and co-partitioning) depends on the count.
    ///
    /// An existing topic whose settings (`cleanup.policy`, `retention.ms`, …) differ from the spec is left as it is,
    /// but each difference is logged as a warning and returned: a compacted topic created with `delete`, or a topic of
    /// personal data kept longer than Lethe keeps it, is the operator's to fix (`kafka-configs --alter`).
    @discardableResult
    package func ensureTopics(_ specs: [TopicSpec], timeout: Duration = .seconds(30)) async throws(KafkaError)
        -> [TopicSettingMismatch]
    {
        guard !specs.isEmpty else { return [] }
        let handle = self.handle
        let created = try await BlockingCalls.run { () throws(KafkaError) in
            try Self.createTopics(specs, handle: handle, timeout: timeout)
        }
        for spec in specs {
            let partitions = try await partitionCount(of: spec.name, timeout: timeout)
            if partitions != spec.partitions {
                throw KafkaError(
                    RD_KAFKA_RESP_ERR_INVALID_PARTITIONS,
                    message: "topic \(spec.name) exists with \(partitions) partitions, expected \(spec.partitions)")
            }
        }
        if !created.isEmpty { logger.info("created topics", metadata: ["kafka.topics": "\(created.sorted())"]) }
        var mismatches: [TopicSettingMismatch] = []
        for spec in specs where !created.contains(spec.name) && !spec.config.isEmpty {
            let actual = try await topicConfig(of: spec.name, timeout: timeout)
            for (setting, expected) in spec.config.sorted(by: { $0.key < $1.key }) {
                guard let value = actual[setting], value != expected else { continue }
                mismatches.append(TopicSettingMismatch(topic: spec.name, setting: setting, actual: value, expected: expected))
            }
        }
        for mismatch in mismatches {
            logger.warning("an existing topic has another setting than Lethe creates it with; it is left unchanged", metadata: [
                "topic": "\(mismatch.topic)", "setting": "\(mismatch.setting)", "actual": "\(mismatch.actual)",
                "expected": "\(mismatch.expected)",
            ])
        }
        return mismatches
    }

    /// Sends CreateTopics and returns the names that were created now (already-existing ones are fine).
    private static func createTopics(_ specs: [TopicSpec], handle: RdKafkaHandle, timeout: Duration) throws(KafkaError)
        -> [String]
    {
        var errorText = [CChar](repeating: 0, count: 512)
        var newTopics: [OpaquePointer?] = []
        defer { newTopics.forEach { rd_kafka_NewTopic_destroy($0) } }
        for spec in specs {
            guard let topic = rd_kafka_NewTopic_new(
                spec.name, Int32(spec.partitions), Int32(spec.replicationFactor), &errorText, errorText.count)
            else { throw KafkaError.invalidArgument("topic \(spec.name): \(string(fromErrorBuffer: errorText))") }
            newTopics.append(topic)
            for (name, value) in spec.config.sorted(by: { $0.key < $1.key }) {
                let err = rd_kafka_NewTopic_set_config(topic, name, value)
                if err != RD_KAFKA_RESP_ERR_NO_ERROR { throw KafkaError(err, message: "topic \(spec.name): \(name)") }
            }
        }
        let queue = rd_kafka_queue_new(handle.pointer)
        defer { rd_kafka_queue_destroy(queue) }
        let options = rd_kafka_AdminOptions_new(handle.pointer, RD_KAFKA_ADMIN_OP_CREATETOPICS)
        defer { rd_kafka_AdminOptions_destroy(options) }
        _ = rd_kafka_AdminOptions_set_operation_timeout(options, Int32(clamping: timeout.milliseconds), &errorText, 512)
        _ = rd_kafka_AdminOptions_set_request_timeout(options, Int32(clamping: timeout.milliseconds), &errorText, 512)
        newTopics.withUnsafeMutableBufferPointer { buffer in
            rd_kafka_CreateTopics(handle.pointer, buffer.baseAddress, buffer.count, options, queue)
        }
        guard let event = rd_kafka_queue_poll(queue, Int32(clamping: timeout.milliseconds + 5000)) else {
            throw KafkaError(RD_KAFKA_RESP_ERR__TIMED_OUT, message: "CreateTopics got no answer")
        }
        defer { rd_kafka_event_destroy(event) }
        if rd_kafka_event_error(event) != RD_KAFKA_RESP_ERR_NO_ERROR {
            throw KafkaError(rd_kafka_event_error(event), message: String(cString: rd_kafka_event_error_string(event)))
        }
        var count = 0
        let result = rd_kafka_event_CreateTopics_result(event)
        guard let results = rd_kafka_CreateTopics_result_topics(result, &count) else { return [] }
        var created: [String] = []
        for index in 0..<count {
            let topicResult = results[index]
            let name = String(cString: rd_kafka_topic_result_name(topicResult))
            let err = rd_kafka_topic_result_error(topicResult)
            switch err {
            case RD_KAFKA_RESP_ERR_NO_ERROR: created.append(name)
            case RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS: continue
            default:
                let text = rd_kafka_topic_result_error_string(topicResult).map { String(cString: $0) } ?? ""
                throw KafkaError(err, message: "creating topic \(name): \(text)")
            }
        }
        return created
    }

    /// The partition count of an existing topic, from a metadata request.
    package func partitionCount(of topic: String, timeout: Duration = .seconds(10)) async throws(KafkaError) -> Int {
        let handle = self.handle
        return try await BlockingCalls.run { () throws(KafkaError) in
            guard let rkt = rd_kafka_topic_new(handle.pointer, topic, nil) else {
                throw KafkaError.invalidArgument("bad topic name \(topic)")
            }
            defer { rd_kafka_topic_destroy(rkt) }
            var metadata: UnsafePointer<rd_kafka_metadata>?
            let err = rd_kafka_metadata(handle.pointer, 0, rkt, &metadata, Int32(clamping: timeout.milliseconds))
            guard err == RD_KAFKA_RESP_ERR_NO_ERROR, let metadata else {
                throw KafkaError(err, message: "metadata for \(topic)")
            }
            defer { rd_kafka_metadata_destroy(metadata) }
            guard metadata.pointee.topic_cnt > 0 else { throw KafkaError(RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) }
            let topicMetadata = metadata.pointee.topics[0]
            if topicMetadata.err != RD_KAFKA_RESP_ERR_NO_ERROR {
                throw KafkaError(topicMetadata.err, message: "metadata for \(topic)")
            }
            return Int(topicMetadata.partition_cnt)
        }
    }

    /// How many records `topic` holds (high minus low watermark, summed over its partitions), or nil when the topic
    /// does not exist: what a dead-letter topic's depth is, since nothing in Lethe consumes one.
    package func recordCount(of topic: String, timeout: Duration = .seconds(10)) async throws(KafkaError) -> Int? {
        let partitions: Int
        do {
            partitions = try await partitionCount(of: topic, timeout: timeout)
        } catch let error
            where [RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART.rawValue, RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC.rawValue]
            .contains(error.code)
        {
            return nil
        }
        let handle = self.handle
        return try await BlockingCalls.run { () throws(KafkaError) in
            var total: Int64 = 0
            for partition in 0..<Int32(partitions) {
                var low: Int64 = 0
                var high: Int64 = 0
                let err = rd_kafka_query_watermark_offsets(
                    handle.pointer, topic, partition, &low, &high, Int32(clamping: timeout.milliseconds))
                if err != RD_KAFKA_RESP_ERR_NO_ERROR { throw KafkaError(err, message: "watermarks of \(topic)") }
                total += max(0, high - low)
            }
            return Int(total)
        }
    }

    /// The topic-level configuration the broker reports for `topic` (DescribeConfigs).
    package func topicConfig(of topic: String, timeout: Duration = .seconds(10)) async throws(KafkaError) -> [String: String] {
        let handle = self.handle
        return try await BlockingCalls.run { () throws(KafkaError) in
            let queue = rd_kafka_queue_new(handle.pointer)
            defer { rd_kafka_queue_destroy(queue) }
            var resource: OpaquePointer? = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, topic)
            defer { rd_kafka_ConfigResource_destroy(resource) }
            let options = rd_kafka_AdminOptions_new(handle.pointer, RD_KAFKA_ADMIN_OP_DESCRIBECONFIGS)
            defer { rd_kafka_AdminOptions_destroy(options) }
            rd_kafka_DescribeConfigs(handle.pointer, &resource, 1, options, queue)
            guard let event = rd_kafka_queue_poll(queue, Int32(clamping: timeout.milliseconds + 5000)) else {
                throw KafkaError(RD_KAFKA_RESP_ERR__TIMED_OUT, message: "DescribeConfigs got no answer")
            }
            defer { rd_kafka_event_destroy(event) }
            if rd_kafka_event_error(event) != RD_KAFKA_RESP_ERR_NO_ERROR {
                throw KafkaError(rd_kafka_event_error(event), message: String(cString: rd_kafka_event_error_string(event)))
            }
            var count = 0
            let result = rd_kafka_event_DescribeConfigs_result(event)
            guard let resources = rd_kafka_DescribeConfigs_result_resources(result, &count), count > 0 else { return [:] }
            let described = resources[0]
            let err = rd_kafka_ConfigResource_error(described)
            if err != RD_KAFKA_RESP_ERR_NO_ERROR { throw KafkaError(err, message: "DescribeConfigs for \(topic)") }
            var entryCount = 0
            guard let entries = rd_kafka_ConfigResource_configs(described, &entryCount) else { return [:] }
            var config: [String: String] = [:]
            for index in 0..<entryCount {
                let entry = entries[index]
                guard let name = rd_kafka_ConfigEntry_name(entry) else { continue }
                config[String(cString: name)] = rd_kafka_ConfigEntry_value(entry).map { String(cString: $0) }
            }
            return config
        }
    }

    /// Succeeds when a metadata request to the cluster succeeds: the readiness check for Kafka.
    package func ping(timeout: Duration = .seconds(5)) async throws(KafkaError) {
        let handle = self.handle
        try await BlockingCalls.run { () throws(KafkaError) in
            var metadata: UnsafePointer<rd_kafka_metadata>?
            let err = rd_kafka_metadata(handle.pointer, 0, nil, &metadata, Int32(clamping: timeout.milliseconds))
            if let metadata { rd_kafka_metadata_destroy(metadata) }
            if err != RD_KAFKA_RESP_ERR_NO_ERROR { throw KafkaError(err, message: "broker metadata request failed") }
        }
    }
}
