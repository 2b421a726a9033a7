import Foundation

/// How a reader knows it has read a partition to its end: it first produces a marker record to the partition and
/// waits for the broker to acknowledge it, then reads until it meets its own marker. The broker appended the marker
/// after every record it had acknowledged until then, so everything written before the restore began has been read —
/// on any Kafka-protocol broker, whatever its watermarks say (the Tansu dev broker's ListOffsets are not exact) and
/// whether or not the last offset is a transaction marker.
///
/// A marker is a tombstone (null value) keyed ``key`` with the header ``header`` holding an id unique to one restore
/// and partition: on a compacting broker markers collapse into one tombstone and then disappear, so they never grow a
/// topic. Readers of a topic that carries markers skip records with the header (other restores' markers). Used by
/// erasure-executor's state restore and pdr-reporter's changelog restore; docs/contracts.md tells participants.
package enum RestoreMarker {
    package static let header = "lethe_restore_marker"
    package static let key = "lethe-restore-marker"

    /// A new restore's markers, one per partition: the id each carries, and the records to produce.
    package static func make(for partitions: [TopicPartition]) -> (ids: [TopicPartition: String], records: [OutgoingMessage]) {
        let restoreId = UUID().uuidString.lowercased()
        var ids: [TopicPartition: String] = [:]
        var records: [OutgoingMessage] = []
        for partition in partitions {
            let id = "\(restoreId):\(partition.topic):\(partition.partition)"
            ids[partition] = id
            records.append(OutgoingMessage(
                topic: partition.topic, key: Array(key.utf8), value: nil,
                headers: [KafkaHeader(name: header, string: id)], partition: partition.partition))
        }
        return (ids, records)
    }

    /// The marker id `message` carries, or nil when it is not a marker.
    package static func id(of message: KafkaMessage) -> String? {
        message.headers.first(where: { $0.name == header })?.stringValue
    }
}
