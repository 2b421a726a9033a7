import Foundation

/// The one error type of this module: every failure a caller must tell apart, and nothing it can't act on.
///
/// The cases follow ATLASSIAN.md: OAuth errors are keyed off the `error` field, never the status code (§1.5: 403 is
/// "observed, not guaranteed"); PDR statuses map one-to-one to §3.4. Descriptions never contain tokens, secrets or
/// profile fields.
package enum AtlassianError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The token endpoint (or authorize callback) answered with an OAuth `error` (§1.4, §1.5).
    case oauth(OAuthErrorCode, description: String?, status: Int)
    /// 401: no, invalid or revoked token (§3.3: for PDR, the grant behind this token is probably gone).
    case unauthorized
    /// 403 without an OAuth `error`: the token is valid but its grant lacks what the call needs — `read:me` for `/me`,
    /// `report:personal-data` for PDR ("Read first"; undocumented for PDR, so any 403 lands here). Another user's
    /// token, from a consent that included the scope, may still work.
    case forbidden
    /// 429: wait `retryAfter` (absent when the header is missing or unparseable; the caller picks its own backoff).
    case rateLimited(retryAfter: Duration?)
    /// 400 with Atlassian's `{errorType, errorMessage}` body (§3.4); both are nil when the body had neither.
    case badRequest(errorType: String?, errorMessage: String?)
    /// 5xx, including 503 (§3.4): retry later with backoff.
    case server(status: Int)
    /// No HTTP answer: connection refused or dropped, timeout. Retry later with backoff.
    case transport(String)
    /// Refused before sending: PDR accepts at most 90 accounts per request (§3.2). A programming error in the caller.
    case tooManyAccounts(count: Int, limit: Int)
    /// An answer this client does not understand (an undocumented status, a body that isn't the documented shape).
    case unexpectedResponse(status: Int, reason: String)

    /// Whether retrying the same request later can succeed; the reporter uses it to pick backoff over giving up.
    package var isRetriable: Bool {
        switch self {
        case .rateLimited, .server, .transport: true
        case .oauth, .unauthorized, .forbidden, .badRequest, .tooManyAccounts, .unexpectedResponse: false
        }
    }

    package var description: String {
        switch self {
        case .oauth(let code, let description, let status):
            "Atlassian OAuth error \(code.rawValue) (HTTP \(status))" + (description.map { ": \($0)" } ?? "")
        case .unauthorized: "Atlassian answered 401 unauthorized"
        case .forbidden: "Atlassian answered 403 forbidden (the grant lacks a scope the call needs)"
        case .rateLimited(let retryAfter):
            "Atlassian rate limited the request" + (retryAfter.map { " (retry after \($0))" } ?? "")
        case .badRequest(let type, let message):
            "Atlassian rejected the request: \(type ?? "unknown error type"): \(message ?? "no message")"
        case .server(let status): "Atlassian server error (HTTP \(status))"
        case .transport(let reason): "could not reach Atlassian: \(reason)"
        case .tooManyAccounts(let count, let limit): "refused to report \(count) accounts in one request (limit \(limit))"
        case .unexpectedResponse(let status, let reason): "unexpected Atlassian response (HTTP \(status)): \(reason)"
        }
    }
}

/// The OAuth `error` values Lethe acts on (§1.2, §1.5); anything else is kept verbatim in `other`.
package enum OAuthErrorCode: Sendable, Hashable {
    /// Code or refresh token unknown, used, expired or revoked: the grant is gone, the user must consent again.
    case invalidGrant
    /// The user declined consent, or (per jira.js) the client secret is wrong.
    case accessDenied
    /// The client is unknown or not allowed this grant.
    case unauthorizedClient
    case other(String)

    package init(rawValue: String) {
        switch rawValue {
        case "invalid_grant": self = .invalidGrant
        case "access_denied": self = .accessDenied
        case "unauthorized_client": self = .unauthorizedClient
        default: self = .other(rawValue)
        }
    }

    package var rawValue: String {
        switch self {
        case .invalidGrant: "invalid_grant"
        case .accessDenied: "access_denied"
        case .unauthorizedClient: "unauthorized_client"
        case .other(let value): value
        }
    }
}
