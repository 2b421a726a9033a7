import Foundation

/// The version of an event's JSON schema, `major.minor`, carried in every body as `"schemaVersion": "1.0"`.
///
/// A minor bump only adds optional fields, so a consumer accepts any minor of its major (unknown fields are ignored).
/// A major bump breaks the contract: a consumer rejects it (to the DLQ) instead of guessing.
package struct SchemaVersion: Sendable, Hashable, Comparable, Codable, LosslessStringConvertible {
    /// Incremented for breaking changes; consumers reject a major they do not know.
    package var major: Int
    /// Incremented for compatible additions; consumers accept any minor of their major.
    package var minor: Int

    /// Makes a version; both parts are non-negative.
    package init(major: Int, minor: Int) {
        precondition(major >= 0 && minor >= 0, "schema version parts are non-negative")
        self.major = major
        self.minor = minor
    }

    /// Parses `"<major>.<minor>"` (ASCII digits only, e.g. `"1.0"`); `nil` for anything else.
    package init?(_ description: String) {
        let parts = description.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 2,
            parts.allSatisfy({ !$0.isEmpty && $0.count <= 9 && $0.allSatisfy { $0.isASCII && $0.isNumber } }),
            let major = Int(parts[0]), let minor = Int(parts[1])
        else { return nil }
        self.init(major: major, minor: minor)
    }

    /// `"<major>.<minor>"`, the form written to JSON.
    package var description: String { "\(major).\(minor)" }

    /// Whether a body written with `other` can be decoded by code that knows `self`: same major, any minor.
    package func canDecode(_ other: SchemaVersion) -> Bool {
        other.major == major
    }

    /// Orders by major, then minor.
    package static func < (lhs: SchemaVersion, rhs: SchemaVersion) -> Bool {
        (lhs.major, lhs.minor) < (rhs.major, rhs.minor)
    }

    /// Decodes from the string form, so other languages see `"1.0"`, not an object.
    package init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        guard let version = SchemaVersion(try container.decode(String.self)) else {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "expected \"major.minor\"")
        }
        self = version
    }

    /// Encodes as the string form, `"1.0"`.
    package func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}
