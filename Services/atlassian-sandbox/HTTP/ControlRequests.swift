/// Bodies of the control API (`/_sandbox/…`, documented in docs/sandbox.md).

/// `POST /_sandbox/users`.
struct CreateUserRequest: Decodable, Sendable {
    struct Resource: Decodable, Sendable {
        var id: String?
        var url: String
        var name: String?
        var scopes: [String]?
        var avatarUrl: String?
    }

    /// Generated from the seed when absent.
    var accountId: String?
    var name: String
    var email: String
    var nickname: String
    var picture: String
    var accountType: String?
    var emailVerified: Bool?
    var zoneinfo: String?
    var locale: String?
    var extendedProfile: [String: String]?
    /// Sites `/oauth/token/accessible-resources` lists for this user's grants (default none).
    var resources: [Resource]?
}

/// `POST /_sandbox/users/{accountId}/update`: the fields to change.
struct UpdateUserRequest: Decodable, Sendable {
    var name: String?
    var email: String?
    var nickname: String?
    var picture: String?
    var zoneinfo: String?
    var locale: String?
    var extendedProfile: [String: String]?
}

/// `POST /_sandbox/settings`: the switches to change.
struct SettingsPatch: Decodable, Sendable {
    var cyclePeriodSeconds: Int?
    var cyclePeriodFormat: SandboxSettings.CyclePeriodFormat?
    var cyclePeriodRaw: String?
    var rateLimitRequests: Int?
    var rateLimitWindowSeconds: Int?
    var retryAfterFormat: SandboxSettings.RetryAfterFormat?
    var deletionGraceSeconds: Int?
}

/// `POST /_sandbox/consent`.
struct ConsentRequest: Decodable, Sendable {
    enum Decision: String, Decodable, Sendable { case allow, deny }

    var accountId: String?
    var decision: Decision?
}

/// `POST /_sandbox/grants/revoke`.
struct RevokeRequest: Decodable, Sendable {
    var clientId: String
    var accountId: String
}

/// `POST /_sandbox/clock`.
struct ClockRequest: Decodable, Sendable {
    var advanceSeconds: Double
}
