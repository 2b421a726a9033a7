import Foundation

/// A registered OAuth app (ATLASSIAN.md §1.1): one Callback URL, compared exactly.
struct SandboxApp: Codable, Sendable, Equatable {
    var clientId: String
    var clientSecret: String
    var callbackUrl: String
}

/// A site a user's grant reaches, served by `/oauth/token/accessible-resources` (§1.6).
struct SandboxResource: Codable, Sendable, Equatable {
    var id: String
    var url: String
    var name: String
    var scopes: [String]
    var avatarUrl: String
}

/// An Atlassian account. `lastUpdated` moves on every profile change and is what PDR compares `updatedAt` with.
///
/// Its lifecycle (ATLASSIAN.md "Read first", §2): active; once deleted, `deleting` until `closesAt` (the grace
/// period: it cannot sign in and its grants are gone, but PDR does not say `closed` yet); then `closed`. `closed` set
/// directly is the control API's immediate close, which skips the grace period.
struct SandboxUser: Sendable, Equatable {
    var accountId: String
    var accountType = "atlassian"
    var name: String
    var email: String
    var emailVerified = true
    var nickname: String
    var picture: String
    var zoneinfo: String?
    var locale: String?
    var extendedProfile: [String: String]?
    /// Closed at once by `POST /_sandbox/users/{id}/close` (no grace period).
    var closed = false
    /// When `POST /_sandbox/users/{id}/delete` deleted the account, and when its grace period ends. `closesAt` is
    /// fixed at deletion, so changing the grace setting later does not move an account already being deleted.
    var deletedAt: Date?
    var closesAt: Date?
    var lastUpdated: Date
    var resources: [SandboxResource] = []

    /// Where the account is in its lifecycle at `now` (the sandbox clock). Nothing fires at the end of the grace
    /// period: the state is read from the clock, so `/_sandbox/clock` moving past `closesAt` is what closes it.
    func lifecycle(at now: Date) -> AccountLifecycle {
        if closed { return .closed }
        if let closesAt { return now >= closesAt ? .closed : .deleting(closesAt: closesAt) }
        return .active
    }
}

/// An account's state as the control API reports it (`status`).
enum AccountLifecycle: Sendable, Equatable {
    case active
    /// Deleted, inside the grace period: cannot sign in, grants gone, PDR answers nothing or `updated`.
    case deleting(closesAt: Date)
    /// PDR answers `closed`.
    case closed

    var name: String {
        switch self {
        case .active: "active"
        case .deleting: "deleting"
        case .closed: "closed"
        }
    }
}

/// One consent: what a code exchange creates and what every token derived from it belongs to. Revoking it kills all
/// of them at once (§1.5 reuse rule, and the control API).
struct Grant: Sendable {
    var clientId: String
    var accountId: String
    var scope: String
    /// When the grant's first refresh token was issued: the 365-day absolute expiry counts from here (§1.5).
    var createdAt: Date
    var revoked = false

    /// Whether the user consented to `scope` (the space-separated `scope` of the authorization request).
    func allows(_ scope: String) -> Bool { self.scope.split(separator: " ").contains { $0 == scope } }
}

struct AuthorizationCode: Sendable {
    var clientId: String
    var redirectUri: String
    var accountId: String
    var scope: String
    var issuedAt: Date
    var used = false
}

struct AccessTokenRecord: Sendable {
    var grantId: Int
    var expiresAt: Date
}

struct RefreshTokenRecord: Sendable {
    var grantId: Int
    var issuedAt: Date
    /// Set on first use; a second use inside the leeway is allowed, after it the grant is revoked (§1.5).
    var usedAt: Date?
}

/// One `POST /oauth/token` as the sandbox saw it (never the code, a token or the secret).
struct TokenCall: Codable, Sendable, Equatable {
    var sequence: Int
    var clientId: String?
    /// `authorization_code`, `refresh_token`, or whatever was sent.
    var grantType: String?
    var status: Int
    /// Sandbox clock time, RFC 3339.
    var time: String
}

/// One `POST /app/report-accounts/` as the sandbox saw it: how tests prove what a reporter sent and when.
struct PDRCall: Codable, Sendable, Equatable {
    struct Account: Codable, Sendable, Equatable {
        var accountId: String
        var updatedAt: String
    }

    var sequence: Int
    /// The app whose token was presented; nil when the token was missing or unknown.
    var clientId: String?
    var accounts: [Account]
    /// HTTP status answered; 0 when the connection was dropped by an injected fault.
    var status: Int
    /// Sandbox clock time, RFC 3339.
    var time: String
    /// The injected fault that decided the answer, if any.
    var fault: String?
}

/// The endpoints faults can target.
enum SandboxEndpoint: String, Codable, Sendable, CaseIterable {
    case reportAccounts = "report-accounts"
    case token
    case me
    case accessibleResources = "accessible-resources"
    case any
}

/// One injected fault.
struct FaultSpec: Codable, Sendable, Equatable {
    enum Kind: String, Codable, Sendable {
        case tooManyRequests = "429"
        case internalError = "500"
        case unavailable = "503"
        /// Delay, then answer normally.
        case latency
        /// Close the connection without answering.
        case drop
    }

    var kind: Kind
    /// For 429: seconds to ask for (default 30).
    var retryAfter: Int?
    /// For 429: `seconds` or `http-date` (default `seconds`).
    var retryAfterFormat: SandboxSettings.RetryAfterFormat?
    /// For latency: milliseconds (default 1000).
    var latencyMs: Int?
}

/// Faults for one endpoint (and optionally one app): a script consumed in order, then random faults by probability.
struct FaultRule: Codable, Sendable, Equatable {
    struct RandomFault: Codable, Sendable, Equatable {
        var probability: Double
        var fault: FaultSpec
    }

    var endpoint: SandboxEndpoint?
    var clientId: String?
    var script: [FaultSpec]?
    var random: [RandomFault]?
}

/// What the sandbox decided to answer; the HTTP layer turns it into a `Response`.
struct SandboxAnswer: Sendable {
    var status: Int
    var json: Data?
    var headers: [(String, String)] = []

    static func json(_ status: Int, _ object: Any, headers: [(String, String)] = []) -> SandboxAnswer {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8)
        return SandboxAnswer(status: status, json: data, headers: headers)
    }

    static func encoded(_ status: Int, _ value: some Encodable, headers: [(String, String)] = []) -> SandboxAnswer {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return SandboxAnswer(status: status, json: (try? encoder.encode(value)) ?? Data("{}".utf8), headers: headers)
    }

    /// An OAuth error (§1.5 shape).
    static func oauth(_ status: Int, _ error: String, _ description: String) -> SandboxAnswer {
        .json(status, ["error": error, "error_description": description])
    }

    /// A PDR error (§3.4 shape).
    static func pdr(_ status: Int, _ errorType: String, _ message: String) -> SandboxAnswer {
        .json(status, ["errorType": errorType, "errorMessage": message])
    }

    /// A control-API or authorize 400 with the reason.
    static func badRequest(_ reason: String) -> SandboxAnswer { .json(400, ["error": "bad_request", "reason": reason]) }

    static func notFound(_ reason: String) -> SandboxAnswer { .json(404, ["error": "not_found", "reason": reason]) }
}
