import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1

/// A bearer token an app may report with (ATLASSIAN.md §3.3: any valid token of the app works) and the
/// connection it belongs to, so a 401 can exclude exactly that connection on the next ask.
package struct ReportingToken: Sendable, Equatable, CustomStringConvertible {
    package var accessToken: String
    package var connectionId: String
    package var expiresAt: Date

    package init(accessToken: String, connectionId: String, expiresAt: Date) {
        self.accessToken = accessToken
        self.connectionId = connectionId
        self.expiresAt = expiresAt
    }

    /// Never shows the token, so a token that ends up in a log line leaks nothing.
    package var description: String { "ReportingToken(connectionId: \(connectionId), accessToken: <redacted>)" }
}

/// Why no token could be had.
package enum ReportingTokenError: Error, Sendable, Equatable {
    /// The gateway has no connection with a usable grant for the app (409): the app is orphaned; its accounts stay
    /// due until a user signs in again.
    case noUsableGrant
    /// The gateway could not be asked or answered something else; retry with backoff.
    case unavailable(String)
}

/// Where the reporter gets tokens: the gateway in production, a sandbox-backed double in tests.
package protocol ReportingTokenProvider: Sendable {
    /// A token for `appId` from a connection not in `excluding` (those answered 401 during this batch).
    /// - Throws: `ReportingTokenError`.
    func token(appId: String, excluding: Set<String>) async throws -> ReportingToken
}

/// The gateway's internal reporting-token API, with a per-app cache.
///
/// Contract (owned by oauth-gateway, issue-level, not public):
/// ```
/// POST {LETHE_GATEWAY_INTERNAL_URL}/internal/v1/apps/{appId}/reporting-token
/// Authorization: Bearer {LETHE_INTERNAL_TOKEN}
/// Content-Type: application/json
/// {"exclude": ["<connectionId>", …]}              connections that just answered 401; may be empty
///
/// 200 {"accessToken": "…", "connectionId": "…", "expiresAt": "<RFC 3339>"}
/// 409 no connection of the app has a usable grant  → ReportingTokenError.noUsableGrant
/// anything else                                    → ReportingTokenError.unavailable
/// ```
/// The gateway refreshes the connection if needed; the reporter never sees refresh tokens. A token is reused until
/// `refreshMargin` before `expiresAt`, and dropped as soon as its connection is excluded.
package actor HTTPReportingTokenProvider: ReportingTokenProvider {
    private let baseURL: String
    private let internalToken: String
    private let httpClient: HTTPClient
    private let refreshMargin: TimeInterval
    private let now: @Sendable () -> Date
    private var cache: [String: ReportingToken] = [:]

    package init(gatewayURL: URL, internalToken: String, httpClient: HTTPClient,
                 refreshMargin: Duration = .seconds(120), now: @escaping @Sendable () -> Date = { Date() }) {
        var base = gatewayURL.absoluteString
        while base.hasSuffix("/") { base.removeLast() }
        self.baseURL = base
        self.internalToken = internalToken
        self.httpClient = httpClient
        self.refreshMargin = refreshMargin.timeInterval
        self.now = now
    }

    package func token(appId: String, excluding: Set<String>) async throws -> ReportingToken {
        if let cached = cache[appId], !excluding.contains(cached.connectionId),
           cached.expiresAt.timeIntervalSince(now()) > refreshMargin {
            return cached
        }
        cache[appId] = nil
        let fresh = try await fetch(appId: appId, excluding: excluding)
        cache[appId] = fresh
        return fresh
    }

    private struct RequestBody: Encodable { var exclude: [String] }
    private struct ResponseBody: Decodable {
        var accessToken: String
        var connectionId: String
        var expiresAt: String
    }

    private func fetch(appId: String, excluding: Set<String>) async throws -> ReportingToken {
        let path = appId.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(["/"])) ?? appId
        var request = HTTPClientRequest(url: "\(baseURL)/internal/v1/apps/\(path)/reporting-token")
        request.method = .POST
        request.headers.add(name: "Authorization", value: "Bearer \(internalToken)")
        request.headers.add(name: "Content-Type", value: "application/json")
        let body = (try? JSONEncoder().encode(RequestBody(exclude: excluding.sorted()))) ?? Data("{}".utf8)
        request.body = .bytes(ByteBuffer(bytes: body))
        let status: UInt
        let bytes: ByteBuffer
        do {
            let response = try await httpClient.execute(request, timeout: .seconds(10))
            status = response.status.code
            bytes = try await response.body.collect(upTo: 64 * 1024)
        } catch {
            throw ReportingTokenError.unavailable("gateway unreachable: \(type(of: error))")
        }
        switch status {
        case 200:
            guard let decoded = try? JSONDecoder().decode(ResponseBody.self, from: Data(bytes.readableBytesView)),
                  let expiresAt = Self.parseDate(decoded.expiresAt)
            else { throw ReportingTokenError.unavailable("gateway answered an unreadable token") }
            return ReportingToken(accessToken: decoded.accessToken, connectionId: decoded.connectionId,
                                  expiresAt: expiresAt)
        case 409:
            throw ReportingTokenError.noUsableGrant
        default:
            throw ReportingTokenError.unavailable("gateway answered HTTP \(status)")
        }
    }

    private static func parseDate(_ text: String) -> Date? {
        let withFraction = ISO8601DateFormatter()
        withFraction.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        if let date = withFraction.date(from: text) { return date }
        return ISO8601DateFormatter().date(from: text)
    }
}
