import Foundation

/// Where the client sends requests and how long it waits.
///
/// The base URLs are configuration, not constants, because every environment except production points them at the
/// `atlassian-sandbox` (ARCHITECTURE.md: `ATLASSIAN_AUTH_URL`, `ATLASSIAN_API_URL`). Services read those variables in
/// their own `…Config` and pass the values here; this module never reads the environment.
package struct AtlassianClientConfig: Sendable, Equatable {
    /// Host of `/authorize` and `/oauth/token` (ATLASSIAN.md §1.2, §1.4).
    package var authURL: URL
    /// Host of `/me`, `/oauth/token/accessible-resources` and `/app/report-accounts/` (§1.6, §2, §3.1).
    package var apiURL: URL
    /// Upper bound for one request, connect to last body byte. Every request has one, so a hung Atlassian (or an
    /// injected sandbox latency) surfaces as `AtlassianError.transport` instead of stalling a reporter cycle.
    package var requestTimeout: Duration
    /// Largest response body accepted; anything bigger is treated as a bad response rather than buffered.
    package var maxResponseBytes: Int

    package static let defaultAuthURL = URL(string: "https://auth.atlassian.com")!
    package static let defaultAPIURL = URL(string: "https://api.atlassian.com")!

    package init(
        authURL: URL = AtlassianClientConfig.defaultAuthURL,
        apiURL: URL = AtlassianClientConfig.defaultAPIURL,
        requestTimeout: Duration = .seconds(15),
        maxResponseBytes: Int = 1 << 20
    ) {
        self.authURL = authURL
        self.apiURL = apiURL
        self.requestTimeout = requestTimeout
        self.maxResponseBytes = maxResponseBytes
    }
}

/// An OAuth app's credentials as registered in the developer console (§1.1).
///
/// Its description never shows the secret, so a credentials value that ends up in a log line or an error message
/// leaks nothing.
package struct AtlassianAppCredentials: Sendable, Equatable, CustomStringConvertible {
    package var clientId: String
    package var clientSecret: String
    /// The console's Callback URL; the token exchange must repeat it exactly (§1.1, §1.4).
    package var redirectURI: String

    package init(clientId: String, clientSecret: String, redirectURI: String) {
        self.clientId = clientId
        self.clientSecret = clientSecret
        self.redirectURI = redirectURI
    }

    package var description: String { "AtlassianAppCredentials(clientId: \(clientId), clientSecret: <redacted>)" }
}
