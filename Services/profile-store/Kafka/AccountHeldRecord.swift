import Contracts
import Foundation
import Messaging

/// The `AccountHeld` records profile-store writes to its outbox, one per changed account in an ingest transaction.
///
/// `EventCodec.encode` builds a `JSONEncoder` per call, which cost about 10 µs of the ingest writer's time per
/// account, a sixth of it. The body is five fields in a fixed order, so it is written here directly, byte for byte
/// what `EventCodec` writes (sorted keys, RFC 3339 milliseconds, unescaped slashes; ProfileDatabaseTests compares
/// the two). Ids that would need JSON escaping (a quote, a backslash, a control character) take `EventCodec`, so the
/// escaping rules live in one place.
enum AccountHeldRecord {
    /// The record for `event` on `topic`, keyed by its account, with CloudEvents headers stamped `time`.
    static func make(_ event: AccountHeld, topic: String, source: String, time: Date) throws -> OutgoingMessage {
        let key = "\(event.appId):\(event.accountId)"
        guard let value = body(of: event) else {
            return try OutgoingMessage(event: event, topic: topic, key: key, source: source, time: time)
        }
        let attributes = CloudEventAttributes.for(event, source: source, id: RandomIdentifier.uuidString(), time: time)
        return OutgoingMessage(
            topic: topic, key: key, value: value,
            headers: attributes.headers.map { KafkaHeader(name: $0.name, string: $0.value) })
    }

    /// The JSON body, or nil when an id needs escaping.
    static func body(of event: AccountHeld) -> [UInt8]? {
        guard plain(event.appId), plain(event.accountId), event.tenantIds.allSatisfy(plain) else { return nil }
        var json: [UInt8] = []
        json.reserveCapacity(96 + event.appId.utf8.count + event.accountId.utf8.count
            + event.tenantIds.reduce(0) { $0 + $1.utf8.count + 3 })
        func append(_ text: String) { json.append(contentsOf: text.utf8) }
        func appendString(_ text: String) {
            json.append(UInt8(ascii: "\""))
            append(text)
            json.append(UInt8(ascii: "\""))
        }
        append("{\"accountId\":")
        appendString(event.accountId)
        append(",\"appId\":")
        appendString(event.appId)
        append(",\"schemaVersion\":")
        appendString(AccountHeld.schemaVersion.description)
        append(",\"tenantIds\":[")
        for (index, tenantId) in event.tenantIds.enumerated() {
            if index > 0 { json.append(UInt8(ascii: ",")) }
            appendString(tenantId)
        }
        append("],\"updatedAt\":")
        appendString(RFC3339.string(from: event.updatedAt))
        json.append(UInt8(ascii: "}"))
        return json
    }

    /// Whether JSON writes `text` as it is: no quote, backslash or control character.
    private static func plain(_ text: String) -> Bool {
        text.utf8.allSatisfy { $0 >= 0x20 && $0 != UInt8(ascii: "\"") && $0 != UInt8(ascii: "\\") && $0 != 0x7f }
    }
}
