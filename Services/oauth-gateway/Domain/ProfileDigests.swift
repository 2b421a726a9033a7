import AtlassianClient
import Contracts
import Crypto
import Foundation

/// What the gateway keeps of a user's profile to tell which fields an `updated` changed, without keeping the profile:
/// a SHA-256 per field (of the value, or of nothing for an absent one), stored sealed with the connection (so a copy
/// of the database does not even allow guessing a name against its digest) and erased with it.
struct ProfileDigests: Codable, Equatable, Sendable {
    /// The fields of `/me` the gateway publishes, in the order a `profile-changed` event lists them.
    static let fields = ["name", "email", "nickname", "picture"]

    var digests: [String: String]

    init(_ profile: AtlassianProfile) {
        let values = [
            "name": profile.name, "email": profile.email, "nickname": profile.nickname, "picture": profile.picture,
        ]
        digests = values.mapValues { value in
            // A prefix keeps an absent value apart from any present one, the empty string included.
            let text = value.map { "v:" + $0 } ?? "absent"
            return SHA256.hash(data: Data(text.utf8)).hex
        }
    }

    /// The fields whose value differs from `previous`, in ``fields`` order.
    func changed(since previous: ProfileDigests) -> [String] {
        Self.fields.filter { digests[$0] != previous.digests[$0] }
    }

    /// The sealed form stored in `connections.profile_digests`.
    func sealed(with box: SecretBox, connectionId: String) throws -> Data {
        try box.seal(JSONEncoder().encode(self), context: Self.context(connectionId))
    }

    /// The digests stored for the connection, or nil (none stored: signed in before the gateway kept them; or not
    /// readable, which is treated the same: the change is reported without saying which fields).
    static func open(_ sealed: Data?, with box: SecretBox, connectionId: String) -> ProfileDigests? {
        guard let sealed, let json = try? box.open(sealed, context: context(connectionId)) else { return nil }
        return try? JSONDecoder().decode(ProfileDigests.self, from: json)
    }

    static func context(_ connectionId: String) -> String { TokenVault.context(connectionId, "profile_digests") }
}

/// What a refresh found changed in a user's profile: the fields, or nil when there was nothing to compare with.
struct ProfileChange: Equatable, Sendable {
    var fields: [String]?

    /// The change from `previous` to `current`; nil when nothing the gateway publishes changed.
    static func between(_ previous: ProfileDigests?, _ current: ProfileDigests) -> ProfileChange? {
        guard let previous else { return ProfileChange(fields: nil) }
        let fields = current.changed(since: previous)
        return fields.isEmpty ? nil : ProfileChange(fields: fields)
    }
}
