import Foundation

/// The record key of the account-scoped topics: `appId:accountId`.
///
/// The key puts every event about one Atlassian account *as seen through one OAuth app* on the same partition, which
/// is what lets `lethe.pdr.accounts.v1` and `lethe.pdr.reports.v1` be co-partitioned. Atlassian accountIds may contain
/// ':' themselves (e.g. `557058:f0e1…`), so the key is split at the *first* ':' and the appId may not contain one.
package struct AccountKey: Hashable, Sendable, CustomStringConvertible {
    /// The OAuth app (client id) the account was seen through. Never empty, never contains ':'.
    package let appId: String
    /// The Atlassian accountId. Never empty; may contain ':'.
    package let accountId: String

    /// Composes a key, rejecting an appId that would make the key ambiguous.
    ///
    /// - Throws: ``ContractError/invalidKey(reason:)`` when appId is empty or contains ':', or accountId is empty.
    package init(appId: String, accountId: String) throws(ContractError) {
        guard !appId.isEmpty else { throw .invalidKey(reason: "appId is empty") }
        guard !appId.contains(":") else { throw .invalidKey(reason: "appId contains ':'") }
        guard !accountId.isEmpty else { throw .invalidKey(reason: "accountId is empty") }
        self.appId = appId
        self.accountId = accountId
    }

    /// Whether `id` has the form of an Atlassian accountId: 1 to 128 letters, digits, `-` and `:` (ATLASSIAN.md §2),
    /// and not the literal `unknown`, which must never be reported (§3.2). HTTP APIs refuse other ids with a 400.
    package static func isValidAccountId(_ id: String) -> Bool {
        (1...128).contains(id.count) && id != "unknown" && id.unicodeScalars.allSatisfy {
            ($0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0))) || $0 == "-" || $0 == ":"
        }
    }

    /// Parses `appId:accountId`, splitting at the first ':' so that an accountId with ':' survives intact.
    ///
    /// - Throws: ``ContractError/invalidKey(reason:)`` when there is no ':' or either side is empty. The reason never
    ///   repeats the key itself.
    package init(parsing key: String) throws(ContractError) {
        guard let colon = key.firstIndex(of: ":") else {
            throw .invalidKey(reason: "missing ':' between appId and accountId")
        }
        try self.init(appId: String(key[..<colon]), accountId: String(key[key.index(after: colon)...]))
    }

    /// Parses a key from the raw bytes of a Kafka record key (UTF-8).
    ///
    /// - Throws: ``ContractError/invalidKey(reason:)`` for invalid UTF-8 or an invalid key.
    package init(bytes: some Collection<UInt8>) throws(ContractError) {
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw .invalidKey(reason: "key is not valid UTF-8")
        }
        try self.init(parsing: text)
    }

    /// The composed key, `appId:accountId`, as written to Kafka.
    package var rawValue: String { "\(appId):\(accountId)" }

    /// Same as ``rawValue``.
    package var description: String { rawValue }
}
