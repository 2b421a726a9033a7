import Foundation

/// CloudEvents 1.0 context attributes in Kafka *binary* mode: the attributes travel as record headers, the record
/// value is the bare JSON body.
///
/// Required on every Lethe record: `ce_specversion`, `ce_id`, `ce_type`, `ce_source`, `ce_time`, and
/// `content-type: application/json`. `id` plus `source` identify an event uniquely, so consumers may deduplicate on
/// them.
package struct CloudEventAttributes: Sendable, Hashable {
    /// Header names, exactly as the CloudEvents Kafka binding spells them.
    package enum Header {
        /// `ce_specversion`.
        package static let specversion = "ce_specversion"
        /// `ce_id`.
        package static let id = "ce_id"
        /// `ce_type`.
        package static let type = "ce_type"
        /// `ce_source`.
        package static let source = "ce_source"
        /// `ce_time`.
        package static let time = "ce_time"
        /// `content-type` (the binding maps `datacontenttype` to this header, without a `ce_` prefix).
        package static let contentType = "content-type"
    }

    /// The only CloudEvents version Lethe speaks.
    package static let specversion1_0 = "1.0"
    /// The only content type Lethe writes.
    package static let applicationJSON = "application/json"

    /// Unique per event for a given source; a re-sent erasure command gets a new id (it is a new message).
    package var id: String
    /// The event type, i.e. ``LetheEvent/eventType``.
    package var type: String
    /// Who produced the event, e.g. `/lethe/oauth-gateway`.
    package var source: String
    /// When the event happened (as the producer saw it).
    package var time: Date
    /// Always `1.0` for records Lethe writes.
    package var specversion: String
    /// Always `application/json` for records Lethe writes.
    package var contentType: String

    /// Makes attributes; `specversion` and `contentType` default to what Lethe writes.
    package init(
        id: String,
        type: String,
        source: String,
        time: Date,
        specversion: String = CloudEventAttributes.specversion1_0,
        contentType: String = CloudEventAttributes.applicationJSON
    ) {
        self.id = id
        self.type = type
        self.source = source
        self.time = time
        self.specversion = specversion
        self.contentType = contentType
    }

    /// The attributes for publishing `event`: its type, a fresh (lowercase) UUID id and the current time unless given.
    package static func `for`(
        _ event: some LetheEvent,
        source: String,
        id: String = UUID().uuidString.lowercased(),
        time: Date = Date()
    ) -> CloudEventAttributes {
        CloudEventAttributes(id: id, type: eventType(of: event), source: source, time: time)
    }

    private static func eventType<Event: LetheEvent>(of _: Event) -> String {
        Event.eventType
    }

    /// The record headers, in a stable order, with `ce_time` as RFC 3339 UTC with milliseconds.
    package var headers: [(name: String, value: String)] {
        [
            (Header.specversion, specversion),
            (Header.id, id),
            (Header.type, type),
            (Header.source, source),
            (Header.time, RFC3339.string(from: time)),
            (Header.contentType, contentType),
        ]
    }

    /// Parses the attributes from record headers. Header names are matched exactly first, then case-insensitively.
    ///
    /// `content-type` may be absent (JSON is assumed); every `ce_` header above is required.
    ///
    /// - Throws: ``ContractError/missingHeader(name:)`` for an absent or empty required header,
    ///   ``ContractError/invalidHeader(name:reason:)`` for a `ce_time` that is not RFC 3339, a `ce_specversion` other
    ///   than 1.0, or a non-JSON `content-type`.
    package init(headers: [String: String]) throws(ContractError) {
        let lookup = HeaderLookup(headers)
        func required(_ name: String) throws(ContractError) -> String {
            guard let value = lookup[name], !value.isEmpty else { throw .missingHeader(name: name) }
            return value
        }
        let specversion = try required(Header.specversion)
        try Self.validate(specversion: specversion)
        let id = try required(Header.id)
        let type = try required(Header.type)
        let source = try required(Header.source)
        guard let time = RFC3339.date(from: try required(Header.time)) else {
            throw .invalidHeader(name: Header.time, reason: "not an RFC 3339 timestamp")
        }
        let contentType = lookup[Header.contentType] ?? Self.applicationJSON
        try Self.validate(contentType: contentType)
        self.init(id: id, type: type, source: source, time: time, specversion: specversion, contentType: contentType)
    }

    /// Parses the attributes from headers given as pairs (as Kafka delivers them); for a repeated name the last
    /// value wins, as in the Kafka binding.
    package init(headers: [(name: String, value: String)]) throws(ContractError) {
        try self.init(headers: Dictionary(headers.map { ($0.name, $0.value) }, uniquingKeysWith: { _, last in last }))
    }

    static func validate(specversion: String) throws(ContractError) {
        guard specversion == specversion1_0 else {
            throw .invalidHeader(name: Header.specversion, reason: "only CloudEvents 1.0 is supported")
        }
    }

    /// Accepts `application/json` with optional parameters (`; charset=utf-8`), in any letter case.
    static func validate(contentType: String) throws(ContractError) {
        let mediaType = contentType.split(separator: ";", maxSplits: 1).first ?? ""
        guard mediaType.trimmingCharacters(in: .whitespaces).lowercased() == applicationJSON else {
            throw .invalidHeader(name: Header.contentType, reason: "expected application/json")
        }
    }
}

/// Header lookup that prefers an exact name and falls back to a case-insensitive match, since some clients
/// capitalise `Content-Type`. The fallback scans only on a miss: every record is looked up, and Lethe's own
/// producers write the exact names, so folding every header of every record would be work for nothing.
struct HeaderLookup {
    private let headers: [String: String]

    init(_ headers: [String: String]) {
        self.headers = headers
    }

    /// `name` must be lowercase (every CloudEvents header name is).
    subscript(name: String) -> String? {
        if let value = headers[name] { return value }
        // Deterministic when two spellings of one name are present: the first in sorted order wins.
        return headers.keys.sorted().first { $0.lowercased() == name }.flatMap { headers[$0] }
    }
}
