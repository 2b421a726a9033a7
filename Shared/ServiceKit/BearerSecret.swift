import Crypto
import Foundation
import Hummingbird

/// A configured bearer secret (`LETHE_ADMIN_TOKEN`, `LETHE_INTERNAL_TOKEN`) and the check of a request against it.
///
/// Both sides are hashed before the comparison and the digests are compared without an early exit, so neither the
/// time taken nor the length reveals how much of a guess was right. The secret itself is never kept in clear.
package struct BearerSecret: Sendable {
    private let digest: [UInt8]
    private let realm: String

    /// - Parameter realm: names the credential in the 401 message (`admin token required`).
    package init(_ secret: String, realm: String) {
        digest = Array(SHA256.hash(data: Data(secret.utf8)))
        self.realm = realm
    }

    /// Whether `presented` is the secret.
    package func matches(_ presented: some StringProtocol) -> Bool {
        Self.equalDigests(digest, Array(SHA256.hash(data: Data(presented.utf8))))
    }

    /// Compares two digests without an early exit (the time taken does not show where they differ).
    package static func equalDigests(_ lhs: some Collection<UInt8>, _ rhs: some Collection<UInt8>) -> Bool {
        guard lhs.count == rhs.count else { return false }
        var difference: UInt8 = 0
        for (a, b) in zip(lhs, rhs) { difference |= a ^ b }
        return difference == 0
    }

    /// Whether the request's `Authorization: Bearer …` carries the secret.
    package func matches(_ request: Request) -> Bool {
        guard let token = Self.bearerToken(in: request) else { return false }
        return matches(token)
    }

    /// 401 with a `WWW-Authenticate` challenge unless the request carries the secret.
    package func require(_ request: Request) throws {
        guard matches(request) else {
            throw HTTPError(.unauthorized, headers: [.wwwAuthenticate: "Bearer"], message: "\(realm) required")
        }
    }

    /// The token of an `Authorization: Bearer <token>` header, or nil.
    package static func bearerToken(in request: Request) -> Substring? {
        guard let value = request.headers[.authorization] else { return nil }
        let parts = value.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else { return nil }
        return parts[1]
    }
}
