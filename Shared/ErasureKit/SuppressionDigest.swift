import Crypto
import Foundation

/// What a participant's suppression list stores instead of a closed account's accountId.
///
/// A suppression list only ever answers "was this account closed and erased?", which needs equality and nothing
/// else, so the list keeps a digest: once the erasure is done, the service's files no longer hold the accountId at
/// all (a delete leaves nothing else behind). Whoever already knows an accountId can still test it against the list
/// — that is the list's purpose — but nobody can read the list back into accountIds.
///
/// The digest is `"sha256:" + lowercase hex(SHA-256(UTF-8("lethe.suppression.v1:" + accountId)))`, the same in
/// every language (docs/contracts.md), so a participant written elsewhere keeps a list in the same form. The prefix
/// separates it from any other hash of an accountId, and names the scheme should it ever change.
package enum SuppressionDigest {
    private static let hexDigits = Array("0123456789abcdef".utf8)

    package static func of(accountId: String) -> String {
        let hash = SHA256.hash(data: Data(("lethe.suppression.v1:" + accountId).utf8))
        // Computed for every ingested profile (the suppression check), so written without per-byte strings.
        var text = Array("sha256:".utf8)
        text.reserveCapacity(7 + 64)
        for byte in hash {
            text.append(hexDigits[Int(byte >> 4)])
            text.append(hexDigits[Int(byte & 0x0f)])
        }
        return String(decoding: text, as: UTF8.self)
    }
}
