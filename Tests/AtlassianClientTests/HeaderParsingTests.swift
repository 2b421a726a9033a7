import AtlassianClient
import Foundation
import Testing

/// The header parsers on their own: every form ATLASSIAN.md lists (§3.4 Retry-After, §3.5 Cycle-Period).
@Suite("Header parsing")
struct HeaderParsingTests {
    @Test("Cycle-Period forms", arguments: [
        ("604800", Duration?.some(.seconds(604_800))),
        (" 86400 ", .some(.seconds(86_400))),
        ("P7D", .some(.seconds(604_800))),
        ("PT604800S", .some(.seconds(604_800))),
        ("P1DT2H", .some(.seconds(93_600))),
        ("P1W", .some(.seconds(604_800))),
        ("PT1H30M", .some(.seconds(5_400))),
        ("PT0.5S", .some(.milliseconds(500))),
        ("p7d", .some(.seconds(604_800))),
        ("0", nil), ("-5", nil), ("", nil), ("P", nil), ("PT", nil), ("P1DT", nil), ("P1M", nil), ("P1Y", nil),
        ("7 days", nil), ("P7", nil), ("PT2H1D", nil), ("P1D1D", nil), ("garbage", nil),
    ] as [(String, Duration?)])
    func cyclePeriod(raw: String, expected: Duration?) {
        #expect(CyclePeriod.parse(raw) == expected)
    }

    @Test("Retry-After as seconds, as an HTTP date (three RFC 9110 forms), in the past, or garbage")
    func retryAfter() {
        let now = Date(timeIntervalSince1970: 784_111_747) // Sun, 06 Nov 1994 08:49:07 GMT
        #expect(RetryAfter.parse("120", now: now) == .seconds(120))
        #expect(RetryAfter.parse("Sun, 06 Nov 1994 08:49:37 GMT", now: now) == .seconds(30))
        #expect(RetryAfter.parse("Sunday, 06-Nov-94 08:49:37 GMT", now: now) == .seconds(30))
        #expect(RetryAfter.parse("Sun Nov  6 08:49:37 1994", now: now) == .seconds(30))
        #expect(RetryAfter.parse("Sun, 06 Nov 1994 08:00:00 GMT", now: now) == .zero)
        #expect(RetryAfter.parse("soon", now: now) == nil)
        #expect(RetryAfter.parse("-1", now: now) == nil)
    }

    @Test("credentials and tokens never show secrets in their descriptions")
    func redaction() {
        let credentials = AtlassianAppCredentials(clientId: "id", clientSecret: "hunter2-secret", redirectURI: "https://x")
        #expect(!credentials.description.contains("hunter2"))
        let token = TokenResponse(accessToken: "at-123", expiresIn: 3600, tokenType: "Bearer", scope: "read:me",
                                  refreshToken: "rt-456")
        #expect(!token.description.contains("at-123") && !token.description.contains("rt-456"))
        #expect(!AtlassianError.oauth(.invalidGrant, description: nil, status: 403).description.contains("rt-"))
    }
}
