import Contracts
import Foundation
import Messaging

/// The records profile-store writes to its outbox in an ingest transaction, one of each per changed account: its
/// `AccountHeld` and its changelog record (`ProfilesHeld`).
///
/// `EventCodec.encode` builds a `JSONEncoder` per call: about 10 µs of the ingest writer's time per `AccountHeld`, a
/// sixth of it, and about 14 % of it per `ProfilesHeld` (a profile of the bench's). Both bodies have fields in a fixed
/// order, so they are written here directly, byte for byte what `EventCodec` writes (sorted keys, RFC 3339
/// milliseconds, unescaped slashes, absent optionals omitted; ProfileDatabaseTests compares them). A body with a
/// string that would need JSON escaping (a quote, a backslash, a control character) takes `EventCodec`, so the
/// escaping rules live in one place.
enum OutboxRecords {
    /// The `AccountHeld` record for `event` on `topic`, keyed by its account, with CloudEvents headers stamped `time`.
    static func accountHeld(_ event: AccountHeld, topic: String, source: String, time: Date) throws -> OutgoingMessage {
        try record(event, key: "\(event.appId):\(event.accountId)", body: body(of: event), topic: topic, source: source,
                   time: time)
    }

    /// The changelog record for `event` on `topic` under `key`, with CloudEvents headers stamped `time`.
    static func profilesHeld(_ event: ProfilesHeld, key: String, topic: String, source: String, time: Date) throws
        -> OutgoingMessage
    {
        try record(event, key: key, body: body(of: event), topic: topic, source: source, time: time)
    }

    private static func record<Event: LetheEvent>(
        _ event: Event, key: String, body: [UInt8]?, topic: String, source: String, time: Date
    ) throws -> OutgoingMessage {
        guard let body else { return try OutgoingMessage(event: event, topic: topic, key: key, source: source, time: time) }
        let attributes = CloudEventAttributes.for(event, source: source, id: RandomIdentifier.uuidString(), time: time)
        return OutgoingMessage(
            topic: topic, key: key, value: body,
            headers: attributes.headers.map { KafkaHeader(name: $0.name, string: $0.value) })
    }

    /// The JSON body of an `AccountHeld`, or nil when a string needs escaping.
    static func body(of event: AccountHeld) -> [UInt8]? {
        var json = PlainJSON(capacity: 96 + event.appId.utf8.count + event.accountId.utf8.count
            + event.tenantIds.reduce(0) { $0 + $1.utf8.count + 3 })
        json.append("{\"accountId\":")
        json.string(event.accountId)
        json.append(",\"appId\":")
        json.string(event.appId)
        json.append(",\"schemaVersion\":")
        json.string(AccountHeld.schemaVersion.description)
        json.append(",\"tenantIds\":[")
        for (index, tenantId) in event.tenantIds.enumerated() {
            if index > 0 { json.append(",") }
            json.string(tenantId)
        }
        json.append("],\"updatedAt\":")
        json.string(RFC3339.string(from: event.updatedAt))
        json.append("}")
        return json.bytes
    }

    /// The JSON body of a `ProfilesHeld`, or nil when a string needs escaping.
    static func body(of event: ProfilesHeld) -> [UInt8]? {
        var json = PlainJSON(capacity: 96 + event.profiles.count * 320)
        json.append("{")
        if let accountId = event.accountId {
            json.append("\"accountId\":")
            json.string(accountId)
            json.append(",")
        }
        json.append("\"appId\":")
        json.string(event.appId)
        json.append(",\"profiles\":[")
        for (index, profile) in event.profiles.enumerated() {
            if index > 0 { json.append(",") }
            json.append("{")
            if let email = profile.email {
                json.append("\"email\":")
                json.string(email)
                json.append(",")
            }
            json.append("\"fetchedAt\":")
            json.string(RFC3339.string(from: profile.fetchedAt))
            json.append(profile.holdsPersonalData ? ",\"holdsPersonalData\":true" : ",\"holdsPersonalData\":false")
            for (field, value) in [("name", profile.name), ("nickname", profile.nickname), ("picture", profile.picture)] {
                guard let value else { continue }
                json.append(",\"\(field)\":")
                json.string(value)
            }
            json.append(",\"platformUserId\":")
            json.string(profile.platformUserId)
            json.append(",\"tenantId\":")
            json.string(profile.tenantId)
            json.append("}")
        }
        json.append("],\"schemaVersion\":")
        json.string(ProfilesHeld.schemaVersion.description)
        json.append("}")
        return json.bytes
    }
}

/// A JSON body written byte by byte, for strings JSON writes as they are: ``bytes`` is nil once one needed escaping.
private struct PlainJSON {
    private var json: [UInt8] = []
    private var escapingNeeded = false

    init(capacity: Int) { json.reserveCapacity(capacity) }

    /// What was written, or nil when a string needed escaping.
    var bytes: [UInt8]? { escapingNeeded ? nil : json }

    mutating func append(_ text: String) { json.append(contentsOf: text.utf8) }

    /// `text` as a JSON string, when it needs no escaping: no quote, backslash or control character.
    mutating func string(_ text: String) {
        guard text.utf8.allSatisfy({ $0 >= 0x20 && $0 != UInt8(ascii: "\"") && $0 != UInt8(ascii: "\\") && $0 != 0x7f })
        else {
            escapingNeeded = true
            return
        }
        json.append(UInt8(ascii: "\""))
        json.append(contentsOf: text.utf8)
        json.append(UInt8(ascii: "\""))
    }
}
