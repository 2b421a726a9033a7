import Contracts
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
    package static func of(accountId: String) -> String {
        "sha256:" + SHA256.hash(data: Data(("lethe.suppression.v1:" + accountId).utf8)).hex
    }
}
