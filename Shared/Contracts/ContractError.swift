import Foundation

/// Everything that can be wrong with a record according to the topic contracts.
///
/// All cases are permanent: retrying the same bytes gives the same error, so a consumer sends the record to
/// `<topic>.dlq` (with ``description`` in the `lethe_error` header) and moves on. Descriptions name fields and
/// decoding paths but never field *values*: a payload may hold personal data (names, emails), and descriptions end
/// up in logs and DLQ headers.
package enum ContractError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The value is not JSON, or not the JSON shape of the expected event. `reason` names the kind of problem and
    /// the field path, never a value.
    case malformedJSON(reason: String)
    /// The JSON body has no `schemaVersion` field.
    case missingSchemaVersion
    /// The body's schema version has a major version this code does not understand.
    case unsupportedSchemaVersion(found: SchemaVersion, supported: SchemaVersion)
    /// The `ce_type` header names a different event type than the one the consumer expects on this topic.
    case unexpectedEventType(found: String, expected: String)
    /// A record key is not a valid `appId:accountId`.
    case invalidKey(reason: String)
    /// A required CloudEvents header is absent.
    case missingHeader(name: String)
    /// A header is present but unusable (e.g. `ce_time` not RFC 3339, unsupported `ce_specversion`).
    case invalidHeader(name: String, reason: String)
    /// An event could not be encoded (it cannot happen for the types in this module, but `Encodable` can throw).
    case encodingFailed(reason: String)

    /// A one-line, PII-free explanation, suitable for logs and the DLQ `lethe_error` header.
    package var description: String {
        switch self {
        case .malformedJSON(let reason):
            "malformed JSON: \(reason)"
        case .missingSchemaVersion:
            "missing schemaVersion"
        case .unsupportedSchemaVersion(let found, let supported):
            "unsupported schemaVersion \(found) (supported major version \(supported.major), up to \(supported))"
        case .unexpectedEventType(let found, let expected):
            "unexpected event type \(found), expected \(expected)"
        case .invalidKey(let reason):
            "invalid key: \(reason)"
        case .missingHeader(let name):
            "missing header \(name)"
        case .invalidHeader(let name, let reason):
            "invalid header \(name): \(reason)"
        case .encodingFailed(let reason):
            "encoding failed: \(reason)"
        }
    }
}
