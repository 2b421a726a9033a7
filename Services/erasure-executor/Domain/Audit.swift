import Contracts
import Crypto
import Foundation

/// The audit's keys, all derived from `LETHE_AUDIT_KEY`: the HMAC key of subjects and an Ed25519 signing key.
///
/// The signing key is derived (HMAC of a fixed label) rather than configured separately, so the executor needs one
/// secret; its `keyId` is a hash of the public key, so a verifier can tell which key signed an entry after rotation.
struct AuditKeys: Sendable {
    private let subjectKey: SymmetricKey
    private let signingKey: Curve25519.Signing.PrivateKey
    /// Hex of the first 8 bytes of SHA-256 of the public key.
    let keyId: String

    init(auditKey: String) throws {
        subjectKey = SymmetricKey(data: Data(auditKey.utf8))
        let seed = HMAC<SHA256>.authenticationCode(for: Data("lethe-audit-signing-v1".utf8), using: subjectKey)
        signingKey = try Curve25519.Signing.PrivateKey(rawRepresentation: Data(seed))
        keyId = SHA256.hash(data: signingKey.publicKey.rawRepresentation).prefix(8).hex
    }

    /// The public key, base64: what a verifier outside the executor needs.
    var publicKeyBase64: String { signingKey.publicKey.rawRepresentation.base64EncodedString() }

    /// Hex HMAC-SHA256 of `appId:accountId`: whoever knows the account can recompute it, nobody can invert it.
    func subject(appId: String, accountId: String) -> String {
        HMAC<SHA256>.authenticationCode(for: Data("\(appId):\(accountId)".utf8), using: subjectKey).hex
    }

    /// `h:` and the hex HMAC-SHA256 of `event:<eventId>`: what the executor records of an event it processed. Event
    /// ids may carry an accountId (the reporter's status ids are `status:<appId>:<accountId>:<ms>`), and the
    /// processed-event table keeps its rows after the erasure; the HMAC still recognises a redelivery.
    func eventDigest(_ eventId: String) -> String {
        "h:" + HMAC<SHA256>.authenticationCode(for: Data("event:\(eventId)".utf8), using: subjectKey).hex
    }

    /// Base64 Ed25519 signature over the UTF-8 bytes of the hex `entryHash`.
    func sign(entryHash: String) throws -> String {
        try signingKey.signature(for: Data(entryHash.utf8)).base64EncodedString()
    }

    /// Whether `signature` is this key's signature of `entryHash`.
    func isValid(signature: String, entryHash: String) -> Bool {
        guard let bytes = Data(base64Encoded: signature) else { return false }
        return signingKey.publicKey.isValidSignature(bytes, for: Data(entryHash.utf8))
    }
}

/// One audit-chain entry. `entryHash` is SHA-256 of ``canonicalBytes`` (which include `previousHash`), so changing or
/// removing any entry breaks the link of every later one of its chain.
///
/// **One chain per partition** (`lethe-audit-v2`): an entry is in the chain of its erasure's partition (``chain``:
/// Kafka's murmur2 of the erasureId among the erasure topics' partitions, which is its subject's partition), with its
/// own sequence from 1 and genesis `previousHash`, so whichever replica owns a partition appends to that chain alone
/// and the chain moves with the partition (its entries are in the changelog). Verifying the audit verifies every
/// chain. Entries written before (`lethe-audit-v1`, ``chain`` nil) form one chain of their own and keep verifying.
///
/// Canonical encoding: JSON with sorted keys and no whitespace, of the fields below except `entryHash`, `signature`
/// and `keyId` (and `chain` when nil); times are integer milliseconds since the epoch, outcomes sorted by
/// participant. A waived outcome carries its `reason` (an absent reason is left out, never `null`), so the waiver
/// and why are covered by the hash and the signature. JSON rather than an ad-hoc format so that no field value can forge a separator; ``CanonicalJSON``
/// writes it.
struct AuditEntry: Codable, Sendable, Equatable {
    /// The `previousHash` of the first entry of a chain.
    static let genesisHash = String(repeating: "0", count: 64)
    /// The format of entries with a ``chain``.
    static let chainedFormat = "lethe-audit-v2"

    /// The format of an entry of `chain` (nil: the single chain of the first format).
    static func format(ofChain chain: Int?) -> String { chain == nil ? "lethe-audit-v1" : chainedFormat }

    struct Outcome: Codable, Sendable, Equatable {
        var participant: String
        var outcome: CompletedOutcome
        var atMs: Int64
        /// Only for `waived`: the operator's reason for waiving the participant (in this erasure, or by retiring it). Absent (not null) otherwise, so an
        /// entry without waivers hashes exactly as it did before waivers existed.
        var reason: String?

