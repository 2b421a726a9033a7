import Crypto
import Foundation
import ServiceKit

/// The operator's sign-in, kept in a cookie the console signs: `<expiry>.<nonce>.<mac>`. Nothing is stored server
/// side, so any replica accepts a session another one issued, and changing `LETHE_ADMIN_TOKEN` (which the key is
/// derived from) ends every session at once.
///
/// Forms that change something carry ``csrfToken(for:)``, bound to the session: a page of another site cannot post
/// one, even to a browser that would send the cookie (it is `SameSite=Strict` as well).
struct ConsoleSession: Sendable {
    static let cookieName = "lethe_console"
    private let key: SymmetricKey
    let lifetime: TimeInterval

    init(adminToken: String, lifetime: TimeInterval) {
        key = SymmetricKey(
            data: HMAC<SHA256>.authenticationCode(
                for: Data("lethe operator console session v1".utf8), using: SymmetricKey(data: Data(adminToken.utf8))))
        self.lifetime = lifetime
    }

    /// A new session's cookie value.
    func issue(now: Date = Date()) -> String {
        var nonce = [UInt8](repeating: 0, count: 16)
        for index in nonce.indices { nonce[index] = UInt8.random(in: .min ... .max) }
        let body = "\(Int(now.timeIntervalSince1970 + lifetime)).\(Self.base64URL(Data(nonce)))"
        return body + "." + mac(body)
    }

    /// Whether `value` is a session this console issued that has not expired.
    func isValid(_ value: String?, now: Date = Date()) -> Bool {
        guard let value else { return false }
        let parts = value.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let expiry = TimeInterval(parts[0]), expiry > now.timeIntervalSince1970 else {
            return false
        }
        return BearerSecret.equalDigests(Array(mac("\(parts[0]).\(parts[1])").utf8), Array(parts[2].utf8))
    }

    /// The token the session's forms carry.
    func csrfToken(for session: String) -> String { mac("csrf." + session) }

    /// Whether `token` is the session's form token.
    func isValidCSRF(_ token: String?, session: String) -> Bool {
        guard let token else { return false }
        return BearerSecret.equalDigests(Array(csrfToken(for: session).utf8), Array(token.utf8))
    }

    /// The signature of a message the console shows after a redirect (it travels in the URL: only the console's own
    /// messages are shown, never text a link made up).
    func flashSignature(_ message: String) -> String { mac("flash." + message) }

    func isValidFlash(_ message: String, signature: String?) -> Bool {
        guard let signature else { return false }
        return BearerSecret.equalDigests(Array(flashSignature(message).utf8), Array(signature.utf8))
    }

    private func mac(_ text: String) -> String {
        Self.base64URL(Data(HMAC<SHA256>.authenticationCode(for: Data(text.utf8), using: key)))
    }

    private static func base64URL(_ data: Data) -> String {
        data.base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }
}
