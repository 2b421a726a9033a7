import Foundation

/// Encodes and decodes event bodies: JSON with a `schemaVersion` field and RFC 3339 millisecond UTC dates.
///
/// Every producer and consumer goes through here, so the wire format lives in one place. Decoding checks the schema
/// version before the body: an unknown major is ``ContractError/unsupportedSchemaVersion(found:supported:)``, which
/// a consumer sends to the DLQ. All errors are ``ContractError`` values whose descriptions never contain field values.
/// Encoders and decoders are made per call, so nothing mutable is shared between tasks.
package enum EventCodec {
    /// Encodes `event` as JSON (sorted keys), adding `"schemaVersion"` with the type's version.
    package static func encode<Event: LetheEvent>(_ event: Event) throws(ContractError) -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .custom { date, encoder in
            var container = encoder.singleValueContainer()
            try container.encode(RFC3339.string(from: date))
        }
        do {
            return try encoder.encode(Versioned(event: event))
        } catch let error as EncodingError {
            throw .encodingFailed(reason: reason(for: error))
        } catch {
            throw .encodingFailed(reason: "\(type(of: error))")
        }
    }

    /// Decodes an `Event` body, checking its schema version first.
    ///
    /// - Throws: ``ContractError/malformedJSON(reason:)``, ``ContractError/missingSchemaVersion`` or
    ///   ``ContractError/unsupportedSchemaVersion(found:supported:)``.
    package static func decode<Event: LetheEvent>(_ type: Event.Type, from data: Data) throws(ContractError) -> Event {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .custom { decoder in
            let container = try decoder.singleValueContainer()
            guard let date = RFC3339.date(from: try container.decode(String.self)) else {
                throw DecodingError.dataCorruptedError(in: container, debugDescription: "not an RFC 3339 timestamp")
            }
            return date
        }
        do {
            return try decoder.decode(Versioned<Event>.self, from: data).event
        } catch let error as ContractError {
            throw error
        } catch let error as DecodingError {
            throw .malformedJSON(reason: reason(for: error))
        } catch {
            throw .malformedJSON(reason: "\(Swift.type(of: error))")
        }
    }

    /// Decodes an `Event` body from raw bytes (as a Kafka record value arrives).
    package static func decode<Event: LetheEvent>(_ type: Event.Type, from bytes: [UInt8]) throws(ContractError)
        -> Event
    {
        try decode(type, from: Data(bytes))
    }

    /// Decodes a Kafka record value with its headers: the one call a consumer needs.
    ///
    /// The record must carry the CloudEvents headers docs/contracts.md requires (``CloudEventAttributes/init(headers:)``:
    /// `ce_specversion` 1.0, `ce_id`, `ce_type`, `ce_source`, an RFC 3339 `ce_time`, a JSON `content-type` if any), and
    /// `ce_type` must be `Event.eventType`. A record without them is not an event of the contract, whatever its body
    /// says: acting on it (storing a profile, opening an erasure) would trust a producer that skipped the contract, so
    /// the caller dead-letters it with the reason, like any other malformed record (issue 15).
    ///
    /// - Throws: ``ContractError/missingHeader(name:)``, ``ContractError/invalidHeader(name:reason:)``,
    ///   ``ContractError/unexpectedEventType(found:expected:)`` and everything decoding the body throws.
    package static func decode<Event: LetheEvent>(
        _ type: Event.Type,
        value: Data,
        headers: [String: String]
    ) throws(ContractError) -> Event {
        let attributes = try CloudEventAttributes(headers: headers)
        guard attributes.type == Event.eventType else {
            throw .unexpectedEventType(found: attributes.type, expected: Event.eventType)
        }
        return try decode(type, from: value)
    }

    /// ``decode(_:value:headers:)`` for a value given as raw bytes.
    package static func decode<Event: LetheEvent>(
        _ type: Event.Type,
        value: [UInt8],
        headers: [String: String]
    ) throws(ContractError) -> Event {
        try decode(type, value: Data(value), headers: headers)
    }

    // MARK: Error reasons (names and paths only, never values)

    static func reason(for error: DecodingError) -> String {
        switch error {
        case .typeMismatch(let type, let context):
            return "wrong type at \(path(context.codingPath)), expected \(type)"
        case .valueNotFound(let type, let context):
            return "null at \(path(context.codingPath)), expected \(type)"
        case .keyNotFound(let key, let context):
            return "missing field \(path(context.codingPath + [key]))"
        case .dataCorrupted(let context):
            if context.codingPath.isEmpty {
                return "not valid JSON"
            }
            return "invalid value at \(path(context.codingPath))"
        @unknown default:
            return "undecodable"
        }
    }

    static func reason(for error: EncodingError) -> String {
        switch error {
        case .invalidValue(let value, let context):
            return "invalid \(type(of: value)) at \(path(context.codingPath))"
        @unknown default:
            return "unencodable"
        }
    }

    private static func path(_ codingPath: [any CodingKey]) -> String {
        guard !codingPath.isEmpty else { return "<root>" }
        var result = ""
        for key in codingPath {
            if let index = key.intValue {
                result += "[\(index)]"
            } else {
                result += result.isEmpty ? key.stringValue : ".\(key.stringValue)"
            }
        }
        return result
    }
}

/// An event plus its schema version, flattened into one JSON object.
///
/// Decoding reads `schemaVersion` before the event's own fields, so a body of an unknown major version is rejected
/// for its version rather than for whatever field its new shape lacks.
private struct Versioned<Event: LetheEvent>: Codable {
    private enum Key: String, CodingKey {
        case schemaVersion
    }

    let event: Event

    init(event: Event) {
        self.event = event
    }

    init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: Key.self)
        guard container.contains(.schemaVersion), try !container.decodeNil(forKey: .schemaVersion) else {
            throw ContractError.missingSchemaVersion
        }
        let text = try container.decode(String.self, forKey: .schemaVersion)
        guard let found = SchemaVersion(text) else {
            throw ContractError.malformedJSON(reason: "schemaVersion is not of the form major.minor")
        }
        guard Event.schemaVersion.canDecode(found) else {
            throw ContractError.unsupportedSchemaVersion(found: found, supported: Event.schemaVersion)
        }
        event = try Event(from: decoder)
    }

    func encode(to encoder: any Encoder) throws {
        // The event and the version share one keyed container: JSONEncoder merges repeated requests at a level.
        try event.encode(to: encoder)
        var container = encoder.container(keyedBy: Key.self)
        try container.encode(Event.schemaVersion.description, forKey: .schemaVersion)
    }
}
