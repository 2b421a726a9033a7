import Contracts
import Foundation

extension OutgoingMessage {
    /// A Lethe event as a Kafka record: the JSON body from `EventCodec` and the CloudEvents 1.0 binary-mode headers
    /// (`ce_specversion`, `ce_id`, `ce_type`, `ce_source`, `ce_time`, `content-type`).
    ///
    /// - Parameters:
    ///   - key: the topic's key (ARCHITECTURE.md's topics table), e.g. `AccountKey.rawValue` or a tenant id.
    ///   - source: the producing service, for `ce_source` (e.g. `lethe/profile-store`).
    ///   - id: the CloudEvents id; pass a stable one when a retry must be recognisable as the same event.
    package init<Event: LetheEvent>(
        event: Event, topic: String, key: String, source: String, id: String = RandomIdentifier.uuidString(),
        time: Date = Date()
    ) throws(ContractError) {
        // A wrong pairing is a programming error: caught by every test, free in release builds.
        assert(Topics.carries(topic, Event.self), "\(Event.eventType) does not belong on \(topic) (Topics.all)")
        let attributes = CloudEventAttributes.for(event, source: source, id: id, time: time)
        self.init(
            topic: topic, key: key, value: Array(try EventCodec.encode(event)),
            headers: attributes.headers.map { KafkaHeader(name: $0.name, string: $0.value) })
    }

    /// A tombstone for `key`: on a compacted topic it deletes the key's last value.
    package static func tombstone(topic: String, key: String) -> OutgoingMessage {
        OutgoingMessage(topic: topic, key: key, value: nil)
    }
}

extension KafkaMessage {
    /// The headers that are valid UTF-8, by name (the last one wins), as `Contracts` reads CloudEvents attributes.
    package var stringHeaders: [String: String] {
        var result: [String: String] = [:]
        for header in headers {
            if let value = header.stringValue { result[header.name] = value }
        }
        return result
    }

    /// Decodes the record as `Event`, checking `ce_type` when present and the schema version. A tombstone, bad JSON or
    /// an unknown major version is a `ContractError`: the caller dead-letters the record and moves on.
    package func decodeEvent<Event: LetheEvent>(_ type: Event.Type) throws(ContractError) -> Event {
        guard let value else { throw ContractError.malformedJSON(reason: "tombstone (no value)") }
        return try EventCodec.decode(type, value: value, headers: stringHeaders)
    }
}