        init(participant: String, outcome: CompletedOutcome, atMs: Int64, reason: String? = nil) {
            self.participant = participant
            self.outcome = outcome
            self.atMs = atMs
            self.reason = reason
        }
    }

    var format = "lethe-audit-v1"
    /// The chain (partition) of a `lethe-audit-v2` entry; nil for the single chain of `lethe-audit-v1`.
    var chain: Int?
    /// Position in its chain, from 1.
    var sequence: Int
    var erasureId: String
    var subject: String
    var tenantId: String
    var policy: ErasurePolicy
    var cause: ErasureCause
    var outcomes: [Outcome]
    var completedAtMs: Int64
    var previousHash: String
    var entryHash: String = ""
    var signature: String = ""
    var keyId: String = ""

    /// The bytes `entryHash` covers: the canonical encoding, written directly (see ``CanonicalJSON``).
    var canonicalBytes: [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(512 + 96 * outcomes.count)
        // Keys in byte order, as JSONEncoder's `.sortedKeys` orders them.
        CanonicalJSON.appendKey("cause", first: true, to: &out)
        CanonicalJSON.appendString(cause.rawValue, to: &out)
        if let chain {
            CanonicalJSON.appendKey("chain", to: &out)
            out.append(contentsOf: String(chain).utf8)
        }
        CanonicalJSON.appendKey("completedAtMs", to: &out)
        out.append(contentsOf: String(completedAtMs).utf8)
        CanonicalJSON.appendKey("erasureId", to: &out)
        CanonicalJSON.appendString(erasureId, to: &out)
        CanonicalJSON.appendKey("format", to: &out)
        CanonicalJSON.appendString(format, to: &out)
        CanonicalJSON.appendKey("outcomes", to: &out)
        CanonicalJSON.appendOutcomes(outcomes.sorted { $0.participant < $1.participant }, to: &out)
        CanonicalJSON.appendKey("policy", to: &out)
        CanonicalJSON.appendString(policy.rawValue, to: &out)
        CanonicalJSON.appendKey("previousHash", to: &out)
        CanonicalJSON.appendString(previousHash, to: &out)
        CanonicalJSON.appendKey("sequence", to: &out)
        out.append(contentsOf: String(sequence).utf8)
        CanonicalJSON.appendKey("subject", to: &out)
        CanonicalJSON.appendString(subject, to: &out)
        CanonicalJSON.appendKey("tenantId", to: &out)
        CanonicalJSON.appendString(tenantId, to: &out)
        out.append(UInt8(ascii: "}"))
        return out
    }

    /// Hex SHA-256 of ``canonicalBytes``.
    var computedHash: String { SHA256.hash(data: canonicalBytes).hex }

    /// The receipt published in `ErasureCompleted`.
    var receipt: ErasureReceipt {
        ErasureReceipt(
            chain: chain, sequence: sequence, entryHash: entryHash, previousHash: previousHash, signature: signature,
            keyId: keyId)
    }
}

/// The audit's canonical JSON written by hand: exactly the bytes JSONEncoder with `[.sortedKeys,
/// .withoutEscapingSlashes]` gives for the entry's fields (keys in byte order, no whitespace, `/` unescaped, `\b \t \n \f \r \" \\` and `\u00xx` for other
/// control characters, everything else as UTF-8). A completion hashes one entry and stores its outcomes, and through
/// JSONEncoder those two encodings cost more than the entry's signature. The format is frozen (old entries must keep
/// verifying), and `AuditCanonicalTests` holds these bytes to JSONEncoder's on adversarial values.
enum CanonicalJSON {
    /// `{"key":` for the first key, `,"key":` after it. Keys are plain ASCII names: no escaping needed.
    static func appendKey(_ key: StaticString, first: Bool = false, to out: inout [UInt8]) {
        out.append(first ? UInt8(ascii: "{") : UInt8(ascii: ","))
        out.append(UInt8(ascii: "\""))
        key.withUTF8Buffer { out.append(contentsOf: $0) }
        out.append(UInt8(ascii: "\""))
        out.append(UInt8(ascii: ":"))
    }

