import Foundation

/// A value published on one of Lethe's topics.
///
/// The JSON body is the type's `Codable` form plus a `schemaVersion` field. Always go through ``EventCodec``: it
/// writes that field, checks it when decoding, and fixes the date format (RFC 3339 UTC with milliseconds). Plain
/// `JSONEncoder`/`JSONDecoder` would silently produce bodies other services cannot read.
package protocol LetheEvent: Codable, Sendable, Equatable {
    /// The CloudEvents `type` (`ce_type` header), e.g. `lethe.ProfileFetched`. Stable across schema versions.
    static var eventType: String { get }
    /// The schema version this code writes, and whose major version it accepts.
    static var schemaVersion: SchemaVersion { get }
}
