import Contracts
import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import Synchronization

/// Everything Lethe asks of Atlassian, as a protocol so services can test against a fake and production against
/// `AtlassianClient` (the test seam STYLE.md asks for). Every method throws `AtlassianError` only.
package protocol AtlassianAPI: Sendable {
    /// The URL to send the browser to for consent (§1.2).
    func authorizeURL(clientId: String, redirectURI: String, scopes: [String], state: String) -> URL
    /// Exchanges an authorization code for tokens (§1.4).
    func exchangeCode(_ code: String, credentials: AtlassianAppCredentials) async throws -> TokenResponse
    /// Trades a refresh token for new tokens; the answer carries the rotated refresh token to store (§1.5).
    func refresh(refreshToken: String, credentials: AtlassianAppCredentials) async throws -> TokenResponse
    /// The signed-in user's profile (§2).
    func me(accessToken: String) async throws -> AtlassianProfile
    /// The sites the grant reaches (§1.6); may be empty.
    func accessibleResources(accessToken: String) async throws -> [AccessibleResource]
    /// One PDR call for at most 90 accounts (§3).
    func reportAccounts(_ accounts: [ReportedAccount], accessToken: String) async throws -> PDRResult
}

/// The Atlassian client over one injected `HTTPClient` (the service owns its lifecycle and shuts it down).
///
/// It never logs a token, a secret or a profile field: requests are logged by path and status only.
package struct AtlassianClient: AtlassianAPI {
    /// PDR's documented per-request limit (§3.2; `@forge/api` uses the same `LIMIT = 90`).
    package static let maxAccountsPerReport = 90
    /// `audience` is sent although the newer docs omit it: every client seen sends it and Atlassian accepts it (§1.2).
    package static let audience = "api.atlassian.com"

    private let config: AtlassianClientConfig
    private let httpClient: HTTPClient
    private let logger: Logger
    private let cyclePeriodWarnings = OnceLog()

    package init(config: AtlassianClientConfig = .init(), httpClient: HTTPClient, logger: Logger) {
        self.config = config
        self.httpClient = httpClient
        self.logger = logger
    }

    // MARK: OAuth

    package func authorizeURL(clientId: String, redirectURI: String, scopes: [String], state: String) -> URL {
        let parameters: [(String, String?)] = [
            ("audience", Self.audience),
            ("client_id", clientId),
            ("scope", scopes.joined(separator: " ")),
            ("redirect_uri", redirectURI),
            ("state", state),
            ("response_type", "code"),
            ("prompt", "consent"),
        ]
        // Encoded by hand: URLComponents leaves `+` and `&`-adjacent characters that servers decode differently;
        // only RFC 3986 unreserved characters stay literal, so a space is `%20` as §1.2 shows.
        let query = FormFields.queryString(parameters)
        return URL(string: endpoint(config.authURL, "/authorize").absoluteString + "?" + query)!
    }

    /// Reads the authorize callback's query (§1.2): the code and the echoed state, or the OAuth error Atlassian
    /// redirected with instead (`access_denied` when the user declined; the exact denial query is unverified, so any
    /// `error` value is accepted). The caller must still check `state` against what it stored.
    package static func parseCallback(query: [String: String]) throws -> (code: String, state: String?) {
        if let error = query["error"], !error.isEmpty {
            throw AtlassianError.oauth(OAuthErrorCode(rawValue: error), description: query["error_description"],
                                       status: 302)
        }
        guard let code = query["code"], !code.isEmpty else {
            throw AtlassianError.unexpectedResponse(status: 302, reason: "callback has neither code nor error")
        }
        return (code, query["state"])
    }

    package func exchangeCode(_ code: String, credentials: AtlassianAppCredentials) async throws -> TokenResponse {
        try await token([
            "grant_type": "authorization_code",
            "client_id": credentials.clientId,
            "client_secret": credentials.clientSecret,
            "code": code,
            "redirect_uri": credentials.redirectURI,
        ])
    }

    package func refresh(refreshToken: String, credentials: AtlassianAppCredentials) async throws -> TokenResponse {
        try await token([
            "grant_type": "refresh_token",
            "client_id": credentials.clientId,
            "client_secret": credentials.clientSecret,
            "refresh_token": refreshToken,
        ])
    }

    /// `POST /oauth/token` with a JSON body and the credentials in it (§1.4). An `error` field in the answer decides
    /// the failure whatever the status (§1.5: 403 for `invalid_grant` is observed, not guaranteed).
    private func token(_ body: [String: String]) async throws -> TokenResponse {
        let bodyData = try encode(body)
        let response = try await send(.POST, endpoint(config.authURL, "/oauth/token"), body: bodyData, operation: "token")
        if let oauthError = Self.oauthError(in: response.body) {
            throw AtlassianError.oauth(
                OAuthErrorCode(rawValue: oauthError.error), description: oauthError.errorDescription,
                status: response.status)
        }
        switch response.status {
        case 200..<300:
            guard let token = try? JSONDecoder().decode(TokenResponse.self, from: response.body) else {
                throw AtlassianError.unexpectedResponse(status: response.status, reason: "token response is not the documented JSON")
            }
            return token
        default:
            throw Self.genericError(response)
        }
    }

    // MARK: API

    package func me(accessToken: String) async throws -> AtlassianProfile {
        let response = try await send(.GET, endpoint(config.apiURL, "/me"), bearer: accessToken, operation: "me")
        guard response.status == 200 else { throw Self.genericError(response) }
        guard let profile = try? JSONDecoder().decode(AtlassianProfile.self, from: response.body) else {
            throw AtlassianError.unexpectedResponse(status: 200, reason: "/me body has no account_id")
        }
        return profile
    }

    package func accessibleResources(accessToken: String) async throws -> [AccessibleResource] {
        let response = try await send(
            .GET, endpoint(config.apiURL, "/oauth/token/accessible-resources"), bearer: accessToken,
            operation: "accessible-resources")
        guard response.status == 200 else { throw Self.genericError(response) }
        guard let resources = try? JSONDecoder().decode([AccessibleResource].self, from: response.body) else {
            throw AtlassianError.unexpectedResponse(status: 200, reason: "accessible resources is not a JSON array")
        }
        return resources
    }

    /// Sends one PDR request (§3.2–3.4).
    ///
    /// More than 90 accounts throws `tooManyAccounts` before anything is sent; an empty list sends nothing and
    /// answers `nothingToDo`. A 200 is filtered to the accounts this call sent, so a misbehaving server can never
    /// make Lethe erase data it did not ask about.
    package func reportAccounts(_ accounts: [ReportedAccount], accessToken: String) async throws -> PDRResult {
        guard accounts.count <= Self.maxAccountsPerReport else {
            throw AtlassianError.tooManyAccounts(count: accounts.count, limit: Self.maxAccountsPerReport)
        }
        guard !accounts.isEmpty else { return PDRResult(outcome: .nothingToDo, cyclePeriod: nil) }

        let payload = PDRRequestBody(accounts: accounts.map {
            .init(accountId: $0.accountId, updatedAt: RFC3339.string(from: $0.updatedAt))
        })
        let body: Data
        do { body = try JSONEncoder().encode(payload) } catch {
            throw AtlassianError.transport("could not encode the request")
        }
        let response = try await send(
            .POST, endpoint(config.apiURL, "/app/report-accounts/"), bearer: accessToken, body: body,
            operation: "report-accounts")

        switch response.status {
        case 200:
            let cyclePeriod = cyclePeriod(response.headers)
            guard let decoded = try? JSONDecoder().decode(PDRResponseBody.self, from: response.body) else {
                throw AtlassianError.unexpectedResponse(status: 200, reason: "PDR body is not {accounts: [...]}")
            }
            let sent = Set(accounts.map(\.accountId))
            let actions = decoded.accounts.compactMap { entry -> AccountAction? in
                guard sent.contains(entry.accountId) else { return nil }
                return AccountAction(accountId: entry.accountId, status: .init(rawValue: entry.status))
            }
            if actions.count < decoded.accounts.count {
                logger.warning("PDR answered for accounts that were not sent; ignored them", metadata: [
                    "atlassian.ignored_count": "\(decoded.accounts.count - actions.count)",
                ])
            }
            return PDRResult(outcome: actions.isEmpty ? .nothingToDo : .needsAction(actions), cyclePeriod: cyclePeriod)
        case 204:
            return PDRResult(outcome: .nothingToDo, cyclePeriod: cyclePeriod(response.headers))
        default:
            throw Self.genericError(response)
        }
    }

    /// Parses `Cycle-Period`; an unparseable value is logged once per distinct value, not on every call.
    private func cyclePeriod(_ headers: HTTPHeaders) -> Duration? {
        guard let raw = headers.first(name: "Cycle-Period") else { return nil }
        if let period = CyclePeriod.parse(raw) { return period }
        if cyclePeriodWarnings.firstTime(raw) {
            logger.warning("unparseable Cycle-Period header ignored; keeping the default cycle", metadata: [
                "atlassian.cycle_period": "\(raw.prefix(64))",
            ])
        }
        return nil
    }

    // MARK: Plumbing

    /// A response with its body read, so the callers' mapping is plain synchronous code.
    private struct ReadResponse {
        var status: Int
        var headers: HTTPHeaders
        var body: Data
    }

    private func send(
        _ method: HTTPMethod, _ url: URL, bearer: String? = nil, body: Data? = nil, operation: String
    ) async throws -> ReadResponse {
        var request = HTTPClientRequest(url: url.absoluteString)
        request.method = method
        request.headers.add(name: "Accept", value: "application/json")
        if let bearer { request.headers.add(name: "Authorization", value: "Bearer \(bearer)") }
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: body))
        }
        let deadline = NIODeadline.now() + .nanoseconds(Self.nanoseconds(config.requestTimeout))
        do {
            let response = try await httpClient.execute(request, deadline: deadline, logger: nil)
            let buffer = try await response.body.collect(upTo: config.maxResponseBytes)
            logger.debug("Atlassian request done", metadata: [
                "atlassian.operation": "\(operation)", "http.status": "\(response.status.code)",
            ])
            return ReadResponse(status: Int(response.status.code), headers: response.headers,
                                body: Data(buffer.readableBytesView))
        } catch let error as HTTPClientError {
            logger.info("Atlassian request failed", metadata: [
                "atlassian.operation": "\(operation)", "error": "\(error)",
            ])
            throw AtlassianError.transport(Self.describe(error))
        } catch is CancellationError {
            throw AtlassianError.transport("cancelled")
        } catch let error as AtlassianError {
            throw error
        } catch {
            // NIO channel errors (connection reset, refused) — their descriptions carry no request data.
            logger.info("Atlassian request failed", metadata: [
                "atlassian.operation": "\(operation)", "error": "\(type(of: error))",
            ])
            throw AtlassianError.transport(String(describing: type(of: error)))
        }
    }

    private static func describe(_ error: HTTPClientError) -> String {
        switch error {
        case .deadlineExceeded, .readTimeout, .connectTimeout, .writeTimeout: "timed out"
        case .remoteConnectionClosed: "connection closed by the server"
        default: "\(error)"
        }
    }

    /// Maps a non-success status that has no OAuth `error` field (§3.4).
    private static func genericError(_ response: ReadResponse) -> AtlassianError {
        switch response.status {
        case 400:
            let body = try? JSONDecoder().decode(PDRErrorBody.self, from: response.body)
            return .badRequest(errorType: body?.errorType, errorMessage: body?.errorMessage)
        case 401:
            return .unauthorized
        case 403:
            return .forbidden
        case 429:
            return .rateLimited(retryAfter: response.headers.first(name: "Retry-After").flatMap { RetryAfter.parse($0) })
        case 500...599:
            return .server(status: response.status)
        default:
            return .unexpectedResponse(status: response.status, reason: "undocumented status")
        }
    }

    private static func oauthError(in body: Data) -> OAuthErrorBody? {
        guard let decoded = try? JSONDecoder().decode(OAuthErrorBody.self, from: body), !decoded.error.isEmpty else {
            return nil
        }
        return decoded
    }

    private func encode(_ body: [String: String]) throws -> Data {
        do { return try JSONEncoder().encode(body) } catch {
            throw AtlassianError.transport("could not encode the request")
        }
    }

    private func endpoint(_ base: URL, _ path: String) -> URL {
        var string = base.absoluteString
        while string.hasSuffix("/") { string.removeLast() }
        return URL(string: string + path)!
    }

    private static func nanoseconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}

// MARK: Wire shapes

private struct PDRRequestBody: Encodable {
    struct Account: Encodable {
        var accountId: String
        var updatedAt: String
    }

    var accounts: [Account]
}

private struct PDRResponseBody: Decodable {
    struct Account: Decodable {
        var accountId: String
        var status: String
    }

    var accounts: [Account]
}

private struct PDRErrorBody: Decodable {
    var errorType: String?
    var errorMessage: String?
}

private struct OAuthErrorBody: Decodable {
    var error: String
    var errorDescription: String?

    enum CodingKeys: String, CodingKey { case error, errorDescription = "error_description" }
}

/// Remembers which values were already logged, so a bad header is reported once per value rather than on every
/// call; bounded so a server sending ever-changing garbage cannot grow it without limit.
private final class OnceLog: Sendable {
    private let seen = Mutex<Set<String>>([])

    func firstTime(_ value: String) -> Bool {
        seen.withLock { seen in
            guard !seen.contains(value), seen.count < 32 else { return false }
            seen.insert(value)
            return true
        }
    }
}