    static func appendString(_ string: String, to out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        for byte in string.utf8 {
            switch byte {
            case UInt8(ascii: "\""): out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\"")])
            case UInt8(ascii: "\\"): out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\\")])
            case 0x08: out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "b")])
            case 0x09: out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "t")])
            case 0x0A: out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "n")])
            case 0x0C: out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "f")])
            case 0x0D: out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "r")])
            case 0x00..<0x20:
                out.append(contentsOf: Array("\\u00".utf8) + Array(CollectionOfOne(byte).hex.utf8))
            default: out.append(byte)
            }
        }
        out.append(UInt8(ascii: "\""))
    }

    /// The outcomes as a JSON array, in the order given:
    /// `[{"atMs":…,"outcome":"…","participant":"…"},…]`, with `,"reason":"…"` last when an outcome has one.
    static func appendOutcomes(_ outcomes: [AuditEntry.Outcome], to out: inout [UInt8]) {
        out.append(UInt8(ascii: "["))
        for (index, outcome) in outcomes.enumerated() {
            if index > 0 { out.append(UInt8(ascii: ",")) }
            appendKey("atMs", first: true, to: &out)
            out.append(contentsOf: String(outcome.atMs).utf8)
            appendKey("outcome", to: &out)
            appendString(outcome.outcome.rawValue, to: &out)
            appendKey("participant", to: &out)
            appendString(outcome.participant, to: &out)
            if let reason = outcome.reason {
                appendKey("reason", to: &out)
                appendString(reason, to: &out)
            }
            out.append(UInt8(ascii: "}"))
        }
        out.append(UInt8(ascii: "]"))
    }

    /// ``appendOutcomes(_:to:)`` as a string: the audit row's `outcomes` column.
    static func outcomes(_ outcomes: [AuditEntry.Outcome]) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(96 * outcomes.count + 2)
        appendOutcomes(outcomes, to: &out)
        return String(decoding: out, as: UTF8.self)
    }
}

/// The answer of `GET /v1/audit/verify`: every chain verified on its own, in order (the `lethe-audit-v1` chain, then
/// the partitions' chains by number).
struct AuditVerification: Codable, Sendable, Equatable {
    /// Whether every entry of every chain links, hashes and verifies.
    var ok: Bool
    /// Entries checked.
    var entries: Int
    /// Chains checked.
    var chains: Int
    /// The chain of the first entry that does not check out (absent for the `lethe-audit-v1` chain), if any.
    var firstBrokenChain: Int?
    /// The sequence (within its chain) of the first entry that does not check out, if any.
    var firstBrokenSequence: Int?
    /// Why it does not (a fixed phrase, no data).
    var reason: String?
    /// The key entries are verified with.
    var keyId: String
    /// Its public key (Ed25519, base64), so anyone can re-verify an export.
    var publicKey: String

    /// Verifies `entries` chain by chain, each in sequence order, and stops at the first broken link.
    static func verify(_ entries: [AuditEntry], keys: AuditKeys) -> AuditVerification {
        let chains = Dictionary(grouping: entries, by: \.chain)
        // The v1 chain (nil) first, then the partitions' chains in order.
        let order = chains.keys.sorted { ($0 ?? -1) < ($1 ?? -1) }
        var result = AuditVerification(
            ok: true, entries: entries.count, chains: chains.count, firstBrokenChain: nil, firstBrokenSequence: nil,
            reason: nil, keyId: keys.keyId, publicKey: keys.publicKeyBase64)
        for chain in order {
            let links = chains[chain, default: []].sorted { $0.sequence < $1.sequence }
            if let (entry, problem) = firstBreak(in: links, keys: keys) {
                result.ok = false
                result.firstBrokenChain = entry.chain
                result.firstBrokenSequence = entry.sequence
                result.reason = problem
                return result
            }
        }
        return result
    }

    /// The first entry of one chain (in sequence order) that does not check out, and why.
    private static func firstBreak(in links: [AuditEntry], keys: AuditKeys) -> (AuditEntry, String)? {
        var previous = AuditEntry.genesisHash
        for (index, entry) in links.enumerated() {
            let expectedFormat = AuditEntry.format(ofChain: entry.chain)
            let problem: String? =
                if entry.sequence != index + 1 { "sequence gap" }
                else if entry.format != expectedFormat { "format does not match the entry's chain" }
                else if entry.previousHash != previous { "previousHash does not match the previous entry" }
                else if entry.computedHash != entry.entryHash { "entryHash does not match the entry's content" }
                else if entry.keyId != keys.keyId { "signed with an unknown key" }
                else if !keys.isValid(signature: entry.signature, entryHash: entry.entryHash) { "bad signature" }
                else { nil }
            if let problem { return (entry, problem) }
            previous = entry.entryHash
        }
        return nil
    }
}

extension Date {
    /// Milliseconds since the epoch, the precision of events and the audit.
    var milliseconds: Int64 { Int64((timeIntervalSince1970 * 1000).rounded()) }
    init(milliseconds: Int64) { self.init(timeIntervalSince1970: Double(milliseconds) / 1000) }
}
