import Logging

extension RestoreMarker {
    /// The reader of ``readToEnd(_:bootstrapServers:producer:clientId:logger:maxBatch:apply:)`` stopped before it
    /// met every marker.
    package struct ReaderEnded: Error, CustomStringConvertible {
        package var description: String { "the restore reader ended before it read every partition to its marker" }
    }

    /// What ``readToEnd(_:from:bootstrapServers:producer:clientId:logger:maxBatch:apply:)`` read.
    package struct ReadToEnd: Sendable, Equatable {
        /// Records handed to `apply`.
        package var handed = 0
        /// Per partition, the offset after this restore's marker: every record before it has been handed over, so a
        /// later restore that already holds them may start there.
        package var after: [TopicPartition: Int64] = [:]
    }

    /// Reads `partitions` — from the offsets in `start`, else from their beginning — with a reader of its own, outside
    /// any group, until it has met this restore's marker in each (it writes the markers first), and hands the records
    /// before them to `apply`, in the order read, in batches of at most `maxBatch`; other restores' markers are
    /// skipped. The reader is closed when it returns. Used by erasure-executor's changelog read-back and pdr-reporter's
    /// restore of an assigned partition.
    package static func readToEnd(
        _ partitions: [TopicPartition], from start: [TopicPartition: Int64] = [:], bootstrapServers: String,
        producer: KafkaProducer, clientId: String, logger: Logger, maxBatch: Int = 1000,
        apply: @escaping @Sendable ([KafkaMessage]) async throws -> Void
    ) async throws -> ReadToEnd {
        guard !partitions.isEmpty else { return ReadToEnd() }
        let markers = make(for: partitions)
        try await producer.send(markers.records)
        let reader = try KafkaConsumer(
            config: KafkaConsumerConfig(
                bootstrapServers: bootstrapServers,
                // An offset past the end (a topic created anew) falls back to the beginning (auto.offset.reset).
                subscription: .partitions(partitions.map { ($0, from: start[$0].map { .at($0) } ?? .beginning) }),
                clientId: clientId, maxBufferedMessages: 20_000,
                // Whole partitions as fast as possible: up to 16 MiB per partition per fetch (librdkafka: 1 MiB), so a
                // partition of 100k records is a few round trips, not dozens.
                extraSettings: ["max.partition.fetch.bytes": "16777216", "fetch.max.bytes": "67108864"]),
            logger: logger)
        return try await withThrowingTaskGroup(of: ReadToEnd?.self) { group in
            group.addTask {
                try await reader.run()
                return nil
            }
            group.addTask {
                var pending = markers.ids
                var batch: [KafkaMessage] = []
                var read = ReadToEnd()
                func flush() async throws {
                    guard !batch.isEmpty else { return }
                    try await apply(batch)
                    read.handed += batch.count
                    batch.removeAll(keepingCapacity: true)
                }
                for try await event in reader.events {
                    guard case .message(let message) = event else { continue }
                    guard let id = RestoreMarker.id(of: message) else {
                        batch.append(message)
                        if batch.count >= maxBatch { try await flush() }
                        continue
                    }
                    let partition = TopicPartition(topic: message.topic, partition: message.partition)
                    guard pending[partition] == id else { continue }
                    pending[partition] = nil
                    read.after[partition] = message.offset + 1
                    if pending.isEmpty {
                        try await flush()
                        return read
                    }
                }
                throw ReaderEnded()
            }
            defer { group.cancelAll() }
            while let result = try await group.next() {
                if let read = result { return read }
            }
            throw ReaderEnded()
        }
    }
}
